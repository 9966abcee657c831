"""Bindings of the machine and its physical side: backing memory, the memory
map, page descriptors and the page allocator, cache maintenance, memtype
tracking, port I/O and device DMA (csrc/machine.c, physmap.c, page_alloc.c,
cache.c, memtype.c, io.c, dma.c)."""

from __future__ import annotations

from typing import Any

from dmamap._binding import IO_CALLBACK, MAX_REGIONS, NULL, call, ffi, lib

__all__ = [
    "backing_map", "backing_retire", "backing_unmap", "machine_new", "machine_free", "machine_close",
    "machine_set_io", "machine_set_memtype_policy", "machine_set_cache", "machine_stats", "add_region",
    "remove_region", "regions", "region_of", "phys_read", "phys_write", "pfn_valid", "page_info", "alloc_pages",
    "free_pages", "alloc_pages_below", "get_page", "put_page", "iowin_map", "iowin_unmap", "port_access",
    "flush_dcache_range",
    "invalidate_dcache_range", "clean_dcache_range", "dma_rw", "dma_own_add", "dma_own_remove",
    "dma_own_set_record", "dma_own_drain", "machine_set_wcb", "wcb_drain", "wcb_stats",
    "machine_set_vipt", "memtype_reserve",
    "memtype_free",
    "memtype_lookup", "memtype_reports", "MEMTYPE_REPORTS_MAX",
]

#: How many attribute reports the core keeps (the most recent).
MEMTYPE_REPORTS_MAX = 64


# ---- lifetime and configuration ----

def backing_map(size: int) -> Any:
    """``size`` bytes of sparse, zeroed host memory for emulated memory (in huge pages where allowed)."""
    out = ffi.new("void **")
    call(lib.dmamap_backing_map, size, out)
    return ffi.cast("uint8_t *", out[0])


def backing_retire(buf: Any, size: int) -> None:
    lib.dmamap_backing_retire(buf, size)


def backing_unmap(buf: Any, size: int) -> None:
    lib.dmamap_backing_unmap(buf, size)


def machine_new(isa: int, buf: Any, size: int, coherent: bool) -> Any:
    err = ffi.new("struct dmamap_err *")
    m = lib.dmamap_machine_new(isa, buf, size, int(coherent), err)
    if m == NULL:
        from dmamap._binding import raise_for

        raise_for(err.code, err)
    return m


def machine_free(m: Any) -> None:
    lib.dmamap_machine_free(m)


def machine_close(m: Any) -> None:
    """Refuse every later call on ``m`` (frees nothing)."""
    lib.dmamap_machine_close(m)


def machine_set_io(m: Any, handle: Any) -> None:
    """Route MMIO and port accesses to ``handle``'s object (its ``_io`` method)."""
    lib.dmamap_machine_set_io(m, IO_CALLBACK, handle)


def machine_set_memtype_policy(m: Any, policy: int) -> None:
    lib.dmamap_machine_set_memtype_policy(m, policy)


def machine_set_cache(m: Any, size: int, ways: int) -> None:
    call(lib.dmamap_machine_set_cache, m, size, ways)


_STATS = ("ram_pages", "ram_pages_used", "table_pages", "dma_bytes_read", "dma_bytes_written", "cache_hits",
          "cache_misses", "cache_writebacks", "memtype_reports", "mmio_accesses", "port_accesses",
          "cache_lines_maintained", "port_master_aborts")


def machine_stats(m: Any) -> dict[str, int]:
    s = ffi.new("struct dmamap_machine_stats *")
    lib.dmamap_machine_stats(m, s)
    return {f: int(getattr(s, f)) for f in _STATS}


# ---- the memory map ----

def add_region(m: Any, kind: int, base: int, size: int, backing_offset: int = 0, owner: int = -1,
               bar: int = 0) -> None:
    r = ffi.new("struct dmamap_region *")
    r.type, r.base, r.size, r.backing_offset, r.owner, r.bar = kind, base, size, backing_offset, owner, bar
    call(lib.dmamap_add_region, m, r)


def remove_region(m: Any, base: int) -> None:
    call(lib.dmamap_remove_region, m, base)


def regions(m: Any) -> list[tuple[int, int, int, int, int]]:
    """The memory map at one instant: ``(type, base, size, owner, bar)`` per region."""
    regs = ffi.new("struct dmamap_region[]", MAX_REGIONS)
    n = lib.dmamap_regions(m, regs, MAX_REGIONS)
    return [(int(r.type), int(r.base), int(r.size), int(r.owner), int(r.bar)) for r in (regs[i] for i in range(n))]


def region_of(m: Any, pa: int) -> int:
    """The ``Region`` type at ``pa`` (0: none)."""
    return int(lib.dmamap_region_of(m, pa))


def phys_read(m: Any, pa: int, buf: Any, n: int) -> None:
    call(lib.dmamap_phys_read, m, pa, buf, n)


def phys_write(m: Any, pa: int, buf: Any, n: int) -> None:
    call(lib.dmamap_phys_write, m, pa, buf, n)


# ---- page descriptors and the allocator ----

def pfn_valid(m: Any, pfn: int) -> bool:
    return bool(lib.dmamap_pfn_valid(m, pfn))


def page_info(m: Any, pfn: int) -> tuple[int, int, int]:
    """``(flags, refcount, mapcount)`` of a page descriptor."""
    info = ffi.new("struct dmamap_page_info *")
    call(lib.dmamap_page_info, m, pfn, info)
    return int(info.flags), int(info.refcount), int(info.mapcount)


