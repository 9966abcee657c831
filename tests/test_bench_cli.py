"""``dmamap bench`` through typer's CliRunner: a tiny sweep, its JSON, option errors."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from dmamap.bench import SWEEP_STRATEGIES, host_kind
from dmamap.cli import app


def test_bench_tiny_sweep_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(app, ["bench", "--size", "64K", "-p", "x86", "-p", "sram", "--density", "1",
                                   "--order", "seq", "--repeat", "1", "--no-targets", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "dmamap bench — x86" in res.output and "dmamap bench — sram" in res.output
    data = json.loads(out.read_text())
    runs = data["runs"]
    assert [r["strategy"] for r in runs if r["platform"] == "x86"] == list(SWEEP_STRATEGIES)
    assert all(r["host_kind"] == host_kind(r["strategy"]) for r in runs)
    by = {(r["platform"], r["strategy"]): r for r in runs}
    assert by["x86", "prefault"]["faults"] == 0 and by["x86", "prefault"]["ptes"] == 16
    assert by["x86", "fault"]["faults"] == 16
    assert by["x86", "fault-around"]["faults"] == 1


def test_bench_option_errors() -> None:
    res = CliRunner().invoke(app, ["bench", "--order", "sideways"])
    assert res.exit_code == 2 and "unknown order sideways" in res.output
    res = CliRunner().invoke(app, ["bench", "--size", "3K"])
    assert res.exit_code == 2 and "multiple of 4 KiB" in res.output
    res = CliRunner().invoke(app, ["bench", "--strategy", "fault-pfn"])
    assert res.exit_code == 2 and "unknown strategy fault-pfn" in res.output
