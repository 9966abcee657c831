"""The model against the measured host: :func:`apply_profile` puts a
predicted host cost on every run (Σ dmamap's event counts × the profile's
costs), :func:`agreement` measures how well the prediction matches the host
references of the same run: the fault/prefault ranking at every sweep point
(ties included, see :class:`Agreement`), and the predicted/measured cost ratio."""

from __future__ import annotations

from dataclasses import dataclass

from dmamap.bench.harness import model_events, unmap_events
from dmamap.bench.model import UNMAP_EVENTS, Profile
from dmamap.bench.references import host_kind
from dmamap.bench.results import SweepResult
from dmamap.bench.spread import TIE, Spread, beats
from dmamap.strategy import FAULT, PREFAULT, STRATEGIES

__all__ = ["apply_profile", "Agreement", "agreement", "verdict", "model_agrees", "calibration_ratio"]


def apply_profile(res: SweepResult, prof: Profile) -> None:
    """Predict the host kernel's map + touch and unmap cost of every run."""
    res.profile = prof
    for r in res.runs:
        r.predicted_ns = prof.predict(model_events(r.counts), size=r.size)
        r.predicted_unmap_ns = prof.predict(unmap_events(r.unmap_counts), UNMAP_EVENTS, size=r.size)


@dataclass
class Agreement:
    """How the model's predictions compare with the measured host references.

    The ranking is judged at every sweep point (size, density, order) of the platform whose
    counts are priced, from the host's verdict on fault (store-touch) against prefault
    (MAP_POPULATE): "fault" or "prefault" where one's IQR lies wholly below the other's
    (:func:`~dmamap.bench.spread.beats`), else "tie".  Where the host declared a winner, the model
    agrees if it predicts the same strategy cheaper.  Where the host found a tie, the model agrees
    only if its predicted fault/prefault ratio lies within the ratios the host's quartiles allow,
    [fault q1 / prefault q3, fault q3 / prefault q1]: a model that predicts a gap the host's noise
    rules out disagrees with a tie as much as a wrong winner does."""

    points: int = 0          # sweep points with both strategies and both host references
    agree_all: int = 0       # ... where the model's three-way verdict equals the host's
    ranked: int = 0          # points where the host declared fault or prefault the winner
    agree: int = 0           # ... and the model names the same winner
    host_ties: int = 0       # points where the host's spreads overlap (no winner declared)
    ties_agree: int = 0      # ... and the predicted ratio is within the host's quartile range
    ratios: list[float] | None = None   # predicted / measured host cost, per (point, 4 KiB strategy)
    #: (size, density, order, host verdict, predicted fault/prefault ratio, the host's median ratio)
    #: where they disagree
    disagree: list[tuple[int, float, str, str, float, float]] | None = None

    @property
    def rank_rate(self) -> float:
        """Agreement over every point (ties included)."""
        return self.agree_all / self.points if self.points else float("nan")

    @property
    def winner_rate(self) -> float:
        """Agreement over the points where the host declared a winner."""
        return self.agree / self.ranked if self.ranked else float("nan")

    @property
    def median_ratio(self) -> float:
        r = sorted(self.ratios or [])
        return r[len(r) // 2] if r else float("nan")

    @property
    def median_abs_error(self) -> float:
        r = sorted(abs(x - 1) for x in self.ratios or [])
        return r[len(r) // 2] if r else float("nan")


def verdict(fault: Spread, prefault: Spread) -> str:
    """"fault", "prefault" or :data:`TIE`: which is cheaper beyond the noise."""
    return FAULT.name if beats(fault, prefault) else PREFAULT.name if beats(prefault, fault) else TIE


def model_agrees(fault_ns: float, prefault_ns: float, host_fault: Spread, host_prefault: Spread) -> bool:
    """Does the predicted pair agree with the host's verdict (see :class:`Agreement`)?"""
    said = verdict(host_fault, host_prefault)
    if said != TIE:
        return (fault_ns < prefault_ns) == (said == FAULT.name)
    ratio = fault_ns / prefault_ns if prefault_ns else float("inf")
    return host_fault.q1 / max(host_prefault.q3, 1e-9) <= ratio <= host_fault.q3 / max(host_prefault.q1, 1e-9)


def agreement(res: SweepResult) -> Agreement:
    """Ranking agreement over every sweep point and the cost ratio over every (point, 4 KiB strategy)
    of one platform (x86's counts when swept; the host is one machine).  Large-page strategies are
    left out of the ratio: the host's shmem cannot use huge pages, so it has no reference for them."""
    host = {(h.size, h.density, h.order, h.kind): h for h in res.host}
    plat = next((p for p in ("x86", *res.config.platforms) if any(r.platform == p for r in res.runs)), None)
    runs = {(r.size, r.density, r.order, r.strategy): r for r in res.runs if r.platform == plat}
    disagree: list[tuple[int, float, str, str, float, float]] = []
    a = Agreement(ratios=[], disagree=disagree)
    for (size, d, order, strat), r in runs.items():
        if r.predicted_ns is None or STRATEGIES[strat].large:
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
        said = verdict(hf.total, hp.total)
        ok = model_agrees(r.predicted_ns, p.predicted_ns, hf.total, hp.total)
        a.points += 1
        a.agree_all += ok
        if said == TIE:
            a.host_ties += 1
            a.ties_agree += ok
        else:
            a.ranked += 1
            a.agree += ok
        if not ok:
            disagree.append((size, d, order, said, r.predicted_ns / p.predicted_ns,
                             hf.total.median / hp.total.median))
    return a


def calibration_ratio(prof: Profile | None, size: int, density: float, order: str) -> float | None:
    """The host's fault/prefault (store-touch/populate) ratio at this point as the profile's own
    calibration measured it, if it ran this point: beside a disagreement, it shows how far the host
    moved between two runs of the same machine."""
    runs = (prof.fit.get("runs") if prof else None) or []
    med = {(r["kind"], r["size"], r["density"], r["order"]): r["ns"]["median"] for r in runs}
    f, p = med.get(("store-touch", size, density, order)), med.get(("populate", size, density, order))
    return f / p if f and p else None
