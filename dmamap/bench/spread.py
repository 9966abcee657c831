"""Repeated measurements: :class:`Spread` (median with the interquartile range
and the extremes) and the rule that declares a winner only where the gap
between two strategies exceeds their spread."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Spread", "spread", "beats", "winner", "TIE"]

TIE = "tie"


def _quantile(xs: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile of sorted ``xs`` (numpy's default method)."""
    pos = (len(xs) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass(frozen=True)
class Spread:
    """Median, quartiles and extremes of repeated timings (ns)."""

    median: float
    q1: float
    q3: float
    lo: float
    hi: float
    n: int

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    @property
    def rel_iqr(self) -> float:
        """IQR over the median: the run-to-run noise of this point."""
        return self.iqr / self.median if self.median else 0.0

    def scaled(self, k: float) -> Spread:
        return Spread(self.median * k, self.q1 * k, self.q3 * k, self.lo * k, self.hi * k, self.n)

    def to_json(self) -> dict[str, float]:
        return {"median": self.median, "q1": self.q1, "q3": self.q3, "min": self.lo, "max": self.hi, "n": self.n}

    @staticmethod
    def from_json(d: Mapping[str, float]) -> Spread:
        return Spread(d["median"], d["q1"], d["q3"], d["min"], d["max"], int(d["n"]))


def spread(samples: Sequence[float]) -> Spread:
    """The :class:`Spread` of at least one sample."""
    xs = sorted(float(x) for x in samples)
    if not xs:
        raise ValueError("no samples")
    return Spread(_quantile(xs, 0.5), _quantile(xs, 0.25), _quantile(xs, 0.75), xs[0], xs[-1], len(xs))


def beats(a: Spread, b: Spread) -> bool:
    """``a`` is cheaper than ``b`` beyond the noise: the interquartile ranges do not overlap."""
    return a.q3 < b.q1


def winner(costs: Mapping[str, Spread]) -> tuple[str, list[str]]:
    """The declared winner of a group (a name, or :data:`TIE`) and the names tied for first:
    the cheapest median wins only when it :func:`beats` every other entry."""
    if not costs:
        return TIE, []
    best = min(costs, key=lambda k: costs[k].median)
    tied = [best] + [k for k in costs if k != best and not beats(costs[best], costs[k])]
    return (best if len(tied) == 1 else TIE), tied
