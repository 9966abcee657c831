"""``dmamap bench`` and ``dmamap calibrate`` through typer's CliRunner: a tiny sweep, its JSON,
80-column output, option errors, profiles, comparisons."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dmamap.bench import SWEEP_STRATEGIES, Profile, ProfileError, example_profiles, host_kind, load_profile
from dmamap.bench.model import fit
from dmamap.bench.spread import TIE, spread, winner
from dmamap.cli import app

_PROFILE = {"schema": "dmamap-cost-profile/1", "name": "test", "costs_ns": {"map_call": 1000, "pte_write": 300,
                                                                            "fault": 1000, "tlb_miss": 0}}


def _invoke(args: list[str]) -> object:
    return CliRunner().invoke(app, args, env={"COLUMNS": "80"})


def test_bench_tiny_sweep_writes_json(tmp_path: Path) -> None:
    out, prof = tmp_path / "bench.json", tmp_path / "p.json"
    prof.write_text(json.dumps(_PROFILE))
    res = _invoke(["bench", "--size", "64K", "-p", "x86", "-p", "sram", "--density", "1", "--density", "0.25",
                   "--order", "seq", "--repeat", "3", "--no-targets", "--json", str(out), "--profile", str(prof)])
    assert res.exit_code == 0, res.output
    assert "x86: map + touch" in res.output and "sram: map + touch" in res.output
    assert "…" not in res.output
    assert max(len(ln) for ln in res.output.splitlines() if not ln.startswith("results written")) <= 80
    assert "median of 3 runs" in res.output and "crossover" in res.output
    assert "store loop (limit): 0.000" not in res.output and "store loop (limit): " in res.output
    data = json.loads(out.read_text())
    runs = data["runs"]
    assert [r["strategy"] for r in runs if r["platform"] == "x86" and r["density"] == 1] == list(SWEEP_STRATEGIES)
    assert all(r["host_kind"] == host_kind(r["strategy"]) for r in runs)
    by = {(r["platform"], r["strategy"]): r for r in runs if r["density"] == 1}
    assert by["x86", "prefault"]["faults"] == 0 and by["x86", "prefault"]["ptes"] == 16
    assert by["x86", "fault"]["faults"] == 16 and by["x86", "fault"]["counts"]["faults_page"] == 16
    assert by["sram", "fault"]["counts"]["faults_pfn"] == 16
    assert by["x86", "fault-around"]["faults"] == 1 and by["x86", "fault-around"]["counts"]["around_ptes"] == 15
    assert by["x86", "fault"]["total"]["n"] == 3
    # the model: 16 faults + 16 PTEs + a call, priced by the profile
    assert by["x86", "fault"]["predicted_ns"] == pytest.approx(1000 + 16 * 300 + 16 * 1000)
    host = {(h["kind"], h["density"]): h for h in data["host"]}
    assert host["store-touch", 1]["faults"] == 16          # the kernel's own count: one page per fault
    assert host["populate", 1]["faults"] == 0
    assert data["model"]["ranked"] + data["model"]["host_ties"] == 2
    res = _invoke(["bench", "--compare", str(out), "--compare", str(out)])
    assert res.exit_code == 0 and "4/4 points identical" in res.output


def test_bench_without_sweep_reports_no_sweep_figures() -> None:
    """A scenario alone runs no sweep: no store-loop limit or sweep time (they were printed as 0)."""
    res = _invoke(["bench", "--scenario", "alsa", "-p", "x86"])
    assert res.exit_code == 0, res.output
    assert "scenario alsa" in res.output and "load average at end" in res.output
    assert "store loop (limit)" not in res.output and "sweep took" not in res.output


def test_bench_option_errors() -> None:
    res = _invoke(["bench", "--order", "sideways"])
    assert res.exit_code == 2 and "unknown order sideways" in res.output
    res = _invoke(["bench", "--size", "3K"])
    assert res.exit_code == 2 and "multiple of 4 KiB" in res.output
    res = _invoke(["bench", "--strategy", "fault-pfn"])
    assert res.exit_code == 2 and "unknown strategy fault-pfn" in res.output
    res = _invoke(["bench", "-p", "acme"])
    assert res.exit_code == 2 and "unknown platform acme" in res.output
    res = _invoke(["bench", "--scenario", "nope"])
    assert res.exit_code == 2 and "unknown scenario nope" in res.output
    res = _invoke(["bench", "--profile", "/nonexistent.json", "--no-targets"])
    assert res.exit_code == 2 and "no profile file" in res.output


def test_spread_and_winner() -> None:
    s = spread([5, 1, 3, 2, 4])
    assert (s.median, s.q1, s.q3, s.lo, s.hi) == (3, 2, 4, 1, 5)
    assert winner({"a": spread([1, 1.1, 1.2]), "b": spread([2, 2.1, 2.2])}) == ("a", ["a"])
    assert winner({"a": spread([1, 2, 3]), "b": spread([2, 2.5, 4])})[0] == TIE


def test_fit_recovers_costs_and_profiles_validate(tmp_path: Path) -> None:
    rows = [({"map_call": 1, "pte_write": n, "fault": f}, 500 + 300 * n + 900 * f)
            for n, f in ((1, 0), (100, 0), (100, 100), (10, 10), (1000, 50))]
    c = fit(rows, ("map_call", "pte_write", "fault"))
    assert c == pytest.approx({"map_call": 500, "pte_write": 300, "fault": 900}, rel=1e-6)
    ex = example_profiles()
    assert ex and all(p.sources for p in ex.values())
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(dict(_PROFILE, costs_ns={"warp": 1})))
    with pytest.raises(ProfileError, match="bad cost entries warp"):
        load_profile(p)
    assert Profile.from_json(_PROFILE).predict({"pte_write": 2, "fault": 1}) == 1600


def test_calibrate_writes_profile(tmp_path: Path) -> None:
    out = tmp_path / "prof.json"
    res = _invoke(["calibrate", "-o", str(out), "--repeat", "1"])
    assert res.exit_code == 0, res.output
    prof = load_profile(out)
    assert prof.cost("fault") > 0 and prof.cost("pte_write") > 0
    assert prof.host["thp_enabled"] and prof.fit["runs"]
