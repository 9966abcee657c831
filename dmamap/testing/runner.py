"""Run the conformance suite without pytest: :func:`run_conformance` gives a
:class:`Report` of every rule variant (``dmamap conformance BACKEND`` in
dmamap/cli.py renders it with :mod:`dmamap.testing.render`).

Only the model-based rule needs a test dependency (hypothesis); without it
that rule is reported as skipped, with the reason, and everything else runs.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import dmamap
from dmamap.backends import Backend
from dmamap.testing.rules import RULES, ConformanceFailure, Rule, RuleSkipped, Target, rule_by_name, run_rule

__all__ = ["Result", "Report", "Interrupted", "run_conformance", "count_checks", "isolate_hypothesis_home", "PASSED",
           "FAILED", "SKIPPED"]

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


@dataclass
class Result:
    """One rule variant's outcome."""

    rule: str
    variant: str
    outcome: str
    message: str = ""
    address: int | None = None
    seconds: float = 0.0

    @property
    def check(self) -> str:
        return f"{self.rule}[{self.variant}]" if self.variant else self.rule


@dataclass
class Report:
    """Every result of one run, against one backend."""

    backend: str
    capabilities: dict[str, Any]
    results: list[Result] = field(default_factory=list)
    seconds: float = 0.0
    #: The run was stopped (Ctrl-C) before every selected check ran.
    interrupted: bool = False

    def count(self, outcome: str) -> int:
        return sum(r.outcome == outcome for r in self.results)

    @property
    def ok(self) -> bool:
        """No check failed and the run was complete."""
        return self.count(FAILED) == 0 and not self.interrupted

    @property
    def failed_rules(self) -> set[str]:
        return {r.rule for r in self.results if r.outcome == FAILED}

    def rule_outcome(self, rule: str) -> str:
        """failed if any variant failed, passed if any passed, else skipped."""
        outs = {r.outcome for r in self.results if r.rule == rule}
        return FAILED if FAILED in outs else PASSED if PASSED in outs else SKIPPED

    def to_dict(self) -> dict[str, Any]:
        rules = []
        for name in dict.fromkeys(r.rule for r in self.results):
            rule = rule_by_name(name)
            rules.append({
                "rule": name, "group": rule.group, "summary": rule.summary, "outcome": self.rule_outcome(name),
                "checks": [{**asdict(r), "address_hex": None if r.address is None else hex(r.address)}
                           for r in self.results if r.rule == name],
            })
        return {
            "backend": self.backend, "dmamap_version": dmamap.__version__, "ok": self.ok,
            "interrupted": self.interrupted,
            "capabilities": self.capabilities, "seconds": round(self.seconds, 3),
            "summary": {o: self.count(o) for o in (PASSED, FAILED, SKIPPED)}, "rules": rules,
        }


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run: ``report`` holds every check that completed."""

    def __init__(self, report: Report) -> None:
        super().__init__(f"conformance run interrupted after {len(report.results)} checks")
        self.report = report


def _selected(rules: Iterable[str] | None) -> list[Rule]:
    if rules is None:
        return list(RULES)
    return [rule_by_name(n) for n in rules]


def count_checks(rules: Iterable[str] | None = None) -> int:
    """How many rule variants a run of ``rules`` (None: all) makes."""
    return sum(len(r.variants) for r in _selected(rules))


def run_conformance(backend: str | Backend | type[Backend], *, rules: Iterable[str] | None = None,
                    on_result: Callable[[Result], None] | None = None,
                    on_start: Callable[[Rule, str], None] | None = None, **target_options: Any) -> Report:
    """Run every rule variant (or those of ``rules``) against ``backend``.

    ``target_options`` go to :class:`~dmamap.testing.rules.Target`: capability
    overrides (``page_descriptors``, ``port_io``, ``large_pages``,
    ``scatter_gather``, ``strategies``), ``ram``, ``model_examples``,
    ``model_steps``, ``model_shrink``.  Never raises for a broken backend:
    failures are results.  Ctrl-C raises :class:`Interrupted` (a
    ``KeyboardInterrupt``) carrying the partial report.
    """
    t0 = time.perf_counter()
    selected = _selected(rules)
    try:
        with Target(backend, **target_options) as target:
            report = _run(target, selected, on_start, on_result)
    except Interrupted as exc:
        exc.report.seconds = time.perf_counter() - t0
        raise
    report.seconds = time.perf_counter() - t0
    return report


def _run(target: Target, selected: list[Rule], on_start: Callable[[Rule, str], None] | None,
         on_result: Callable[[Result], None] | None) -> Report:
    report = Report(target.name, target.caps.as_dict())
    try:
        _run_into(report, target, selected, on_start, on_result)
    except KeyboardInterrupt as exc:
        report.interrupted = True
        raise Interrupted(report) from exc
    return report


def _run_into(report: Report, target: Target, selected: list[Rule], on_start: Callable[[Rule, str], None] | None,
              on_result: Callable[[Result], None] | None) -> None:
    for rule in selected:
        for variant in rule.variants:
            if on_start is not None:
                on_start(rule, variant)
            s = time.perf_counter()
            try:
                run_rule(rule, target, variant)
                res = Result(rule.name, variant, PASSED)
            except RuleSkipped as exc:
                res = Result(rule.name, variant, SKIPPED, exc.reason)
            except ConformanceFailure as exc:
                res = Result(rule.name, variant, FAILED, str(exc), exc.addr)
            res.seconds = time.perf_counter() - s
            report.results.append(res)
            if on_result is not None:
                on_result(res)


def isolate_hypothesis_home() -> None:
    """Keep hypothesis' caches out of the user's working directory for the rest
    of the process (the model is derandomized and uses no example database, so
    nothing is lost); for command-line runs."""
    try:
        from hypothesis.configuration import set_hypothesis_home_dir
    except ImportError:
        return
    home = tempfile.mkdtemp(prefix="dmamap-conformance-")
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    set_hypothesis_home_dir(home)
