"""The measuring harness shared by the sweep, the targets and the
pytest-benchmark files in bench/: machines sized for a buffer, 2 MiB-aligned
coherent buffers with their host pages committed, touch patterns, and one
timed map-touch-unmap cycle.

All touching runs in C (``AddressSpace.touch`` / ``touch_list``: one call per
pattern); the emulated memory behind the buffer gets its host pages before
timing, so it does not pay for first-touch faults of the host.
"""

from __future__ import annotations

import array
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dmamap
from dmamap._binding import bench as cbench
from dmamap._binding import mm as cmm
from dmamap._binding import u64_array
from dmamap.bench.config import BASE_VA, SRAM_POOL, MiB
from dmamap.mm import PAGE_SHIFT, PAGE_SIZE
from dmamap.policy import CoherentMemory
from dmamap.registry import get_backend
from dmamap.strategy import STRATEGIES

__all__ = ["populate", "aligned_coherent", "Pattern", "make_pattern", "touched_pages", "patterns_of", "bench_machine",
           "fits", "sram_pool", "time_run", "Sample", "model_events", "unmap_events"]


#: log2 of the span one PTE table maps (2 MiB with 4 KiB pages).
REGION_SHIFT = 21


def populate(machine: dmamap.Machine, pfn: int, npages: int) -> None:
    """Give the host pages behind emulated memory their backing, contents unchanged (bench.c)."""
    cbench.populate(machine._ptr(), pfn << PAGE_SHIFT, npages << PAGE_SHIFT)


def aligned_coherent(dev: dmamap.Device, size: int) -> dmamap.DmaBuffer:
    """``dma_alloc_coherent`` whose RAM lands 2 MiB-aligned where the allocator allows, as a
    buddy allocator's naturally aligned blocks would, so that large pages can be used."""
    m = dev.machine
    pads: list[tuple[dmamap.Page, int]] = []
    if size >= 2 * MiB and m.backend is not None and m.backend.coherent_memory != CoherentMemory.SRAM:
        try:
            probe = m.alloc_pages(1)       # the allocator is next-fit: what follows the probe is next
            pads.append((probe, 1))
            pad = (-(probe.pfn + 1)) % 512
            if pad:
                pads.append((m.alloc_pages(pad), pad))
        except dmamap.DmamapError:
            pass
    try:
        return dmamap.dma_alloc_coherent(dev, size)
    finally:
        for page, n in pads:
            m.free_pages(page, n)


def touched_pages(pages: int, density: float) -> int:
    """How many of a mapping's ``pages`` a run at ``density`` touches (at least one)."""
    return max(1, min(pages, round(pages * density)))


@dataclass
class Pattern:
    """Which pages one run touches: strided (``arr`` None) or an explicit VA list."""

    count: int
    stride: int
    arr: Any = None      # array('Q') of VAs at BASE_VA

    def regions(self) -> int:
        """How many 2 MiB regions (one PTE table each) the touches fall in."""
        if self.arr is None:
            return len({i * self.stride >> REGION_SHIFT for i in range(self.count)})
        return len({(va - BASE_VA) >> REGION_SHIFT for va in self.arr})

    def touch(self, mm: dmamap.AddressSpace) -> None:
        """All the touches in one C call (dmamap_touch / dmamap_touch_list, i.e. AddressSpace.touch[_list])."""
        if self.arr is None:
            cmm.touch(mm._ptr(), BASE_VA, self.count, self.stride, False)
        else:
            cmm.touch_list(mm._ptr(), u64_array(self.arr), self.count, False)


def patterns_of(patterns: dict[tuple[int, float, str], Pattern], size: int) -> list[tuple[float, str, Pattern]]:
    """(density, order, pattern) of the sweep points of one mapping size, in the sweep's order."""
    return [(d, o, pat) for (s, d, o), pat in patterns.items() if s == size]


