"""The ``dmamap`` command."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

import dmamap
from dmamap.errors import DmamapError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Architecture-portable mmap helpers for device memory, on an emulated machine.")
console = Console()
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        console.print(f"dmamap {dmamap.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool | None, typer.Option("--version", callback=_version, is_eager=True,  # noqa: UP007
                                                    help="Show the version and exit.")] = None,
) -> None:
    """dmamap command line."""


def fail(exc: DmamapError) -> None:
    err_console.print(f"[red]error:[/red] {type(exc).__name__}: {exc}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@app.command()
def info(
    platform: Annotated[str, typer.Argument(
        help="Backend (x86, arm, sram, riscv, ...) or ISA (x86_64, aarch64, riscv64).")] = "x86",
    ram: Annotated[int, typer.Option(help="Emulated RAM in MiB.")] = 256,
) -> None:
    """Print a machine's configuration and physical memory map."""
    try:
        with dmamap.Machine(platform, ram=ram << 20) as m:
            data = m.info()
            table = Table(title=f"dmamap machine: {data['platform']}")
            table.add_column("setting")
            table.add_column("value")
            for k, v in data.items():
                if k == "memory_map":
                    continue
                table.add_row(k, hex(v) if k == "page_offset" else str(v))
            console.print(table)
            mt = Table(title="physical memory map")
            for col in ("start", "end", "kind", "owner"):
                mt.add_column(col)
            for r in data["memory_map"]:
                mt.add_row(f"{r.base:#014x}", f"{r.end:#014x}", r.kind, r.owner or "")
            console.print(mt)
            console.print(f"backends: {', '.join(dmamap.available_backends())}")
    except DmamapError as exc:
        fail(exc)


@app.command()
def demo(
    platforms: Annotated[list[str] | None, typer.Option("--platform", "-p",  # noqa: UP007
                                                           help="Platforms to run (default: all four).")] = None,
) -> None:
    """Replay the original bug: three drivers on each platform."""
    from dmamap.demo import run_demo

    try:
        ok = run_demo(platforms or ["x86", "arm", "sram", "riscv"], console)
    except DmamapError as exc:
        fail(exc)
    if not ok:
        raise typer.Exit(1)


# Commands implemented in their own modules register here, one line each.
from dmamap.testing.runner import conformance; app.command()(conformance)  # noqa: E402, E702, I001
from dmamap.benchmark import bench_command; app.command("bench")(bench_command)  # noqa: E402, E702, I001


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
