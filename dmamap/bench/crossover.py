"""Where lazy faulting stops beating prefault, per (platform, size, order):
for dmamap's "fault" against "prefault", for the host kernel's one-page-per-fault
store touches against MAP_POPULATE, and for the model's prediction.  Each is a
density with an interval: the crossing of the medians, bracketed by the
crossings of the pessimistic and optimistic quartile differences."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dmamap.bench.results import SweepResult
from dmamap.bench.spread import Spread
from dmamap.strategy import FAULT, PREFAULT

__all__ = ["Crossover", "Estimate", "crossovers", "estimate"]


@dataclass
class Estimate:
    """A crossover density: ``at`` (medians), within [lo, hi]; ``kind`` says what was found."""

    kind: str            # "cross" | "fault" (fault cheaper everywhere measured) | "prefault" | "n/a"
    at: float | None = None
    lo: float | None = None
    hi: float | None = None

    def text(self) -> str:
        if self.kind == "fault":
            return f"fault ≤{self.hi:.0%}" if self.hi is not None else "fault everywhere"
        if self.kind == "prefault":
            return f"prefault ≥{self.lo:.0%}" if self.lo is not None else "prefault everywhere"
        if self.kind == "n/a" or self.at is None:
            return "n/a"
        if self.lo is not None and self.hi is not None and self.hi - self.lo > 1e-4:
            return f"{self.at:.1%} ({self.lo:.1%}–{self.hi:.1%})"
        return f"{self.at:.1%}"


def _crossing(pts: Sequence[tuple[float, float]]) -> float | None:
    """Lowest density at which diff (fault - prefault) turns from < 0 to ≥ 0, linearly interpolated."""
    for (d1, x1), (d2, x2) in zip(pts, pts[1:], strict=False):
        if x1 < 0 <= x2:
            return d1 + (d2 - d1) * (-x1) / (x2 - x1)
    return None


def estimate(points: Sequence[tuple[float, Spread, Spread]]) -> Estimate:
    """points: (density, fault cost, prefault cost)."""
    pts = sorted(points, key=lambda p: p[0])
    if not pts:
        return Estimate("n/a")
    mid = [(d, f.median - p.median) for d, f, p in pts]
    if all(x < 0 for _, x in mid):
        return Estimate("fault", hi=pts[-1][0])
    if all(x >= 0 for _, x in mid):
        return Estimate("prefault", lo=pts[0][0])
    at = _crossing(mid)
    # fault looks cheapest when its low quartile meets prefault's high one: a later crossing
    late = _crossing([(d, f.q1 - p.q3) for d, f, p in pts])
    early = _crossing([(d, f.q3 - p.q1) for d, f, p in pts])
    lo = min(x for x in (early, at) if x is not None) if early is not None else pts[0][0]
    hi = max(x for x in (late, at) if x is not None) if late is not None else pts[-1][0]
    return Estimate("cross", at, lo, hi)


@dataclass
class Crossover:
    """Where fault stops being cheaper than prefault, for one platform, size and order."""

    platform: str
    size: int
    order: str
    dmamap: Estimate
    host: Estimate
    predicted: Estimate | None


def crossovers(res: SweepResult) -> list[Crossover]:
    """The crossovers of every (platform, size, order) the sweep measured both strategies of
    (at least two densities: one page has no density)."""
    host = {(h.size, h.density, h.order, h.kind): h for h in res.host}
    runs = {(r.platform, r.size, r.density, r.order, r.strategy): r for r in res.runs}
    out = []
    for plat in res.config.platforms:
        for size in res.config.sizes:
            for order in res.config.orders:
                emu, hst, pred = [], [], []
                for d in res.config.densities:
                    f = runs.get((plat, size, d, order, FAULT.name))
                    p = runs.get((plat, size, d, order, PREFAULT.name))
                    if f is None or p is None or f.touched == p.pages and d < 1:
                        continue
                    emu.append((d, f.total, p.total))
                    hf, hp = host.get((size, d, order, "store-touch")), host.get((size, d, order, "populate"))
                    if hf and hp and hf.total and hp.total:
                        hst.append((d, hf.total, hp.total))
                    if f.predicted_ns is not None and p.predicted_ns is not None:
                        pred.append((d, Spread(f.predicted_ns, f.predicted_ns, f.predicted_ns, 0, 0, 1),
                                     Spread(p.predicted_ns, p.predicted_ns, p.predicted_ns, 0, 0, 1)))
                if len(emu) < 2:
                    continue
                out.append(Crossover(plat, size, order, estimate(emu), estimate(hst),
                                     estimate(pred) if pred else None))
    return out
