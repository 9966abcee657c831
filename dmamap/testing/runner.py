"""Run the conformance suite without pytest: :func:`run_conformance` (API)
and ``dmamap conformance BACKEND [--json FILE]`` (command line).

Only the model-based rule needs a test dependency (hypothesis); without it
that rule is reported as skipped, with the reason, and everything else runs.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

import dmamap
from dmamap.backends import Backend
from dmamap.errors import BackendError
from dmamap.testing.rules import RULES, ConformanceFailure, Rule, RuleSkipped, Target, rule_by_name, run_rule

__all__ = ["Result", "Report", "run_conformance", "conformance"]

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

    def count(self, outcome: str) -> int:
        return sum(r.outcome == outcome for r in self.results)

    @property
    def ok(self) -> bool:
        return self.count(FAILED) == 0

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
            "capabilities": self.capabilities, "seconds": round(self.seconds, 3),
            "summary": {o: self.count(o) for o in (PASSED, FAILED, SKIPPED)}, "rules": rules,
        }


def _selected(rules: Iterable[str] | None) -> list[Rule]:
    if rules is None:
        return list(RULES)
    return [rule_by_name(n) for n in rules]


def count_checks(rules: Iterable[str] | None = None) -> int:
    return sum(len(r.variants) for r in _selected(rules))


def run_conformance(backend: str | Backend | type[Backend], *, rules: Iterable[str] | None = None,
                    on_result: Callable[[Result], None] | None = None,
                    on_start: Callable[[Rule, str], None] | None = None, **target_options: Any) -> Report:
    """Run every rule variant (or those of ``rules``) against ``backend``.

    ``target_options`` go to :class:`~dmamap.testing.rules.Target`: capability
    overrides (``page_descriptors``, ``port_io``, ``large_pages``,
    ``scatter_gather``, ``strategies``), ``ram``, ``model_examples``,
    ``model_steps``, ``model_shrink``.  Never raises for a broken backend:
    failures are results.
    """
    t0 = time.perf_counter()
    selected = _selected(rules)
    with Target(backend, **target_options) as target:
        report = _run(target, selected, on_start, on_result)
    report.seconds = time.perf_counter() - t0
    return report


def _run(target: Target, selected: list[Rule], on_start: Callable[[Rule, str], None] | None,
         on_result: Callable[[Result], None] | None) -> Report:
    report = Report(target.name, target.caps.as_dict())
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
    return report


# ---------------------------------------------------------------------------
# command line

_STYLE = {PASSED: "green", FAILED: "bold red", SKIPPED: "yellow"}


def _table(report: Report, detail: bool) -> Table:
    table = Table(title=f"dmamap conformance: {report.backend}", show_lines=False)
    table.add_column("rule", no_wrap=True, min_width=max(len(r.check if detail else r.rule) for r in report.results))
    table.add_column("checks", justify="right")
    table.add_column("result")
    table.add_column("message", overflow="fold")
    for name in dict.fromkeys(r.rule for r in report.results):
        rs = [r for r in report.results if r.rule == name]
        if detail:
            for r in rs:
                table.add_row(escape(r.check), "1", f"[{_STYLE[r.outcome]}]{r.outcome}[/]",
                              escape(r.message.split("\n")[0]))
            continue
        outcome = report.rule_outcome(name)
        counts = ", ".join(f"{n} {o}" for o in (PASSED, FAILED, SKIPPED) if (n := sum(r.outcome == o for r in rs)))
        bad = [r for r in rs if r.outcome == FAILED]
        if bad:
            msg = bad[0].message.split("\n")[0]
            if len(bad) > 1:
                msg += f" (+{len(bad) - 1} more: {', '.join(r.variant for r in bad[1:])})"
        elif outcome == SKIPPED:
            msg = rs[0].message
        else:
            skipped = [r.variant for r in rs if r.outcome == SKIPPED]
            msg = f"skipped (see --detail): {', '.join(skipped)}" if skipped else ""
        table.add_row(name, counts if len(rs) > 1 else "1", f"[{_STYLE[outcome]}]{outcome}[/]", escape(msg))
    return table


def _private_hypothesis_home() -> None:
    """Keep hypothesis' caches out of the user's working directory (the model
    is derandomized and uses no example database, so nothing is lost)."""
    try:
        from hypothesis.configuration import set_hypothesis_home_dir
    except ImportError:
        return
    home = tempfile.mkdtemp(prefix="dmamap-conformance-")
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    set_hypothesis_home_dir(home)


def conformance(
    backend: Annotated[str, typer.Argument(help="A registered backend (x86, arm, sram or a dmamap.arch entry "
                                                "point).")],
    json_file: Annotated[Path | None, typer.Option("--json", metavar="FILE",
                                                   help="Also write the results as JSON to FILE.")] = None,
    rule: Annotated[list[str] | None, typer.Option("--rule", "-r",
                                                   help="Run only this rule (repeatable).")] = None,
    detail: Annotated[bool, typer.Option("--detail", help="One row per check instead of per rule.")] = False,
    examples: Annotated[int, typer.Option(help="Examples for the model-based rule.")] = 30,
    shrink: Annotated[bool, typer.Option(help="Shrink a model-based failure to a minimal sequence.")] = True,
) -> None:
    """Run the conformance suite against BACKEND; exit status 1 on any failure."""
    console = Console()
    err = Console(stderr=True)
    try:
        names = None if not rule else [rule_by_name(n).name for n in rule]
    except KeyError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc.args[0]))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    total = count_checks(names)
    _private_hypothesis_home()
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console, transient=True)
    try:
        with progress:
            task = progress.add_task(f"conformance {backend}", total=total)
            report = run_conformance(
                backend, rules=names, model_examples=examples, model_shrink=shrink,
                on_start=lambda r, v: progress.update(task, description=f"{r.name}{f'[{v}]' if v else ''}"),
                on_result=lambda res: progress.advance(task))
    except BackendError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(_table(report, detail))
    caps = report.capabilities
    claimed = [k.replace("_", " ") for k in ("page_descriptors", "port_io", "large_pages", "scatter_gather")
               if caps[k]]
    console.print(f"capabilities: {', '.join(claimed) or 'none'}; strategies: {', '.join(caps['strategies'])}",
                  highlight=False)
    verdict = "[green]conforms[/]" if report.ok else "[bold red]does not conform[/]"
    console.print(f"{report.backend} {verdict}: {report.count(PASSED)} passed, {report.count(FAILED)} failed, "
                  f"{report.count(SKIPPED)} skipped in {report.seconds:.2f} s")
    for r in report.results:
        if r.outcome == FAILED and "\n" in r.message:
            console.print(f"\n[bold]{escape(r.check)}[/]\n{escape(r.message)}", highlight=False)
    if json_file is not None:
        json_file.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        console.print(f"results written to {escape(str(json_file))}", highlight=False)
    if not report.ok:
        raise typer.Exit(1)
