"""One ``dmamap bench`` run as a library call: the sweep, then the targets."""

from __future__ import annotations

from collections.abc import Callable

from dmamap.bench.config import SweepConfig
from dmamap.bench.crossover import crossovers
from dmamap.bench.results import SweepResult
from dmamap.bench.sweep import run_sweep, sweep_steps
from dmamap.bench.targets import TARGET_STEPS, measure_targets, target_ranking

__all__ = ["bench_steps", "run_bench"]


def bench_steps(cfg: SweepConfig, targets: bool = True) -> int:
    """How many times :func:`run_bench` calls ``advance``."""
    return sweep_steps(cfg) + (TARGET_STEPS if targets else 0)


def run_bench(cfg: SweepConfig, *, targets: bool = True,
              advance: Callable[[str], None] = lambda _: None) -> SweepResult:
    """Sweep ``cfg`` and, with ``targets``, measure the issue's targets and the
    fault/prefault ranking against the host kernel; ``advance(what)`` is called
    before each step."""
    res = run_sweep(cfg, advance)
    if targets:
        res.targets = measure_targets(cfg, advance) + [target_ranking(crossovers(res))]
    return res
