"""The sweep as a picture (needs matplotlib, the ``plot`` extra): cost per
mapped page against touch density, one panel per (platform, size)."""

from __future__ import annotations

import importlib.util
from typing import Any

from dmamap.bench.config import SWEEP_STRATEGIES, fmt_size
from dmamap.bench.results import SweepResult
from dmamap.mm import PAGE_SHIFT

__all__ = ["check_matplotlib", "plot"]


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


def plot(res: SweepResult, path: str) -> None:
    """Cost per mapped page against touch density, one panel per (platform, size), a line per strategy."""
    plt = _require_matplotlib()
    plats = [p for p in res.config.platforms if any(r.platform == p for r in res.runs)]
    sizes = list(res.config.sizes)
    fig, axes = plt.subplots(len(plats), len(sizes), figsize=(3.2 * len(sizes), 2.8 * len(plats)), squeeze=False,
                             sharex=True)
    colors = dict(zip(SWEEP_STRATEGIES, ("tab:blue", "tab:red", "tab:orange", "tab:green", "tab:purple"), strict=True))
    for i, plat in enumerate(plats):
        for j, size in enumerate(sizes):
            ax = axes[i][j]
            ax.set_title(f"{plat}, {fmt_size(size)}", fontsize=9)
            if not any(r.platform == plat and r.size == size for r in res.runs):
                ax.text(0.5, 0.5, "not run\n(see skipped)", ha="center", va="center", transform=ax.transAxes)
                ax.set_axis_off()   # not set_xticks: the x axis is shared
                continue
            ax.set_xscale("log")
            ax.set_yscale("log")
            for order, style in (("seq", "-"), ("random", "--")):
                for strat in res.config.strategies:
                    pts = sorted((r.density, r.ns_per_mapped) for r in res.runs
                                 if (r.platform, r.size, r.order, r.strategy) == (plat, size, order, strat))
                    if pts:
                        ax.plot(*zip(*pts, strict=True), style, marker="o", ms=3, color=colors.get(strat),
                                label=f"{strat} ({order})")
                for kind, c in (("populate", "black"), ("fault", "grey")):
                    pts = sorted((h.density, h.total_ns / (size >> PAGE_SHIFT)) for h in res.host
                                 if (h.size, h.order, h.kind) == (size, order, kind))
                    if pts:
                        ax.plot(*zip(*pts, strict=True), style, color=c, lw=1, label=f"host {kind} ({order})")
            if i == len(plats) - 1:
                ax.set_xlabel("touched fraction of pages")
            if j == 0:
                ax.set_ylabel("ns per mapped page")
            ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=6, fontsize=7)
    fig.suptitle("dmamap: map + touch cost against touch density (solid: sequential, dashed: random)")
    fig.tight_layout(rect=(0, 0.08, 1, 0.97))
    fig.savefig(path, dpi=90)
    plt.close(fig)

