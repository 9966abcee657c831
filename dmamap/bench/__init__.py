"""``dmamap bench``: prefault versus lazy fault, against the store-loop limit and the host kernel.

The sweep (:mod:`~dmamap.bench.sweep`) maps one coherent buffer per (platform,
size) with every strategy, touches a fraction of its pages in sequential or
random order, and times map and touches, repeated and interleaved
(:mod:`~dmamap.bench.spread`: medians, spread, winners only beyond the noise).
Every figure is set against references measured in the same run
(:mod:`~dmamap.bench.references`): the store loop, and the host kernel doing the
same with the kernel's own fault counts.  :mod:`~dmamap.bench.model` prices
dmamap's exact event counts with a per-event cost profile of a real kernel
(:mod:`~dmamap.bench.calibrate` measures one; :mod:`~dmamap.bench.predict`
checks it against the host).  :mod:`~dmamap.bench.targets` measures the ratio
targets, :mod:`~dmamap.bench.crossover` where lazy faulting stops paying,
:mod:`~dmamap.bench.scenarios` presets from real use, :mod:`~dmamap.bench.report`
renders (80 columns, JSON, comparisons), :mod:`~dmamap.bench.plot` draws.
"""

from __future__ import annotations

from dmamap.bench.calibrate import calibrate, calibrate_steps, default_profile_path
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
from dmamap.bench.crossover import Crossover, Estimate, crossovers
from dmamap.bench.harness import Pattern, aligned_coherent, bench_machine, fits, make_pattern, populate, time_run
from dmamap.bench.model import Profile, ProfileError, example_profiles, load_profile
from dmamap.bench.plot import check_matplotlib, plot
from dmamap.bench.predict import agreement, apply_profile
from dmamap.bench.references import HOST_KINDS, StoreLimit, host_facts, host_kind, rss_bytes
from dmamap.bench.report import compare, render, to_json
from dmamap.bench.results import HostRun, Run, Scenario, SweepResult, Target
from dmamap.bench.run import bench_steps, run_bench
from dmamap.bench.scenarios import SCENARIOS
from dmamap.bench.spread import Spread, spread, winner
from dmamap.bench.sweep import run_sweep
from dmamap.bench.targets import measure_targets

__all__ = [
    "SweepConfig", "Run", "HostRun", "Target", "Scenario", "SweepResult", "FULL", "QUICK", "run_sweep",
    "measure_targets", "crossovers", "Crossover", "Estimate", "render", "to_json", "compare", "plot", "parse_size",
    "fmt_size", "aligned_coherent", "populate", "BASE_VA", "ORDERS", "PLATFORMS", "SWEEP_STRATEGIES", "ConfigError",
    "make_config", "fmt_ns", "Pattern", "bench_machine", "fits", "make_pattern", "time_run", "check_matplotlib",
    "HOST_KINDS", "StoreLimit", "host_kind", "host_facts", "rss_bytes", "bench_steps", "run_bench", "Profile",
    "ProfileError",
    "load_profile", "example_profiles", "calibrate", "calibrate_steps", "default_profile_path", "agreement",
    "apply_profile",
    "SCENARIOS", "Spread", "spread", "winner",
]
