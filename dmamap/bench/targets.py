"""The issue's performance targets, each measured on its own machine: 1 GiB
prefault and clear against the store loop, lazy fault cost (RAM and SRAM,
single- and multi-threaded process), read32 from Python, bulk reads through a
cacheable mapping, a 16 GiB mapping's host memory, and the fault/prefault
ranking against the host kernel."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import dmamap
from dmamap.bench.config import BASE_VA, SRAM_POOL, GiB, MiB, SweepConfig, fmt_size
from dmamap.bench.crossover import Crossover
from dmamap.bench.harness import Pattern, aligned_coherent, bench_machine, populate, sram_pool, time_run
from dmamap.bench.references import StoreLimit, rss_bytes
from dmamap.bench.results import Target
from dmamap.mm import PAGE_SHIFT, PAGE_SIZE
from dmamap.strategy import FAULT, PREFAULT

__all__ = [
    "TARGET_STEPS", "measure_targets", "target_prefault_1g", "target_fault", "target_read32", "target_bulk_read",
    "target_scale", "target_ranking",
]


def _status(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def target_prefault_1g(repeat: int, limit: StoreLimit) -> list[Target]:
    """1 GiB prefault (one remap_pfn_range of 262,144 PTEs) and 1 GiB clear, per PTE, vs the store loop."""
    n = GiB >> PAGE_SHIFT
    store = limit.ns(n)
    fills: list[int] = []
    zaps: list[int] = []
    unmaps: list[int] = []
    with dmamap.Machine("x86", ram=2 * GiB) as m:
        mm = m.new_address_space()
        prot = dmamap.PgProt.make(m.isa, write=True)
        page = m.alloc_pages(n, align=512)
        for _ in range(max(repeat, 3) + 1):
            vma = mm.mmap(GiB, addr=BASE_VA)
            t0 = time.perf_counter_ns()
            dmamap.remap_pfn_range(vma, vma.start, page.pfn, GiB, prot)
            t1 = time.perf_counter_ns()
            dmamap.zap_vma_ptes(vma, vma.start, GiB)
            t2 = time.perf_counter_ns()
            dmamap.remap_pfn_range(vma, vma.start, page.pfn, GiB, prot)
            t3 = time.perf_counter_ns()
            mm.munmap(vma)
            t4 = time.perf_counter_ns()
            fills += [t1 - t0, t3 - t2]
            zaps.append(t2 - t1)
            unmaps.append(t4 - t3)
        mm.close()
        m.free_pages(page, n)
    cold, warm = fills[0], min(fills[1:])
    ratio = warm / store
    return [
        Target("prefault 1 GiB, one remap_pfn_range call", f"{warm / n:.2f} ns/PTE = {ratio:.1f}× store loop "
               f"({store / n:.2f} ns/PTE); first call {cold / n:.2f} ns/PTE", "≤ 4× store loop per PTE",
               _status(ratio <= 4), ratio, {"ns_per_pte": warm / n, "cold_ns_per_pte": cold / n,
                                            "store_ns_per_pte": store / n}),
        Target("clear 1 GiB (zap_vma_ptes / munmap)", f"zap {min(zaps) / n:.2f}, munmap {min(unmaps) / n:.2f} "
               f"ns/PTE = {min(zaps) / store:.1f}× / {min(unmaps) / store:.1f}× store loop", "reported", "INFO",
               min(zaps) / n, {"zap_ns_per_pte": min(zaps) / n, "munmap_ns_per_pte": min(unmaps) / n}),
    ]


@contextmanager
def _another_thread() -> Iterator[None]:
    """An idle second thread: glibc then makes every mutex operation a locked (atomic) one."""
    done = threading.Event()
    t = threading.Thread(target=done.wait, daemon=True)
    t.start()
    try:
        yield
    finally:
        done.set()
        t.join()


def target_fault(platform: str, size: int, repeat: int, *, threaded: bool = False) -> Target:
    """Lazy fault through the C touch path with a built-in handler: ns per faulting touch."""
    kind = "PFN insert (SRAM)" if sram_pool(platform) else "page descriptors (RAM)"
    best = float("inf")
    with bench_machine(platform, size) as (m, dev), (_another_thread() if threaded else nullcontext()):
        mm = m.new_address_space()
        buf = aligned_coherent(dev, size)
        populate(m, dmamap.dma_coherent_to_pfn(dev, buf.cpu_addr, buf.dma_handle), size >> PAGE_SHIFT)
        pat = Pattern(size >> PAGE_SHIFT, PAGE_SIZE)
        time_run(mm, dev, buf, PREFAULT.name, pat)
        for _ in range(max(repeat, 10)):   # cheap, and a quiet moment is what we want to catch
            _, touch_ns, _, faults, _, _ = time_run(mm, dev, buf, FAULT.name, pat)
            best = min(best, touch_ns / max(faults, 1))
        mm.close()
    if threaded:
        return Target(f"lazy fault, built-in {kind} handler ({platform}), another thread in the process",
                      f"{best:.1f} ns/fault: the machine lock taken per fault now costs atomic instructions",
                      "reported", "INFO", best)
    return Target(f"lazy fault, built-in {kind} handler ({platform})", f"{best:.1f} ns/fault "
                  f"({fmt_size(size)}, sequential)", "≤ 30 ns per fault", _status(best <= 30), best)


def target_read32(repeat: int) -> Target:
    """One read32 from Python through a mapping."""
    n = 20000
    with dmamap.Machine("x86", ram=64 * MiB) as m:
        mm = m.new_address_space()
        vma = mm.mmap(PAGE_SIZE)
        dmamap.remap_pfn_range(vma, vma.start, m.alloc_pages().pfn, PAGE_SIZE, vma.vm_page_prot)
        read32, va = mm.read32, vma.start
        best = float("inf")
        for _ in range(max(repeat, 3)):
            t0 = time.perf_counter_ns()
            for _ in range(n):
                read32(va)
            best = min(best, (time.perf_counter_ns() - t0) / n)
    return Target("read32 from Python through a mapping", f"{best:.0f} ns", "< 1 µs", _status(best < 1000), best)


def target_bulk_read(platform: str, repeat: int) -> Target:
    """Bulk read of 1 MiB through a cacheable mapping: x86 WB, or arm NORMAL through the cache model."""
    size = MiB
    with dmamap.Machine(platform, ram=256 * MiB) as m:
        mm = m.new_address_space()
        dev = m.add_device("bench")
        buf = dmamap.dma_alloc_coherent(dev, size)
        pfn = dmamap.dma_coherent_to_pfn(dev, buf.cpu_addr, buf.dma_handle)
        vma = mm.mmap(size)
        cache = m.isa_info.cached
        dmamap.remap_pfn_range(vma, vma.start, pfn, size, dmamap.PgProt.make(m.isa, write=True, cache=cache))
        mm.read(vma.start, size)
        best = float("inf")
        for _ in range(max(repeat, 3) * 5):
            t0 = time.perf_counter_ns()
            mm.read(vma.start, size)
            best = min(best, time.perf_counter_ns() - t0)
    gbs = size / best
    via = "write-back, no cache model (DMA snoops)" if platform == "x86" else "modelled write-back cache"
    return Target(f"bulk read 1 MiB, cacheable {cache} ({platform}: {via})", f"{gbs:.2f} GB/s", "≥ 2 GB/s",
                  _status(gbs >= 2), gbs)


def target_scale(size: int, ram: int) -> list[Target]:
    """A ``size`` prefault on a machine with ``ram`` of emulated RAM: RSS growth and page-table memory."""
    npages = size >> PAGE_SHIFT
    with dmamap.Machine("x86", ram=ram) as m:
        dev = m.add_device("bench")
        mm = m.new_address_space()
        rss0, tables0 = rss_bytes(), m.stats.table_pages
        t0 = time.perf_counter_ns()
        buf = dmamap.dma_alloc_coherent(dev, size)
        vma = mm.mmap(size)
        t1 = time.perf_counter_ns()
        dmamap.dma_mmap_coherent(dev, vma, *buf, strategy=PREFAULT.name)
        t2 = time.perf_counter_ns()
        rss1 = rss_bytes()
        ptes = mm.stats.ptes_written
        table_bytes = (m.stats.table_pages - tables0) * PAGE_SIZE
        dmamap.dma_munmap_coherent(vma)
        dmamap.dma_free_coherent(dev, buf.size, buf.cpu_addr, buf.dma_handle)
        mm.close()
    grew = rss1 - rss0
    desc_bytes = 16 * npages          # page descriptors the allocation initialised
    allowed = table_bytes + desc_bytes + 64 * MiB
    per_pte = table_bytes / ptes
    return [
        Target(f"scale: {fmt_size(size)} prefault on {fmt_size(ram)} of emulated RAM",
               f"RSS +{grew / MiB:.0f} MiB (page tables {table_bytes / MiB:.0f} MiB, descriptors "
               f"{desc_bytes / MiB:.0f} MiB; data {fmt_size(size)} not committed); prefault "
               f"{(t2 - t1) / 1e6:.0f} ms, alloc {(t1 - t0) / 1e6:.0f} ms",
               "no host memory for untouched data", _status(grew <= allowed), grew,
               {"rss_growth": grew, "table_bytes": table_bytes, "descriptor_bytes": desc_bytes}),
        Target("scale: page-table memory per PTE", f"{per_pte:.3f} bytes ({ptes} PTEs)", "close to 8 bytes",
               _status(8 <= per_pte <= 8.1), per_pte),
    ]


def target_ranking(cross: list[Crossover]) -> Target:
    agree = sum(c.agree for c in cross)
    total = sum(c.total for c in cross)
    sizes_same = sorted({c.size for c in cross if c.agree == c.total} - {c.size for c in cross if c.agree != c.total})
    return Target("prefault vs fault rank as on the host kernel", f"{agree}/{total} (platform, size, density, "
                  f"order) points; sizes agreeing everywhere: {', '.join(fmt_size(s) for s in sizes_same) or 'none'}",
                  "stated per size", "INFO", agree / max(total, 1))


def measure_targets(cfg: SweepConfig, advance: Callable[[str], None] = lambda _: None) -> list[Target]:
    """Every target but the ranking (which needs the sweep's crossovers: :func:`target_ranking`)."""
    limit = StoreLimit(cfg.repeat)
    out: list[Target] = []
    advance("target: 1 GiB prefault and clear")
    out += target_prefault_1g(cfg.repeat, limit)
    for plat in ("x86", "sram"):
        advance(f"target: lazy fault ({plat})")
        out.append(target_fault(plat, min(cfg.fault_size, SRAM_POOL) if sram_pool(plat) else cfg.fault_size,
                                cfg.repeat))
    advance("target: lazy fault (x86, threaded)")
    out.append(target_fault("x86", cfg.fault_size, cfg.repeat, threaded=True))
    advance("target: read32")
    out.append(target_read32(cfg.repeat))
    for plat in ("x86", "arm"):
        advance(f"target: bulk read ({plat})")
        out.append(target_bulk_read(plat, cfg.repeat))
    advance(f"target: {fmt_size(cfg.scale_size)} scale")
    out += target_scale(cfg.scale_size, cfg.scale_ram)
    return out


#: How many times measure_targets calls ``advance``.
TARGET_STEPS = 8
