"""``dmamap conformance`` and the runner API: table, JSON, exit status,
capability overrides, missing test dependencies."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import dmamap
from dmamap.cli import app
from dmamap.testing import RULES, Target, run_conformance

sys.path.insert(0, str(Path(__file__).resolve().parent))
from broken_backends import NoTlbFlushBackend  # noqa: E402


@pytest.fixture(autouse=True)
def _keep_hypothesis_home(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command moves hypothesis' home to a temporary directory for its
    process; in-process here, that would leak into the rest of the session."""
    monkeypatch.setattr("dmamap.testing.runner.isolate_hypothesis_home", lambda: None)


@pytest.fixture
def registered_broken() -> Iterator[str]:
    name = NoTlbFlushBackend.name
    dmamap.register_backend(name, NoTlbFlushBackend())
    try:
        yield name
    finally:
        reg = sys.modules["dmamap.registry"]
        with reg._lock:
            reg._known.pop(name, None)


def test_cli_passing_backend_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "sram.json"
    res = CliRunner().invoke(app, ["conformance", "sram", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "sram conforms" in res.output and "unmap_clears_ptes_and_tlb" in res.output
    data = json.loads(out.read_text())
    assert data["backend"] == "sram" and data["ok"] is True
    assert data["summary"]["failed"] == 0 and data["summary"]["passed"] > 50
    assert [r["rule"] for r in data["rules"]] == [r.name for r in RULES]
    assert data["capabilities"]["page_descriptors"] is False
    by_rule = {r["rule"]: r for r in data["rules"]}
    assert by_rule["coherent_to_page"]["outcome"] == "skipped"
    assert "page descriptors" in by_rule["coherent_to_page"]["checks"][0]["message"]


def test_cli_broken_backend_exits_1_and_names_the_rule(registered_broken: str, tmp_path: Path) -> None:
    out = tmp_path / "broken.json"
    res = CliRunner().invoke(app, ["conformance", registered_broken, "--json", str(out), "--no-shrink",
                                   "--examples", "10"])
    assert res.exit_code == 1, res.output
    assert "does not conform" in res.output
    data = json.loads(out.read_text())
    assert data["ok"] is False
    failed = {r["rule"]: r for r in data["rules"] if r["outcome"] == "failed"}
    assert "unmap_clears_ptes_and_tlb" in failed
    check = failed["unmap_clears_ptes_and_tlb"]["checks"][0]
    assert check["message"].startswith("[unmap_clears_ptes_and_tlb] at 0x")
    assert check["address"] == int(check["address_hex"], 16) and check["address"] > 0
    assert failed.keys() <= {"unmap_clears_ptes_and_tlb", "large_pages", "sg_linear_mapping", "model_based"}


def test_cli_rule_selection_and_detail() -> None:
    res = CliRunner().invoke(app, ["conformance", "arm", "--rule", "coherency_mmap", "--detail"])
    assert res.exit_code == 0, res.output
    assert "8 passed, 0 failed" in res.output and "pio_reachable" not in res.output
    assert "coherency_mmap[fault-a" in res.output.replace("\n", "").replace("│", "").replace(" ", "")


def test_cli_unknown_backend_and_rule() -> None:
    res = CliRunner().invoke(app, ["conformance", "riscv-does-not-exist"])
    assert res.exit_code == 1 and "unknown backend" in res.output
    res = CliRunner().invoke(app, ["conformance", "x86", "--rule", "no_such_rule"])
    assert res.exit_code == 1 and "no conformance rule" in res.output


def test_capability_overrides_skip_with_reason() -> None:
    report = run_conformance("x86", rules=["pio_reachable", "coherency_mmap", "large_pages"], port_io=False,
                             strategies=("prefault", "fault"))
    outcome = {r.check: (r.outcome, r.message) for r in report.results}
    assert outcome["pio_reachable"] == ("skipped", "x86 does not claim port io")
    assert outcome["coherency_mmap[prefault]"][0] == outcome["coherency_mmap[fault]"][0] == "passed"
    assert outcome["coherency_mmap[fault-pfn]"][0] == "skipped"
    assert "not among x86's strategies" in outcome["coherency_mmap[fault-pfn]"][1]
    assert outcome["large_pages[prefault-large]"][0] == "skipped"


def test_target_registers_and_unregisters_backend_objects() -> None:
    before = dmamap.available_backends()
    with Target(NoTlbFlushBackend) as t:
        assert t.name == NoTlbFlushBackend.name and t.name in dmamap.available_backends()
        assert t.caps.page_descriptors and t.caps.port_io
    assert dmamap.available_backends() == before


def test_runner_without_hypothesis_skips_only_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "hypothesis", None)
    monkeypatch.delitem(sys.modules, "dmamap.testing.stateful", raising=False)
    monkeypatch.delattr(sys.modules["dmamap.testing"], "stateful", raising=False)
    report = run_conformance("x86", rules=["model_based", "mmio_width_exact"])
    (model,) = [r for r in report.results if r.rule == "model_based"]
    assert model.outcome == "skipped" and "pip install 'dmamap[test]'" in model.message
    assert report.rule_outcome("mmio_width_exact") == "passed"


def test_pytest_classes_without_pytest_say_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import dmamap.testing

    monkeypatch.setitem(sys.modules, "pytest", None)
    monkeypatch.delitem(sys.modules, "dmamap.testing.suite", raising=False)
    monkeypatch.delattr(dmamap.testing, "suite", raising=False)
    with pytest.raises(ImportError, match=r"needs pytest.*pip install 'dmamap\[test\]'.*dmamap conformance"):
        dmamap.testing.BackendConformance  # noqa: B018
