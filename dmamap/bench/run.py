"""One ``dmamap bench`` run as a library call: the sweep, the model's predictions
against the measured host, the ratio targets and the scenarios.  Everything is
recorded in the :class:`SweepResult` as it is measured, so a run interrupted by
Ctrl-C (KeyboardInterrupt) still holds what was measured so far."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

from dmamap.bench.config import SweepConfig
from dmamap.bench.model import Profile, machine_info
from dmamap.bench.predict import agreement, apply_profile
from dmamap.bench.results import SweepResult, Target
from dmamap.bench.sweep import run_sweep, sweep_steps
from dmamap.bench.targets import measure_targets, target_steps

__all__ = ["bench_steps", "run_bench", "model_targets"]


def bench_steps(cfg: SweepConfig, targets: bool = True, sweep: bool = True) -> int:
    """How many times :func:`run_bench` calls ``advance``."""
    return (sweep_steps(cfg) if sweep else 0) + (target_steps(cfg) if targets else 0)


def model_targets(res: SweepResult) -> list[Target]:
    """The model's two figures against the measured host of the same run."""
    a = agreement(res)
    if not a.ratios:
        return []
    return [
        Target("model ranks fault vs prefault as the measured host", f"{a.agree_all}/{a.points} points "
               f"({a.agree}/{a.ranked} host winners; {a.ties_agree}/{a.host_ties} host ties, where the predicted "
               "ratio must be within the host's quartile range)", "≥ 95% of all sweep points",
               "PASS" if a.rank_rate >= 0.95 else "MISS", a.rank_rate,
               {"key": "model_rank", "points": a.points, "agree_all": a.agree_all, "ranked": a.ranked,
                "agree": a.agree, "host_ties": a.host_ties, "ties_agree": a.ties_agree}),
        Target("model cost / measured host cost, median", f"{a.median_ratio:.2f}× (median |error| "
               f"{a.median_abs_error:.0%}, {len(a.ratios)} runs)", "within ±25%",
               "PASS" if abs(a.median_ratio - 1) <= 0.25 else "MISS", a.median_ratio, {"key": "model_error"}),
    ]


def run_bench(cfg: SweepConfig, *, targets: bool = True, sweep: bool = True, profile: Profile | None = None,
              scenarios: Sequence[str] = (), advance: Callable[[str], None] = lambda _: None,
              res: SweepResult | None = None) -> SweepResult:
    """Sweep ``cfg``; with ``profile``, predict the host kernel's cost of every run and measure the
    prediction against the host; with ``targets``, measure the ratio targets; then the scenarios."""
    res = res if res is not None else SweepResult(cfg)
    res.meta = dict(machine_info(), uptime_load=os.getloadavg(), started=time.strftime("%Y-%m-%dT%H:%M:%S"))
    res.profile = profile
    if sweep:
        run_sweep(cfg, advance, res)
        if profile is not None:
            apply_profile(res, profile)
            res.targets += model_targets(res)
    if targets:
        measure_targets(cfg, advance, into=res.targets)
    if scenarios:
        from dmamap.bench.scenarios import run_scenario

        for name in scenarios:
            advance(f"scenario {name}")
            res.scenarios.append(run_scenario(name, cfg, profile))
    res.meta["loadavg_end"] = list(os.getloadavg())
    return res
