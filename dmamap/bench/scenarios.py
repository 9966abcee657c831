"""Presets from real users (``dmamap bench --scenario NAME``): each maps what
the user maps, with every strategy that applies, and reports dmamap's time,
its exact event counts and -- with a cost profile -- what the host kernel
would spend.  Instances too large to run are measured scaled down and
extrapolated by the event counts, which scale exactly; the output says so."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import dmamap
from dmamap.bench.config import GiB, KiB, MiB, SweepConfig, fmt_ns, fmt_size
from dmamap.bench.harness import Pattern, aligned_coherent, bench_machine, model_events, populate, time_run
from dmamap.bench.model import Profile
from dmamap.bench.results import Scenario
from dmamap.mm import PAGE_SHIFT, PAGE_SIZE
from dmamap.strategy import STRATEGIES

__all__ = ["SCENARIOS", "run_scenario"]


def _pred(profile: Profile | None, counts: dict[str, int], size: int, scale: float = 1.0, maps: int = 1) -> str:
    """The profile's prediction for ``maps`` mappings of ``size`` bytes that together count
    ``scale`` times ``counts`` (one call per mapping)."""
    if profile is None:
        return "-"
    ev = {k: v * (maps if k in ("map_call", "fill_call") else scale) for k, v in model_events(counts).items()}
    return fmt_ns(profile.predict(ev, size=size))


def gpu_32x4g(cfg: SweepConfig, profile: Profile | None) -> Scenario:
    """A 4 GiB buffer on each of 32 devices, touched in full: 1 GiB measured, scaled ×128."""
    size, scale = GiB, 128.0
    rows, data = [], {}
    strategies = ("prefault", "prefault-large", "fault", "fault-large")
    with bench_machine("x86", size) as (m, dev):
        mm = m.new_address_space()
        buf = aligned_coherent(dev, size)
        populate(m, dmamap.dma_coherent_to_pfn(dev, buf.cpu_addr, buf.dma_handle), size >> PAGE_SHIFT)
        pat = Pattern(size >> PAGE_SHIFT, PAGE_SIZE)
        for strat in strategies:
            ss = [time_run(mm, dev, buf, strat, pat) for _ in range(3)]
            ns = statistics.median(s.map_ns + s.touch_ns for s in ss)
            c = ss[0].counts
            rows.append([strat, f"{c['faults'] * scale:,.0f}", f"{c['ptes_written'] * scale:,.0f}",
                         fmt_ns(ns * scale), _pred(profile, c, 4 * GiB, scale, maps=32)])
            data[strat] = {"measured_1g_ns": ns, "counts_1g": c}
        mm.close()
    return Scenario("gpu-32x4g", "4 GiB on each of 32 devices, all pages touched",
                    ["strategy", "faults", "entries", "dmamap", "kernel"], rows,
                    ["Measured: one 1 GiB buffer on x86; figures ×128 (event counts scale exactly, times are "
                     "extrapolated).  kernel: the profile's prediction; prefault-large uses 1 GiB/2 MiB entries, "
                     "fault-large 2 MiB faults."], data)


def alsa_periods(cfg: SweepConfig, profile: Profile | None) -> Scenario:
    """ALSA period buffers: small buffers mapped, touched and unmapped over and over."""
    rows, data = [], {}
    cycles = 200
    with bench_machine("arm", 16 * MiB) as (m, dev):
        mm = m.new_address_space()
        for size in (16 * KiB, 64 * KiB, 256 * KiB):
            buf = dmamap.dma_alloc_coherent(dev, size)
            pat = Pattern(size >> PAGE_SHIFT, PAGE_SIZE)
            for strat in ("prefault", "fault"):
                t0 = time.perf_counter_ns()
                for _ in range(cycles):
                    vma = mm.mmap(size)
                    dmamap.dma_mmap_coherent(dev, vma, *buf, strategy=strat)
                    mm.touch(vma.start, pat.count)
                    mm.munmap(vma)
                per = (time.perf_counter_ns() - t0) / cycles
                s = time_run(mm, dev, buf, strat, pat)
                pred = "-" if profile is None else fmt_ns(
                    profile.predict(model_events(s.counts), size=size) + profile.cost("unmap_call")
                    + profile.cost("pte_clear", size) * s.unmap_counts.get("ptes_cleared", 0))
                rows.append([f"{fmt_size(size)} {strat}", fmt_ns(per), str(s.counts["faults"]), pred])
                data[f"{size}:{strat}"] = {"cycle_ns": per, "counts": s.counts}
            dmamap.dma_free_coherent(dev, buf.size, buf.cpu_addr, buf.dma_handle)
        mm.close()
    return Scenario("alsa", "period buffers: mmap, touch all, munmap (arm)",
                    ["buffer", "per cycle", "faults", "kernel"], rows,
                    [f"per cycle: the Python helpers as a driver calls them, {cycles} cycles; kernel: the "
                     "profile's prediction of map + touch + unmap."], data)


def nic_ring(cfg: SweepConfig, profile: Profile | None) -> Scenario:
    """A NIC ring: a scatter-gather buffer of many small chunks mapped as one range."""
    rows, data = [], {}
    with bench_machine("x86", 64 * MiB) as (m, dev):
        mm = m.new_address_space()
        for pages, chunk in ((512, 1), (4096, 2), (4096, 16)):
            sg = dmamap.dma_alloc_coherent_sg(dev, pages * PAGE_SIZE, max_chunk_pages=chunk, seed=1)
            for strat in ("prefault", "fault"):
                ts = []
                for _ in range(5):
                    vma = mm.mmap(pages << PAGE_SHIFT)
                    s0 = mm.stats
                    t0 = time.perf_counter_ns()
                    dmamap.dma_mmap_coherent_sg(dev, vma, sg, strategy=strat)
                    mm.touch(vma.start, pages)
                    ts.append(time.perf_counter_ns() - t0)
                    s1 = mm.stats
                    mm.munmap(vma)
                c = {"ptes_written": s1.ptes_written - s0.ptes_written, "faults": s1.faults - s0.faults,
                     "tlb_misses": s1.tlb_misses - s0.tlb_misses, "around_ptes": s1.around_ptes - s0.around_ptes,
                     "fill_calls": int(STRATEGIES[strat].prefault)}
                rows.append([f"{pages}pg/{len(sg.entries)}ch {strat}", fmt_ns(statistics.median(ts)),
                             str(c["faults"]), _pred(profile, c, pages << PAGE_SHIFT)])
                data[f"{pages}:{chunk}:{strat}"] = {"ns": statistics.median(ts), "counts": c}
            dmamap.dma_free_coherent_sg(dev, sg)
        mm.close()
    return Scenario("nic-ring", "scatter-gather of small chunks as one range (x86)",
                    ["ring", "map+touch", "faults", "kernel"], rows,
                    ["map+touch: median of 5, the helper included; chunks of at most 1, 2 or 16 pages."], data)


SCENARIOS: dict[str, Callable[[SweepConfig, Profile | None], Scenario]] = {
    "gpu-32x4g": gpu_32x4g, "alsa": alsa_periods, "nic-ring": nic_ring,
}


def run_scenario(name: str, cfg: SweepConfig, profile: Profile | None) -> Scenario:
    return SCENARIOS[name](cfg, profile)
