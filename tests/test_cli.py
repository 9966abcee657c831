"""The ``dmamap`` command through typer's CliRunner."""

from __future__ import annotations

import pytest
from rich.console import Console
from typer.testing import CliRunner

import dmamap
from dmamap import cli

runner = CliRunner()


def test_version() -> None:
    """``dmamap --version`` prints the package version and exits 0."""
    result = runner.invoke(cli.app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"dmamap {dmamap.__version__}"


@pytest.mark.parametrize(("platform", "levels", "ram_base"), [("x86_64", 4, 0), ("aarch64", 3, 0x4000_0000),
                                                                ("arm", 3, 0x4000_0000)])
def test_info(platform: str, levels: int, ram_base: int) -> None:
    """``dmamap info`` prints the configuration and the memory map with RAM at the ISA's base."""
    result = runner.invoke(cli.app, ["info", platform, "--ram", "16"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "physical memory map" in out and "page_table_levels" in out
    assert platform in out
    ram_rows = [line for line in out.splitlines() if " ram " in line]
    assert len(ram_rows) == 1
    assert f"{ram_base:#014x}" in ram_rows[0] and f"{ram_base + (16 << 20):#014x}" in ram_rows[0]
    assert "io-window" in out
    assert "x86" in out.splitlines()[-1]         # the backends line


@pytest.mark.parametrize(("args", "error"), [(["info", "pdp11"], "BackendError"),
                                             (["info", "x86_64", "--ram", "0"], "InvalidArgumentError")])
def test_error_is_one_red_line(monkeypatch: pytest.MonkeyPatch, args: list[str], error: str) -> None:
    """A DmamapError becomes one red ``error:`` line on stderr and exit code 1, with no traceback."""
    monkeypatch.setattr(cli, "err_console", Console(stderr=True, force_terminal=True, color_system="standard",
                                                    width=400))
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("\x1b[31merror:\x1b[0m")       # red
    assert f" {error}: " in lines[0]
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output


def test_no_args_shows_help() -> None:
    """Without arguments the command prints its help."""
    result = runner.invoke(cli.app, [])
    assert "info" in result.output and "demo" in result.output
