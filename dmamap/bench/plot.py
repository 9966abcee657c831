"""The sweep as a picture (needs matplotlib, the ``plot`` extra): cost per
mapped page against touch density, one panel per (platform, size) that has a
density (one page has none), strategies grouped by colour family (4 KiB /
large pages), the host kernel's references in grey apart from them, the
model's prediction dotted, and crossovers marked."""

from __future__ import annotations

import importlib.util
from typing import Any

from dmamap.bench.config import fmt_size
from dmamap.bench.crossover import crossovers
from dmamap.bench.results import SweepResult
from dmamap.mm import PAGE_SHIFT

__all__ = ["check_matplotlib", "plot"]

_COLORS = {"prefault": "tab:blue", "prefault-large": "tab:cyan", "fault": "tab:red", "fault-large": "tab:orange",
           "fault-around": "tab:purple"}
_HOST = {"populate": ("dimgray", "host MAP_POPULATE"), "store-touch": ("darkgray", "host store-touch (1 pg/flt)"),
         "read-touch": ("silver", "host read-touch (fault-around)")}


def check_matplotlib() -> None:
    """Fail early when --plot cannot work, without importing matplotlib (and numpy, whose
    BLAS thread would make the process multi-threaded) before the measurements."""
    try:
        found = importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise RuntimeError("--plot needs matplotlib: python -m pip install 'dmamap[plot]'")


def _require_matplotlib() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError("--plot needs matplotlib: python -m pip install 'dmamap[plot]'") from exc
    return plt


def plot(res: SweepResult, path: str, order: str = "seq") -> None:
    """Cost per mapped page (median, IQR band) against touch density for ``order`` touches."""
    plt = _require_matplotlib()
    plats = [p for p in res.config.platforms if any(r.platform == p for r in res.runs)]
    sizes = [s for s in res.config.sizes if s >> PAGE_SHIFT > 1 and any(r.size == s for r in res.runs)]
    if not plats or not sizes:
        return
    fig, axes = plt.subplots(len(plats), len(sizes), figsize=(3.6 * len(sizes), 3.0 * len(plats) + 0.9),
                             squeeze=False, sharex=True)
    cross = {(c.platform, c.size, c.order): c for c in crossovers(res)}
    for i, plat in enumerate(plats):
        for j, size in enumerate(sizes):
            ax = axes[i][j]
            pages = size >> PAGE_SHIFT
            ax.set_title(f"{plat}, {fmt_size(size)}", fontsize=9)
            ax.set_xscale("log")
            ax.set_yscale("log")
            for strat in res.config.strategies:
                rs = sorted((r for r in res.runs if (r.platform, r.size, r.order, r.strategy) ==
                             (plat, size, order, strat)), key=lambda r: r.density)
                if not rs:
                    continue
                xs = [r.density for r in rs]
                c = _COLORS.get(strat)
                ax.plot(xs, [r.total.median / pages for r in rs], "-o", ms=3, color=c, label=strat)
                ax.fill_between(xs, [r.total.q1 / pages for r in rs], [r.total.q3 / pages for r in rs], color=c,
                                alpha=0.2, lw=0)
                if strat in ("prefault", "fault") and all(r.predicted_ns is not None for r in rs):
                    ax.plot(xs, [r.predicted_ns / pages for r in rs], ":", color=c, lw=1,  # type: ignore[operator]
                            label=f"model: kernel {strat}")
            for kind, (c, label) in _HOST.items():
                hs = sorted((h for h in res.host if (h.size, h.order, h.kind) == (size, order, kind) and h.total),
                            key=lambda h: h.density)
                if hs:
                    ax.plot([h.density for h in hs], [h.total_ns / pages for h in hs], "--", color=c, lw=1.5,
                            label=label)
            cr = cross.get((plat, size, order))
            for est, c in ((cr.dmamap, "tab:red"), (cr.host, "black")) if cr else ():
                if est.kind == "cross" and est.at:
                    ax.axvline(est.at, color=c, lw=0.8, ls="-.")
                    if est.lo and est.hi and est.hi > est.lo:
                        ax.axvspan(est.lo, est.hi, color=c, alpha=0.08)
            if i == len(plats) - 1:
                ax.set_xlabel("touched fraction of pages")
            if j == 0:
                ax.set_ylabel("ns per mapped page")
            ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=7)
    fig.suptitle(f"dmamap map + touch cost ({order} touches): median and IQR of {res.config.repeat} runs; "
                 "dash-dot lines: crossovers (red dmamap, black host)", fontsize=9)
    fig.tight_layout(rect=(0, 0.1, 1, 0.96))
    fig.savefig(path, dpi=90)
    plt.close(fig)
