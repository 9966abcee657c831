"""A sweep for people and for programs: :func:`render` prints the per-platform
tables, the crossover summary and the targets; :func:`to_json` gives
everything measured, with the derived ratios, as plain JSON data."""

from __future__ import annotations

import os
import platform as _platform
import time
from dataclasses import asdict
from typing import Any

from rich.console import Console
from rich.table import Table

import dmamap
from dmamap.bench.config import BASE_VA, fmt_ns, fmt_size
from dmamap.bench.crossover import crossovers
from dmamap.bench.references import HOST_KINDS, host_kind
from dmamap.bench.results import Run, SweepResult
from dmamap.strategy import FAULT, PREFAULT

__all__ = ["render", "to_json"]


_STATUS_STYLE = {"PASS": "bold green", "MISS": "bold red", "INFO": "cyan"}


def render(console: Console, res: SweepResult) -> None:
    """The sweep table per platform, the crossover summary and the targets."""
    host = {(h.size, h.density, h.order, h.kind): h for h in res.host}
    for plat in res.config.platforms:
        runs = [r for r in res.runs if r.platform == plat]
        if not runs:
            continue
        t = Table(title=f"dmamap bench — {plat}: map + touch, best of {res.config.repeat}", title_justify="left")
        for col, just in (("size", "right"), ("touched", "right"), ("order", "left"), ("strategy", "left"),
                          ("ns/mapped pg", "right"), ("ns/touched pg", "right"), ("total", "right"),
                          ("× limit", "right"), ("× host", "right"), ("faults", "right"), ("PTEs", "right")):
            t.add_column(col, justify=just)  # type: ignore[arg-type]
        groups: dict[tuple[int, float, str], list[Run]] = {}
        for r in runs:
            groups.setdefault((r.size, r.density, r.order), []).append(r)
        for (size, d, order), rs in groups.items():
            cheapest = min(rs, key=lambda r: r.total_ns)
            by = {r.strategy: r for r in rs}
            f, p = by.get(FAULT.name), by.get(PREFAULT.name)
            for i, r in enumerate(rs):
                mark = " ◀" if r is cheapest else ""
                if (r is f or r is p) and f and p:
                    winner = f if f.total_ns < p.total_ns else p
                    mark += " ✓" if r is winner else ""
                t.add_row(fmt_size(size) if i == 0 else "", f"{d:.0%}" if i == 0 else "", order if i == 0 else "",
                          r.strategy, f"{r.ns_per_mapped:.1f}", f"{r.ns_per_touched:.1f}", fmt_ns(r.total_ns) + mark,
                          f"{r.x_limit:.1f}", f"{r.x_host:.2f}", str(r.faults), str(r.ptes),
                          end_section=i == len(rs) - 1)
            hp, hf, ha = (host[size, d, order, k] for k in HOST_KINDS)
            t.add_row("", "", "", "[dim]host kernel[/dim]", "", "",
                      f"[dim]populate {fmt_ns(hp.total_ns)}, fault {fmt_ns(hf.total_ns)}, "
                      f"fault-around {fmt_ns(ha.total_ns)}[/dim]", "", "", "", "", end_section=True)
        console.print(t)
    console.print("[dim]◀ cheapest strategy of the group; ✓ cheaper of fault / prefault.  × limit: total over the "
                  "store loop writing as many 8-byte PTEs; × host: total over the host kernel mapping a memfd of "
                  "the same size with the same touch pattern (MAP_POPULATE for prefault, write faults for fault, "
                  "read faults with the kernel's fault-around for fault-around).[/dim]")
    cross = crossovers(res)
    if cross:
        ct = Table(title="crossover: where lazy faulting (one page per fault) stops beating prefault",
                   title_justify="left")
        for col in ("platform", "size", "order", "dmamap", "host kernel", "ranks as host"):
            ct.add_column(col)
        for c in cross:
            same = "[green]yes[/green]" if c.agree == c.total else f"[yellow]no ({c.total - c.agree}/{c.total} " \
                                                                   f"densities differ)[/yellow]"
            ct.add_row(c.platform, fmt_size(c.size), c.order, c.emulated, c.host, same)
        console.print(ct)
    for s in res.skipped:
        console.print(f"[dim]skipped: {s}[/dim]")
    if res.targets:
        tt = Table(title="targets", title_justify="left")
        for col in ("target", "measured", "goal", ""):
            tt.add_column(col)
        for tg in res.targets:
            tt.add_row(tg.name, tg.measured, tg.goal, f"[{_STATUS_STYLE[tg.status]}]{tg.status}[/]")
        console.print(tt)
    console.print(f"[dim]store loop (limit): {res.store_ns_per_pte:.3f} ns per 8-byte PTE; sweep took "
                  f"{res.seconds:.1f} s[/dim]")


def to_json(res: SweepResult) -> dict[str, Any]:
    """Everything measured, with the derived ratios, as plain JSON data."""
    def run(r: Run) -> dict[str, Any]:
        d = asdict(r)
        d.update(total_ns=r.total_ns, ns_per_mapped_page=r.ns_per_mapped, ns_per_touched_page=r.ns_per_touched,
                 x_limit=r.x_limit, x_host=r.x_host, host_kind=host_kind(r.strategy))
        return d

    return {
        "meta": {"dmamap": dmamap.__version__, "python": _platform.python_version(), "machine": _platform.machine(),
                 "kernel": _platform.release(), "cpus": os.cpu_count(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                 "base_va": BASE_VA, "seconds": res.seconds},
        "config": asdict(res.config),
        "store_loop_ns_per_pte": res.store_ns_per_pte,
        "runs": [run(r) for r in res.runs],
        "host": [dict(asdict(h), total_ns=h.total_ns) for h in res.host],
        "crossover": [asdict(c) for c in crossovers(res)],
        "skipped": res.skipped,
        "targets": [asdict(t) for t in res.targets],
    }
