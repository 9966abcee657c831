"""A conformance :class:`~dmamap.testing.runner.Report` for people: the rich
table, capability and verdict lines, full messages of multi-line failures."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dmamap.testing.runner import FAILED, PASSED, SKIPPED, Report

__all__ = ["report_table", "render_report"]

_STYLE = {PASSED: "green", FAILED: "bold red", SKIPPED: "yellow"}


def report_table(report: Report, detail: bool, width: int = 80) -> Table:
    """One row per rule (per check with ``detail``), outcome and first message line.

    Every column folds, so at ``width`` columns long check names and messages
    wrap and never end in an ellipsis; names up to half the width stay whole.
    """
    table = Table(title=f"dmamap conformance: {report.backend}", show_lines=False)
    longest = max((len(r.rule) for r in report.results), default=4)
    table.add_column("rule", overflow="fold", min_width=min(longest, max(16, width // 2 - 8)))
    if not detail:   # always 1 with --detail
        table.add_column("checks", justify="right", overflow="fold", max_width=10)
    table.add_column("result", overflow="fold", min_width=len(SKIPPED))
    table.add_column("message", overflow="fold")
    for name in dict.fromkeys(r.rule for r in report.results):
        rs = [r for r in report.results if r.rule == name]
        if detail:
            for r in rs:
                # A space before the variant lets a narrow column break there, not mid-word.
                name = f"{r.rule} [{r.variant}]" if r.variant else r.rule
                table.add_row(escape(name), f"[{_STYLE[r.outcome]}]{r.outcome}[/]",
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


def render_report(console: Console, report: Report, *, detail: bool = False) -> None:
    """The table, the claimed capabilities, the verdict and every multi-line failure in full.

    On a console that is not a terminal (a pipe, a file) the table has no box
    drawing, so the output greps and diffs cleanly."""
    table = report_table(report, detail, console.width)
    if not console.is_terminal:
        table.box = None
    console.print(table)
    caps = report.capabilities
    claimed = [k.replace("_", " ") for k in ("page_descriptors", "port_io", "large_pages", "scatter_gather")
               if caps[k]]
    console.print(f"capabilities: {', '.join(claimed) or 'none'}; strategies: {', '.join(caps['strategies'])}",
                  highlight=False)
    verdict = ("[yellow]interrupted[/]" if report.interrupted else
               "[green]conforms[/]" if report.ok else "[bold red]does not conform[/]")
    console.print(f"{report.backend} {verdict}: {report.count(PASSED)} passed, {report.count(FAILED)} failed, "
                  f"{report.count(SKIPPED)} skipped in {report.seconds:.2f} s")
    for r in report.results:
        if r.outcome == FAILED and "\n" in r.message:
            console.print(f"\n[bold]{escape(r.check)}[/]\n{escape(r.message)}", highlight=False)
