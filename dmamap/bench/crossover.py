"""Where lazy faulting stops beating prefault: per (platform, size, order),
for dmamap's "fault" against "prefault" and for the host kernel's lazy faults
against MAP_POPULATE, and whether the two rank the same."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dmamap.bench.results import SweepResult
from dmamap.strategy import FAULT, PREFAULT

__all__ = ["Crossover", "crossovers"]


@dataclass
class Crossover:
    """Where lazy faulting stops being cheaper than prefaulting, for one platform, size and order."""

    platform: str
    size: int
    order: str
    emulated: str       # human-readable crossover of dmamap's "fault" vs "prefault"
    host: str           # same for the host kernel's lazy faults vs MAP_POPULATE
    density: float | None
    host_density: float | None
    agree: int          # densities at which both rank fault vs prefault the same way
    total: int


def _crossover(points: Sequence[tuple[float, float, float]]) -> tuple[str, float | None]:
    """points: (density, fault_ns, prefault_ns).  The density below which fault is cheaper."""
    pts = sorted(points)
    if not pts:
        return "n/a", None
    diff = [(d, f - p) for d, f, p in pts]
    if all(x < 0 for _, x in diff):
        return f"fault cheaper at all (≥{pts[-1][0]:.0%})", None
    if all(x >= 0 for _, x in diff):
        return f"prefault cheaper at all (≥{pts[0][0]:.0%})", None
    for (d1, x1), (d2, x2) in zip(diff, diff[1:], strict=False):
        if x1 < 0 <= x2:   # costs are linear in density: interpolate linearly
            d = d1 + (d2 - d1) * (-x1) / (x2 - x1)
            return f"fault cheaper below ~{d:.1%}", d
    return "mixed", None


def crossovers(res: SweepResult) -> list[Crossover]:
    """The crossover of every (platform, size, order) the sweep measured both strategies of."""
    host = {(h.size, h.density, h.order, h.kind): h for h in res.host}
    runs = {(r.platform, r.size, r.density, r.order, r.strategy): r for r in res.runs}
    out = []
    for plat in res.config.platforms:
        for size in res.config.sizes:
            for order in res.config.orders:
                emu, hst, agree, total = [], [], 0, 0
                for d in res.config.densities:
                    f = runs.get((plat, size, d, order, FAULT.name))
                    p = runs.get((plat, size, d, order, PREFAULT.name))
                    if f is None or p is None:
                        continue
                    hf, hp = host[size, d, order, "fault"], host[size, d, order, "populate"]
                    emu.append((d, f.total_ns, p.total_ns))
                    hst.append((d, hf.total_ns, hp.total_ns))
                    total += 1
                    agree += (f.total_ns < p.total_ns) == (hf.total_ns < hp.total_ns)
                if not total:
                    continue
                (e_txt, e_d), (h_txt, h_d) = _crossover(emu), _crossover(hst)
                out.append(Crossover(plat, size, order, e_txt, h_txt, e_d, h_d, agree, total))
    return out

