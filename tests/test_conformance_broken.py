"""The conformance suite fails each deliberately broken backend, naming the
broken rule (and nothing outside that bug's visible consequences)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dmamap.testing import Report, run_conformance

sys.path.insert(0, str(Path(__file__).resolve().parent))
from broken_backends import BROKEN  # noqa: E402

_reports: dict[str, Report] = {}


def _report(name: str) -> Report:
    if name not in _reports:
        _reports[name] = run_conformance(BROKEN[name][0], model_shrink=False)
    return _reports[name]


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_suite_names_the_broken_rule(name: str) -> None:
    _, rule, _ = BROKEN[name]
    report = _report(name)
    assert not report.ok
    assert rule in report.failed_rules, f"{name}: {rule} passed; failed: {sorted(report.failed_rules)}"
    msgs = [r.message for r in report.results if r.rule == rule and r.outcome == "failed"]
    assert all(m.startswith(f"[{rule}] at 0x") for m in msgs), msgs


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_only_consequences_of_the_bug_fail(name: str) -> None:
    _, rule, consequences = BROKEN[name]
    unexpected = _report(name).failed_rules - {rule} - consequences
    assert not unexpected, f"{name} also fails unrelated rules: {sorted(unexpected)}"


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_model_based_rule_catches_it_too(name: str) -> None:
    report = _report(name)
    assert "model_based" in report.failed_rules
    (res,) = [r for r in report.results if r.rule == "model_based"]
    assert res.message.startswith("[model_based] at 0x") and "falsifying steps" in res.message


def test_failure_messages_say_what_went_wrong() -> None:
    def first(name: str, rule: str) -> str:
        return next(r.message for r in _report(name).results if r.rule == rule and r.outcome == "failed")

    assert "cacheable alias of uncached memory" in first("broken-arm-cacheable", "user_attribute_matches_kernel")
    assert "NORMAL but the kernel alias" in first("broken-arm-cacheable", "user_attribute_matches_kernel")
    assert "stale byte" in first("broken-arm-cacheable", "coherency_mmap")
    assert "page descriptor for non-RAM" in first("broken-sram-page-fault", "page_descriptors_ram_only")
    assert "chunk" in first("broken-sg-off-by-one", "sg_linear_mapping")
    assert "stale TLB" in first("broken-no-tlb-flush", "unmap_clears_ptes_and_tlb")


def test_broken_backends_fail_through_the_pytest_classes(tmp_path: Path) -> None:
    """The same bug, through the pytest base classes a port subclasses."""

    class Collect:
        def __init__(self) -> None:
            self.outcomes: dict[str, str] = {}
            self.messages: dict[str, str] = {}

        def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
            if report.when == "call" or report.outcome != "passed":
                self.outcomes[report.nodeid.split("::")[-1]] = report.outcome
                if report.failed:
                    self.messages[report.nodeid.split("::")[-1]] = str(report.longrepr)

    (tmp_path / "test_port.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
        "from broken_backends import NoTlbFlushBackend\n"
        "from dmamap.testing import UnmapConformance\n\n"
        "class TestNoFlush(UnmapConformance):\n"
        "    backend = NoTlbFlushBackend\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    collect = Collect()
    rc = pytest.main(["-q", "-p", "no:cacheprovider", "-c", str(tmp_path / "pytest.ini"), "--rootdir",
                      str(tmp_path), str(tmp_path / "test_port.py")], plugins=[collect])
    assert rc == pytest.ExitCode.TESTS_FAILED
    failed = {k for k, v in collect.outcomes.items() if v == "failed"}
    assert failed == {f"test_unmap_clears_ptes_and_tlb[{v}]" for v in
                      ("default", "prefault", "prefault-large", "fault", "fault-page", "fault-pfn", "fault-around",
                       "fault-large")}
    assert all("[unmap_clears_ptes_and_tlb] at 0x" in m for m in collect.messages.values())
    assert collect.outcomes["test_resources_return_to_baseline[coherent]"] == "passed"