def make_pattern(pages: int, density: float, order: str, rng: random.Random) -> Pattern:
    """Touch ``density`` of ``pages``: evenly strided ascending (seq), or a random sample in random order."""
    n = touched_pages(pages, density)
    if order == "seq":
        return Pattern(n, (pages // n) * PAGE_SIZE)
    picks = rng.sample(range(pages), n)
    return Pattern(n, PAGE_SIZE, array.array("Q", [BASE_VA + (p << PAGE_SHIFT) for p in picks]))


def sram_pool(platform: str) -> bool:
    """Does the platform allocate coherent memory from its (bounded) SRAM pool?"""
    return get_backend(platform).coherent_memory == CoherentMemory.SRAM


@contextmanager
def bench_machine(platform: str, max_size: int) -> Iterator[tuple[dmamap.Machine, dmamap.Device]]:
    """A machine of ``platform`` with room for a buffer of ``max_size`` bytes, and one device."""
    kw: dict[str, Any] = {"ram": max(2 * max_size + 256 * MiB, 512 * MiB)}
    if sram_pool(platform):
        kw = {"ram": 256 * MiB, "sram": SRAM_POOL}
    with dmamap.Machine(platform, **kw) as m:
        yield m, m.add_device("bench")


def fits(platform: str, size: int) -> bool:
    """Does a buffer of ``size`` fit the platform's coherent memory (the SRAM pool bounds it)?"""
    return not sram_pool(platform) or size <= SRAM_POOL


@dataclass
class Sample:
    """One map-touch-unmap cycle: times (ns) and dmamap's event counts over map + touch and unmap.
    The phase times are CPU time of the measuring thread, as the host references' are
    (:class:`~dmamap.bench.references.HostSample`); ``wall_ns`` is map + touch on the monotonic
    clock, ``helper_ns`` the whole helper call on it."""

    map_ns: int
    touch_ns: int
    unmap_ns: int
    helper_ns: int
    counts: dict[str, int]
    unmap_counts: dict[str, int]
    wall_ns: int = 0


#: Counters of AsStats that are running totals (table_pages is a level, not an event).
_EVENT_FIELDS = tuple(f for f in dmamap.AsStats.__dataclass_fields__ if f != "table_pages")


def _delta(a: Any, b: Any, fields: tuple[str, ...]) -> dict[str, int]:
    return {f: int(getattr(b, f)) - int(getattr(a, f)) for f in fields}


def model_events(counts: dict[str, int]) -> dict[str, float]:
    """dmamap's counts in the cost model's terms (dmamap.bench.model.MAP_EVENTS): the entries
    fault-around adds beside a faulting page are priced apart from the others (the kernel maps
    them in one batch from the page cache), and a mapping prefaulted at map time pays one
    ``fill_call`` (``fill_calls``, counted by :func:`time_run`)."""
    around = counts.get("around_ptes", 0)
    return {"map_call": 1, "fill_call": counts.get("fill_calls", 0),
            "pte_write": counts.get("ptes_written", 0) - around, "around_pte": around,
            "fault": counts.get("faults", 0), "table_fault": counts.get("table_faults", 0),
            "tlb_miss": counts.get("tlb_misses", 0),
            "cache_line": counts.get("cache_lines_maintained", 0)}


def unmap_events(counts: dict[str, int]) -> dict[str, float]:
    return {"unmap_call": 1, "pte_clear": counts.get("ptes_cleared", 0)}


def time_run(mm: dmamap.AddressSpace, dev: dmamap.Device, buf: dmamap.DmaBuffer, strategy: str,
             pattern: Pattern) -> Sample:
    """One map-touch-unmap cycle.

    The buffer is mapped with ``dma_mmap_coherent`` (helper_ns: the whole helper,
    Python included); map_ns then times the helper's C work alone, redone with a
    direct call: the remap_pfn_range of a prefault (after zapping what the helper
    filled), the installation of the built-in fault handler of a lazy strategy.
    The host reference is timed in C too, so the two compare like for like, and
    both in CPU time of the measuring thread (``time.thread_time_ns``: user +
    system, preemption by other processes excluded), the wall clock kept beside.
    The event counts cover the timed map and touches, and the unmap.
    """
    rec = STRATEGIES[strategy]
    vma = mm.mmap(buf.size, addr=BASE_VA)
    t0 = time.perf_counter_ns()
    dmamap.dma_mmap_coherent(dev, vma, *buf, strategy=strategy)
    helper_ns = time.perf_counter_ns() - t0
    asp, pfn, pages = mm._ptr(), dmamap.dma_coherent_to_pfn(dev, buf.cpu_addr, buf.dma_handle), buf.size >> PAGE_SHIFT
    if rec.prefault:
        dmamap.zap_vma_ptes(vma, BASE_VA, buf.size)
        run = cbench.prepared("remap_pfn_range", asp, vma.id, BASE_VA, pfn, buf.size,
                              int(vma.vm_page_prot), int(rec.large))
    else:
        run = cbench.prepared("vma_set_fault", asp, vma.id, int(vma._info().fault_kind),
                              cmm.chunks([(pfn, pages)]), 1, 0, rec.fault_around, int(rec.large))
    m = mm.machine
    s0, c0 = mm.stats, m.stats.cache_lines_maintained
    cpu, wall = time.thread_time_ns, time.perf_counter_ns
    w0, t0 = wall(), cpu()
    run()
    t1 = cpu()
    w1 = wall()
    filled = mm.stats.ptes_written > s0.ptes_written
    w2, t2 = wall(), cpu()
    pattern.touch(mm)
    t3 = cpu()
    w3 = wall()
    s1, c1 = mm.stats, m.stats.cache_lines_maintained
    t4 = cpu()
    dmamap.dma_munmap_coherent(vma)
    t5 = cpu()
    s2 = mm.stats
    counts = _delta(s0, s1, _EVENT_FIELDS)
    counts["cache_lines_maintained"] = c1 - c0
    counts["fill_calls"] = int(filled)
    # dmamap keeps its warmed tables; the kernel allocates a PTE table at a region's first fault
    counts["table_faults"] = 0 if rec.prefault or rec.large else pattern.regions()
    return Sample(t1 - t0, t3 - t2, t5 - t4, helper_ns, counts, _delta(s1, s2, _EVENT_FIELDS),
                  (w1 - w0) + (w3 - w2))
