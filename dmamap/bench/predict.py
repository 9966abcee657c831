"""The model against the measured host: :func:`apply_profile` puts a
predicted host cost on every run (Σ dmamap's event counts × the profile's
costs), :func:`agreement` measures how well the prediction matches the host
references of the same run: the fault/prefault ranking at every point where
the host declared a winner, and the predicted/measured cost ratio."""

from __future__ import annotations

from dataclasses import dataclass

from dmamap.bench.harness import model_events, unmap_events
from dmamap.bench.model import UNMAP_EVENTS, Profile
from dmamap.bench.references import host_kind
from dmamap.bench.results import SweepResult
from dmamap.bench.spread import beats
from dmamap.strategy import FAULT, PREFAULT, STRATEGIES

__all__ = ["apply_profile", "Agreement", "agreement"]


def apply_profile(res: SweepResult, prof: Profile) -> None:
    """Predict the host kernel's map + touch and unmap cost of every run."""
    res.profile = prof
    for r in res.runs:
        r.predicted_ns = prof.predict(model_events(r.counts), size=r.size)
        r.predicted_unmap_ns = prof.predict(unmap_events(r.unmap_counts), UNMAP_EVENTS, size=r.size)


@dataclass
class Agreement:
    """How the model's predictions compare with the measured host references."""

    ranked: int = 0          # points where the host declared fault or prefault the winner
    agree: int = 0           # ... and the prediction ranks them the same
    host_ties: int = 0       # points where the host's spreads overlap (no winner declared)
    ratios: list[float] | None = None   # predicted / measured host cost, per (point, 4 KiB strategy)

    @property
    def rank_rate(self) -> float:
        return self.agree / self.ranked if self.ranked else float("nan")

    @property
    def median_ratio(self) -> float:
        r = sorted(self.ratios or [])
        return r[len(r) // 2] if r else float("nan")

    @property
    def median_abs_error(self) -> float:
        r = sorted(abs(x - 1) for x in self.ratios or [])
        return r[len(r) // 2] if r else float("nan")


def agreement(res: SweepResult) -> Agreement:
    """Ranking agreement and cost ratio over the sweep (x86's counts; the host is one machine).
    Points of one page are left out: one page has no density and no ranking to predict."""
    host = {(h.size, h.density, h.order, h.kind): h for h in res.host}
    plat = next((p for p in ("x86", *res.config.platforms) if any(r.platform == p for r in res.runs)), None)
    runs = {(r.size, r.density, r.order, r.strategy): r for r in res.runs if r.platform == plat}
    a = Agreement(ratios=[])
    for (size, d, order, strat), r in runs.items():
        if r.predicted_ns is None or r.pages == 1 or STRATEGIES[strat].large:
            continue
        h = host.get((size, d, order, host_kind(strat)))
        if h and h.total:
            a.ratios.append(r.predicted_ns / h.total.median)   # type: ignore[union-attr]
        if strat != FAULT.name:
            continue
        p = runs.get((size, d, order, PREFAULT.name))
        hf, hp = host.get((size, d, order, "store-touch")), host.get((size, d, order, "populate"))
        if p is None or p.predicted_ns is None or not (hf and hp and hf.total and hp.total):
            continue
        if beats(hf.total, hp.total) or beats(hp.total, hf.total):
            a.ranked += 1
            a.agree += (r.predicted_ns < p.predicted_ns) == beats(hf.total, hp.total)
        else:
            a.host_ties += 1
    return a
