"""The command at 80 columns, in pipes and with --json: no truncation, plain
text outside a terminal, JSON on every command, every registered backend
accepted, usage errors for bad input and partial results on Ctrl-C."""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import dmamap
from dmamap import cli
from dmamap.backends.x86 import X86Backend

reg = importlib.import_module("dmamap.registry")
NARROW = {"COLUMNS": "80"}
BOX = re.compile(r"[│┃┏┓┗┛┡┩└┘━─┳┻╇┼╭╮╰╯]")
ANSI = re.compile(r"\x1b\[")


@pytest.fixture(autouse=True)
def _keep_hypothesis_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("dmamap.testing.runner.isolate_hypothesis_home", lambda: None)


@pytest.fixture
def third_party() -> Iterator[str]:
    """A backend registered at run time, not through an entry point."""
    class Offset(X86Backend):
        name = "offset-x86"
        dma_offset = -(1 << 32)

    dmamap.register_backend(Offset.name, Offset)
    try:
        yield Offset.name
    finally:
        with reg._lock:
            reg._known.pop(Offset.name, None)


def narrow(args: list[str]) -> str:
    res = CliRunner().invoke(cli.app, args, env=NARROW)
    assert res.exit_code in (0, 1), res.output
    return res.stdout


@pytest.mark.parametrize("args", [["info", "arm", "--ram", "16"], ["info", "x86_64", "--ram", "16"], ["demo"],
                                  ["conformance", "sram", "--detail", "--examples", "3"],
                                  ["conformance", "arm", "--examples", "3"], ["conformance", "--help"],
                                  ["info", "--help"], ["demo", "--help"]])
def test_80_columns_no_truncation(args: list[str]) -> None:
    """At COLUMNS=80 no line is wider than 80 and nothing is cut with an ellipsis."""
    out = narrow(args)
    assert out.strip()
    assert "…" not in out
    assert max(len(line) for line in out.splitlines()) <= 80


@pytest.mark.parametrize("args", [[], ["info"], ["demo"], ["conformance"], ["calibrate"], ["bench"]])
def test_help_shows_no_type_placeholders(args: list[str]) -> None:
    """Every command's help at 80 columns: no ``<bool>`` after a flag (``--help`` included) and
    no ``<list[str]>``-style option types: each option names its value (``BACKEND``, ``SIZE``, ``N``)."""
    text = CliRunner().invoke(cli.app, [*args, "--help"], env=NARROW).stdout
    assert "<bool>" not in text
    assert not re.search(r"--\S+.*<(list\[|float|int>)", text), text
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "BACKEND" in CliRunner().invoke(cli.app, ["conformance", "--help"], env=NARROW).stdout


def test_conformance_messages_are_whole_at_80_columns() -> None:
    """Each skipped check's message survives wrapping word for word."""
    res = CliRunner().invoke(cli.app, ["conformance", "x86", "--detail", "--rule", "bad_inputs_rejected",
                                       "--json", "-"], env=NARROW)
    data = json.loads(res.stdout)
    words = set(narrow(["conformance", "x86", "--detail", "--rule", "bad_inputs_rejected"]).split())
    messages = [c["message"] for r in data["rules"] for c in r["checks"] if c["message"]]
    assert messages
    for message in messages:
        assert set(message.split()) <= words, message     # wrapped at spaces, no word cut


def run_piped(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR", "TERM")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "dmamap", *args], capture_output=True, text=True, timeout=240,
                          env=full_env)


def test_pipes_get_plain_text() -> None:
    """Through a pipe (python -m dmamap): no colour codes, no box drawing, every row on stdout."""
    for args in (["info", "arm", "--ram", "16"], ["demo"], ["conformance", "sram", "--examples", "3"]):
        res = run_piped(*args)
        assert res.returncode == 0, res.stderr
        assert not ANSI.search(res.stdout) and not BOX.search(res.stdout), res.stdout
        assert "…" not in res.stdout
    info = run_piped("info", "arm", "--ram", "16").stdout
    assert re.search(r"^ *0x000040000000 +0x000041000000 +16 MiB +ram +RAM *$", info, re.M), info
    assert re.search(r"^ *0x00003eff0000 .* io-window +I/O window *$", info, re.M)
    assert "bus address = physical address - 0x40000000" in info


