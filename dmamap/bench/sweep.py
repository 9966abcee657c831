"""The strategy sweep: one coherent buffer per (platform, size), mapped with
every strategy of the configuration, a fraction of its pages touched in
sequential or random order; each point is run ``repeat`` times, the repeats
interleaved across strategies (so that a slow moment of the host hits them
all alike), and kept as a median with its spread and dmamap's exact event
counts.  Page-table pages are warmed up once per size.  Results are appended
to the :class:`SweepResult` as they come, so an interrupted run keeps them."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import dmamap
from dmamap.bench.config import SRAM_POOL, SweepConfig, fmt_size
from dmamap.bench.harness import (
    Pattern,
    Sample,
    aligned_coherent,
    bench_machine,
    fits,
    make_pattern,
    patterns_of,
    populate,
    time_run,
    touched_pages,
)
from dmamap.bench.references import StoreLimit, measure_host
from dmamap.bench.results import Run, SweepResult
from dmamap.bench.spread import spread
from dmamap.mm import PAGE_SHIFT, PAGE_SIZE
from dmamap.strategy import PREFAULT

__all__ = ["sweep_points", "sweep_steps", "run_sweep", "make_patterns"]


def sweep_points(cfg: SweepConfig) -> list[tuple[int, float, str]]:
    """The sweep's points, (size, density, order), less those that would repeat an experiment
    already in it: a density that touches no more pages of the mapping than a higher one did (any
    density of a one-page mapping), and every order but the first where one page is touched (order
    means nothing there).  Counted once, they do not outweigh the points that differ."""
    out = []
    for s in cfg.sizes:
        seen: set[int] = set()
        for d in sorted(cfg.densities, reverse=True):
            n = touched_pages(s >> PAGE_SHIFT, d)
            if n not in seen:
                seen.add(n)
                out += [(s, d, o) for o in (cfg.orders[:1] if n == 1 else cfg.orders)]
    return out


def sweep_steps(cfg: SweepConfig) -> int:
    """How many times :func:`run_sweep` calls ``advance`` (for a progress bar)."""
    points = sweep_points(cfg)
    runs = sum(1 for p in cfg.platforms for s, _d, _o in points if fits(p, s))
    return runs + len(points)


def make_patterns(cfg: SweepConfig) -> dict[tuple[int, float, str], Pattern]:
    """The touch pattern of every sweep point (:func:`sweep_points`), shared by dmamap and the host."""
    rng = random.Random(cfg.seed)
    return {(s, d, o): make_pattern(s >> PAGE_SHIFT, d, o, rng) for s, d, o in sweep_points(cfg)}


def _run(plat: str, size: int, d: float, o: str, strat: str, pat: Pattern, ss: list[Sample],
         limit: StoreLimit) -> Run:
    counts = ss[0].counts   # deterministic: the same in every repeat
    return Run(plat, size, d, o, strat, size >> PAGE_SHIFT, pat.count,
               total=spread([s.map_ns + s.touch_ns for s in ss]), map=spread([s.map_ns for s in ss]),
               touch=spread([s.touch_ns for s in ss]),
               unmap=spread([s.unmap_ns for s in ss]), helper=spread([s.helper_ns for s in ss]), counts=counts,
               unmap_counts=ss[0].unmap_counts, limit_ns=limit.ns(counts.get("ptes_written", 0)),
               wall=spread([s.wall_ns for s in ss]))


def run_sweep(cfg: SweepConfig, advance: Callable[[str], None] = lambda _: None,
              res: SweepResult | None = None) -> SweepResult:
    """Measure every (platform, size, density, order, strategy) and the host references."""
    res = res if res is not None else SweepResult(cfg)
    t_start = time.perf_counter()
    limit = StoreLimit(cfg.repeat)
    patterns = make_patterns(cfg)
    res.store_ns_per_pte = limit.ns(1 << 18) / (1 << 18)
    host: dict[tuple[int, float, str, str], object] = {}
    try:
        try:
            measure_host(cfg, patterns, advance, into=host)  # type: ignore[arg-type]
        finally:
            res.host = list(host.values())  # type: ignore[arg-type]
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
                    for d, o, pat in patterns_of(patterns, size):
                        advance(f"{plat} {fmt_size(size)} {d:.0%} {o}")
                        samples: dict[str, list[Sample]] = {st: [] for st in cfg.strategies}
                        for _ in range(cfg.repeat):
                            for strat in cfg.strategies:
                                samples[strat].append(time_run(mm, dev, buf, strat, pat))
                        res.runs += [_run(plat, size, d, o, strat, pat, samples[strat], limit)
                                     for strat in cfg.strategies]
                    dmamap.dma_free_coherent(dev, buf.size, buf.cpu_addr, buf.dma_handle)
                mm.close()
    finally:
        res.seconds += time.perf_counter() - t_start
    return res
