"""``dmamap bench``: prefault versus lazy fault, against the store-loop limit and the host kernel.

The sweep (:mod:`~dmamap.bench.sweep`) maps one coherent buffer per (platform,
size) with every strategy, touches a fraction of its pages in sequential or
random order, and times the map and the touches.  Every figure is set against
two references measured in the same run (:mod:`~dmamap.bench.references`):
the store loop writing as many 8-byte values as the strategy wrote PTEs, and
the host kernel mapping a memfd of the same size and touching the same
pattern.  :mod:`~dmamap.bench.targets` measures the issue's performance
targets, :mod:`~dmamap.bench.crossover` where lazy faulting stops paying,
:mod:`~dmamap.bench.report` renders tables and JSON, :mod:`~dmamap.bench.plot`
draws (matplotlib).  The harness (:mod:`~dmamap.bench.harness`) is shared with
the pytest-benchmark files in bench/.
"""

from __future__ import annotations

from dmamap.bench.config import (
    BASE_VA,
    FULL,
    ORDERS,
    PLATFORMS,
    QUICK,
    SWEEP_STRATEGIES,
    ConfigError,
    SweepConfig,
    fmt_ns,
    fmt_size,
    make_config,
    parse_size,
)
from dmamap.bench.crossover import Crossover, crossovers
from dmamap.bench.harness import Pattern, aligned_coherent, bench_machine, fits, make_pattern, populate, time_run
from dmamap.bench.plot import check_matplotlib, plot
from dmamap.bench.references import HOST_KINDS, StoreLimit, host_kind, rss_bytes
from dmamap.bench.report import render, to_json
from dmamap.bench.results import HostRun, Run, SweepResult, Target
from dmamap.bench.run import bench_steps, run_bench
from dmamap.bench.sweep import run_sweep
from dmamap.bench.targets import TARGET_STEPS, measure_targets, target_ranking

__all__ = [
    "SweepConfig", "Run", "HostRun", "Target", "SweepResult", "FULL", "QUICK", "run_sweep", "measure_targets",
    "crossovers", "render", "to_json", "plot", "parse_size", "fmt_size", "aligned_coherent", "populate",
    "StoreLimit", "BASE_VA", "ORDERS", "PLATFORMS", "SWEEP_STRATEGIES", "ConfigError", "make_config", "fmt_ns",
    "Crossover", "Pattern", "bench_machine", "fits", "make_pattern", "time_run", "check_matplotlib", "HOST_KINDS",
    "host_kind", "rss_bytes", "bench_steps", "run_bench", "TARGET_STEPS", "target_ranking",
]