def test_python_dash_m_is_the_command() -> None:
    """python -m dmamap --version is dmamap --version."""
    res = run_piped("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"dmamap {dmamap.__version__}"


def test_info_json_and_owners(tmp_path: Path) -> None:
    """info --json gives the machine, the whole policy and a memory map where every
    region has an owner."""
    data = json.loads(CliRunner().invoke(cli.app, ["info", "sram", "--ram", "16", "--json", "-"]).stdout)
    assert data["platform"] == "sram" and data["machine"]["isa"] == "aarch64"
    assert set(data["policy"]) >= {"user attribute", "default strategy", "bus offset", "coherent memory",
                                   "memtype policy", "pio", "kernel attribute"}
    owners = {r["kind"]: r["owner"] for r in data["memory_map"]}
    assert owners == {"sram": "SRAM pool", "ram": "RAM", "io-window": "I/O window"}
    assert all(r["end"] - r["start"] == r["size"] and r["start_hex"] == hex(r["start"]) for r in data["memory_map"])
    assert data["backends"][:3] == ["x86", "arm", "sram"]
    bare = json.loads(CliRunner().invoke(cli.app, ["info", "x86_64", "--ram", "16", "--json", "-"]).stdout)
    assert bare["policy"] is None
    out = tmp_path / "info.json"
    res = CliRunner().invoke(cli.app, ["info", "x86", "--ram", "16", "--json", str(out)])
    assert res.exit_code == 0 and "results written to" in res.stdout and "physical memory map" in res.stdout
    assert json.loads(out.read_text())["policy"]["user attribute"] == "WB"


def test_info_shows_mmio_owner() -> None:
    """A device's BAR is owned by the device (Region.owner), the rest by what the region is."""
    with dmamap.Machine("x86", ram=1 << 20) as m:
        m.add_device("nic", bars=[4096])
        assert [r.owner for r in m.memory_map if r.kind == "mmio"] == ["nic BAR0"]


def test_demo_json() -> None:
    """demo --json -: every platform's three verdicts, and nothing else on stdout."""
    res = CliRunner().invoke(cli.app, ["demo", "-p", "arm", "-p", "x86", "--json", "-"])
    assert res.exit_code == 0
    data = json.loads(res.stdout)
    assert [p["platform"] for p in data["platforms"]] == ["arm", "x86"]
    arm = data["platforms"][0]["drivers"]
    assert arm["remap_pfn_range"]["verdict"] == "stale" and arm["dma_mmap_coherent"]["verdict"] == "correct"


def test_every_registered_backend_everywhere(third_party: str) -> None:
    """A backend registered at run time works in info, demo (and is in its default set) and conformance."""
    info = json.loads(CliRunner().invoke(cli.app, ["info", third_party, "--ram", "16", "--json", "-"]).stdout)
    assert info["policy"]["bus offset"] == "bus address = physical address + 0x100000000"
    assert third_party in info["backends"]
    demo = json.loads(CliRunner().invoke(cli.app, ["demo", "--json", "-"]).stdout)
    assert third_party in [p["platform"] for p in demo["platforms"]]
    conf = CliRunner().invoke(cli.app, ["conformance", third_party, "--rule", "coherency_mmap", "--json", "-"])
    assert conf.exit_code == 0 and json.loads(conf.stdout)["ok"] is True


@pytest.mark.parametrize("isa", ["x86_64", "aarch64"])
def test_bare_isa_is_not_a_backend(isa: str) -> None:
    """conformance/demo with a bare ISA say it is an ISA and list the backends, not suggest the ISA."""
    for args in (["conformance", isa], ["demo", "-p", isa]):
        res = CliRunner().invoke(cli.app, args)
        assert res.exit_code == 1
        assert f"'{isa}' is a bare ISA, not a backend" in res.stderr
        assert "backends: x86, arm, sram" in res.stderr and "or a bare ISA" not in res.stderr


def test_examples_zero_is_a_usage_error() -> None:
    """--examples 0 is the caller's mistake (exit 2, names the option), not the backend's."""
    res = CliRunner().invoke(cli.app, ["conformance", "x86", "--examples", "0"])
    assert res.exit_code == 2
    assert "--examples" in res.output and "does not conform" not in res.output and "BackendError" not in res.output


def test_ctrl_c_keeps_what_ran(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Ctrl-C in the middle: the checks that ran are printed and written as JSON
    (marked interrupted, not ok), and the exit status is 130."""
    import dmamap.testing.runner as runner

    calls = {"n": 0}
    real = runner.run_rule

    def run_rule(*args: object) -> None:
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(runner, "run_rule", run_rule)
    out = tmp_path / "partial.json"
    res = CliRunner().invoke(cli.app, ["conformance", "x86", "--json", str(out)])
    assert res.exit_code == 130
    assert "x86 interrupted: 4 passed" in res.stdout and "4 of " in res.stderr
    data = json.loads(out.read_text())
    assert data["interrupted"] is True and data["ok"] is False and data["summary"]["passed"] == 4


def _interrupted_at_third_rule(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, interrupt: Callable[[], None],
                               missed: str) -> tuple[float, dict[str, Any]]:
    """Run ``conformance x86 --json`` whose third rule calls ``interrupt()`` and then runs for
    30 s, so that only a Ctrl-C the CLI raises again ends it early (else AssertionError(missed)):
    the seconds it took and the partial JSON (the exit status is 130)."""
    import dmamap.testing.runner as runner

    calls = {"n": 0}
    real = runner.run_rule

    def run_rule(*args: object) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            interrupt()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                time.sleep(0.05)
            raise AssertionError(missed)
        real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(runner, "run_rule", run_rule)
    out = tmp_path / "partial.json"
    t0 = time.monotonic()
    res = CliRunner().invoke(cli.app, ["conformance", "x86", "--json", str(out)])
    took = time.monotonic() - t0
    assert res.exit_code == 130, res.output
    return took, json.loads(out.read_text())


def test_ctrl_c_swallowed_once_still_stops_the_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A Ctrl-C whose KeyboardInterrupt is swallowed (it landed in a finalizer or a callback that
    catches everything) is raised again until the run stops: the run does not go on for minutes."""
    def swallowed() -> None:
        try:
            os.kill(os.getpid(), signal.SIGINT)   # a real Ctrl-C ...
            time.sleep(1)
        except KeyboardInterrupt:
            pass                                 # ... that something swallows

    took, data = _interrupted_at_third_rule(monkeypatch, tmp_path, swallowed,
                                            "the swallowed Ctrl-C was not raised again")
    assert took < 25
    assert data["summary"]["passed"] == 2


def test_ctrl_c_in_a_finalizer_prints_no_traceback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A Ctrl-C landing in a finalizer (or a gc callback) is not printed as "Exception ignored"
    with a traceback: it is raised again outside it, and the run stops at once."""
    class Finalized:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGINT)   # the handler runs inside __del__
            time.sleep(0.5)

    reported: list[object] = []     # what would be printed as "Exception ignored in ..."
    monkeypatch.setattr(sys, "unraisablehook", lambda args: reported.append(args.exc_value))
    took, data = _interrupted_at_third_rule(monkeypatch, tmp_path, Finalized,
                                            "the Ctrl-C swallowed by a finalizer was not raised again")
    assert took < 10
    assert reported == []
    assert data["summary"]["passed"] == 2


def _default_sigint() -> None:
    """In the child, before exec: take SIGINT's default disposition, so Python installs its
    KeyboardInterrupt handler even when this test runs with SIGINT ignored (a background job)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_cpu_seconds(pid: int, seconds: float, timeout: float = 120.0) -> None:
    """Wait until process ``pid`` has used ``seconds`` of CPU (wall time means little on a loaded machine)."""
    tick = os.sysconf("SC_CLK_TCK")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        if (int(fields[11]) + int(fields[12])) / tick >= seconds:
            return
        time.sleep(0.2)
    raise AssertionError(f"process {pid} used less than {seconds} s of CPU in {timeout} s")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGINT to a child, CPU time from /proc")
def test_sigint_to_the_process_writes_partial_json(tmp_path: Path) -> None:
    """A real SIGINT to `python -m dmamap conformance` during a long model run."""
    out = tmp_path / "partial.json"
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    proc = subprocess.Popen([sys.executable, "-m", "dmamap", "conformance", "x86", "--rule", "pio_reachable",
                             "--rule", "model_based", "--examples", "100000", "--json", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=_default_sigint)
    _wait_cpu_seconds(proc.pid, 6.0)   # start-up and the first rule are done: the model runs
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr and "interrupted: 1 of 2 checks ran" in stderr
    data = json.loads(out.read_text())
    assert data["interrupted"] is True and [r["rule"] for r in data["rules"]] == ["pio_reachable"]


@pytest.mark.parametrize("ram", ["0", "100000000"])
def test_info_ram_errors_speak_mib(ram: str) -> None:
    """info --ram takes MiB, and its refusal says so in MiB (not the byte count the machine was asked for)."""
    res = CliRunner().invoke(cli.app, ["info", "x86", "--ram", ram], env=NARROW)
    assert res.exit_code == 1
    assert f"--ram is in MiB: between 1 and 196608 for x86, not {ram}" in " ".join(res.stderr.split())