def alloc_pages(m: Any, npages: int, align: int, flags: int) -> int:
    out = ffi.new("uint64_t *")
    call(lib.dmamap_alloc_pages, m, npages, align, flags, out)
    return int(out[0])


def alloc_pages_below(m: Any, npages: int, align: int, flags: int, max_pa: int) -> int:
    """As alloc_pages, every page at or below ``max_pa``."""
    out = ffi.new("uint64_t *")
    call(lib.dmamap_alloc_pages_below, m, npages, align, flags, max_pa, out)
    return int(out[0])


def free_pages(m: Any, pfn: int, npages: int) -> None:
    call(lib.dmamap_free_pages, m, pfn, npages)


def get_page(m: Any, pfn: int) -> None:
    call(lib.dmamap_get_page, m, pfn)


def put_page(m: Any, pfn: int) -> None:
    call(lib.dmamap_put_page, m, pfn)


# ---- I/O ----

def iowin_map(m: Any, pa: int, size: int, port: int) -> None:
    """Translate I/O-window bytes [pa, pa + size) to ports [port, port + size)."""
    call(lib.dmamap_iowin_map, m, pa, size, port)


def iowin_unmap(m: Any, pa: int) -> None:
    call(lib.dmamap_iowin_unmap, m, pa)


def port_access(m: Any, port: int, size: int, is_write: bool, value: int = 0) -> int:
    v = ffi.new("uint64_t *", value)
    call(lib.dmamap_port_access, m, port, size, int(is_write), v)
    return int(v[0])


def dma_rw(m: Any, pa: int, buf: Any, n: int, is_write: bool) -> None:
    """Device DMA: memory, never the CPU cache."""
    call(lib.dmamap_dma_rw, m, pa, buf, n, int(is_write))


# ---- streaming-DMA ownership (dma_own.c) ----

def dma_own_add(m: Any, pa: int, size: int, tag: int) -> None:
    """The device owns [pa, pa+size): cacheable CPU accesses to it are refused (or logged)."""
    call(lib.dmamap_dma_own_add, m, pa, size, tag)


def dma_own_remove(m: Any, pa: int, size: int) -> None:
    call(lib.dmamap_dma_own_remove, m, pa, size)


def dma_own_set_record(m: Any, record: bool) -> None:
    lib.dmamap_dma_own_set_record(m, int(record))


def dma_own_drain(m: Any) -> tuple[list[tuple[int, int, int, int, bool]], int]:
    """Logged CPU accesses to device-owned ranges: ``(pa, start, size, tag, is_write)``
    each, and how many did not fit the log."""
    out: list[tuple[int, int, int, int, bool]] = []
    buf = ffi.new("struct dmamap_dma_own_event[]", 256)
    dropped = ffi.new("uint64_t *")
    total_dropped = 0
    while True:
        n = lib.dmamap_dma_own_drain(m, buf, 256, dropped)
        total_dropped += int(dropped[0])
        out += [(int(e.pa), int(e.start), int(e.size), int(e.tag), bool(e.is_write)) for e in buf[0:n]]
        if n < 256:
            return out, total_dropped


def machine_set_vipt(m: Any, vipt: bool) -> None:
    """Index the data cache by virtual address (an aliasing VIPT cache)."""
    call(lib.dmamap_machine_set_vipt, m, int(vipt))


# ---- the write-combining buffer (wcb.c) ----

def machine_set_wcb(m: Any, entries: int) -> None:
    call(lib.dmamap_machine_set_wcb, m, entries)


def wcb_drain(m: Any) -> None:
    call(lib.dmamap_wcb_drain, m)


def wcb_stats(m: Any) -> tuple[int, int, int]:
    """(drains, merges, evictions)."""
    out = ffi.new("uint64_t[3]")
    lib.dmamap_wcb_stats(m, out)
    return int(out[0]), int(out[1]), int(out[2])


# ---- the cache model ----

def flush_dcache_range(m: Any, pa: int, size: int) -> None:
    call(lib.dmamap_flush_dcache_range, m, pa, size)


def invalidate_dcache_range(m: Any, pa: int, size: int) -> None:
    call(lib.dmamap_invalidate_dcache_range, m, pa, size)


def clean_dcache_range(m: Any, pa: int, size: int) -> None:
    call(lib.dmamap_clean_dcache_range, m, pa, size)


# ---- memtype tracking ----

def memtype_reserve(m: Any, pa: int, size: int, cache: int) -> None:
    call(lib.dmamap_memtype_reserve, m, pa, size, cache)


def memtype_free(m: Any, pa: int, size: int, cache: int) -> None:
    call(lib.dmamap_memtype_free, m, pa, size, cache)


def memtype_lookup(m: Any, pa: int) -> int:
    """The cache id reserved at ``pa`` (negative: none)."""
    return int(lib.dmamap_memtype_lookup(m, pa))


def memtype_reports(m: Any) -> list[tuple[int, int, int, int]]:
    """The recorded attribute mismatches: ``(start, end, existing, requested)``, oldest first."""
    arr = ffi.new("struct dmamap_memtype_report[]", MEMTYPE_REPORTS_MAX)
    n = lib.dmamap_memtype_reports(m, arr, MEMTYPE_REPORTS_MAX)
    return [(int(r.start), int(r.end), int(r.existing), int(r.requested)) for r in (arr[i] for i in range(n))]
