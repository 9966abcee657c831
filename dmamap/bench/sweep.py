"""The strategy sweep: one coherent buffer per (platform, size), mapped with
every strategy of the configuration, a fraction of its pages touched in
sequential or random order; the map and the touches are timed and set against
the store-loop limit and the host kernel (:mod:`dmamap.bench.references`).
Page-table pages are warmed up once per size."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import dmamap
from dmamap.bench.config import SRAM_POOL, SweepConfig, fmt_size
from dmamap.bench.harness import Pattern, aligned_coherent, bench_machine, fits, make_pattern, populate, time_run
from dmamap.bench.references import StoreLimit, host_kind, measure_host
from dmamap.bench.results import Run, SweepResult
from dmamap.mm import PAGE_SHIFT, PAGE_SIZE
from dmamap.strategy import PREFAULT

__all__ = ["sweep_steps", "run_sweep"]


def sweep_steps(cfg: SweepConfig) -> int:
    """How many times :func:`run_sweep` calls ``advance`` (for a progress bar)."""
    per = len(cfg.densities) * len(cfg.orders)
    runs = sum(per * len(cfg.strategies) for p in cfg.platforms for s in cfg.sizes if fits(p, s))
    return runs + len(cfg.sizes) * per


def run_sweep(cfg: SweepConfig, advance: Callable[[str], None] = lambda _: None) -> SweepResult:
    """Measure every (platform, size, density, order, strategy) and the host references."""
    res = SweepResult(cfg)
    t_start = time.perf_counter()
    limit = StoreLimit(cfg.repeat)
    rng = random.Random(cfg.seed)
    patterns = {(s, d, o): make_pattern(s >> PAGE_SHIFT, d, o, rng)
                for s in cfg.sizes for d in cfg.densities for o in cfg.orders}
    res.store_ns_per_pte = limit.ns(1 << 18) / (1 << 18)

    host = measure_host(cfg, patterns, advance)
    res.host = list(host.values())

    for plat in cfg.platforms:
        sizes = [s for s in cfg.sizes if fits(plat, s)]
        res.skipped += [f"{plat} {fmt_size(s)}: larger than the platform's {fmt_size(SRAM_POOL)} SRAM pool"
                        for s in cfg.sizes if not fits(plat, s)]
        if not sizes:
            continue
        with bench_machine(plat, max(sizes)) as (m, dev):
            mm = m.new_address_space()
            for size in sizes:
                buf = aligned_coherent(dev, size)
                pfn = dmamap.dma_coherent_to_pfn(dev, buf.cpu_addr, buf.dma_handle)
                populate(m, pfn, size >> PAGE_SHIFT)
                time_run(mm, dev, buf, PREFAULT.name, Pattern(size >> PAGE_SHIFT, PAGE_SIZE))   # warm tables
                for d in cfg.densities:
                    for o in cfg.orders:
                        pat = patterns[size, d, o]
                        for strat in cfg.strategies:
                            advance(f"{plat} {fmt_size(size)} {d:.0%} {o} {strat}")
                            map_ns, touch_ns, unmap_ns, faults, ptes, helper_ns = min(
                                (time_run(mm, dev, buf, strat, pat) for _ in range(cfg.repeat)),
                                key=lambda t: t[0] + t[1])
                            h = host[size, d, o, host_kind(strat)]
                            res.runs.append(Run(plat, size, d, o, strat, size >> PAGE_SHIFT, pat.count, map_ns,
                                                touch_ns, unmap_ns, faults, ptes, helper_ns, limit_ns=limit.ns(ptes),
                                                host_ns=h.total_ns))
                dmamap.dma_free_coherent(dev, buf.size, buf.cpu_addr, buf.dma_handle)
            mm.close()
    res.seconds = time.perf_counter() - t_start
    return res
