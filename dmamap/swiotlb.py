"""swiotlb (kernel/dma/swiotlb.c): bounce buffers for devices whose DMA mask
cannot reach the memory being mapped.  A pool of 2 KiB slots below 4 GiB; a
streaming map copies the buffer into a slot, syncs and the unmap copy in the
directions swiotlb does, and every bounce is counted."""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

from dmamap._check import PAGE_SHIFT, PAGE_SIZE, u64
from dmamap.errors import InvalidArgumentError, OutOfMemoryError
from dmamap.genalloc import GenPool
from dmamap.physmem import Page, PhysicalMemory

__all__ = ["Swiotlb", "SwiotlbStats", "swiotlb_of", "swiotlb_init", "IO_TLB_SIZE", "IO_TLB_SEGSIZE"]

IO_TLB_SIZE = 1 << 11            # one slot (IO_TLB_SHIFT 11)
IO_TLB_SEGSIZE = 128             # the largest single bounce, in slots
DEFAULT_POOL = 1 << 20


@dataclass
class SwiotlbStats:
    """Bounce counters: maps bounced, bytes copied each way, slots in use and
    at most, maps refused because the pool was full."""

    maps: int = 0
    bytes_to_device: int = 0
    bytes_to_cpu: int = 0
    slots_used: int = 0
    slots_high_water: int = 0
    slots_total: int = 0
    full: int = 0


class Swiotlb:
    """One machine's bounce pool, ``size`` bytes of RAM at or below ``max_pa``."""

    def __init__(self, machine: PhysicalMemory, size: int = DEFAULT_POOL, max_pa: int = (1 << 32) - 1) -> None:
        size = u64("size", size)
        if size < PAGE_SIZE or size % PAGE_SIZE:
            raise InvalidArgumentError(f"swiotlb pool size {size:#x} must be a positive multiple of a page")
        self.machine = machine
        self.npages = size >> PAGE_SHIFT
        self.page: Page = machine.alloc_pages(self.npages, max_pa=max_pa)
        self.base = self.page.phys_addr
        self.size = size
        self.pool = GenPool("swiotlb", self.base, size, granule=IO_TLB_SIZE)
        self.stats = SwiotlbStats(slots_total=size // IO_TLB_SIZE)
        self.lock = threading.Lock()
        self.last_error = ""

    def _copy(self, src: int, dst: int, n: int) -> None:
        """A CPU memcpy between two cacheable buffers, as seen from memory: dirty
        source lines written back, stale destination lines dropped."""
        m = self.machine
        if not m.dma_coherent:
            m.clean_dcache_range(src, n)
            m.invalidate_dcache_range(dst, n)
        m.phys_write(dst, m.phys_read(src, n))

    def map(self, orig: int, size: int) -> int | None:
        """A slot for ``size`` bytes holding a copy of ``orig`` (always copied,
        as swiotlb_tbl_map_single does); None when the pool is full."""
        slots = (size + IO_TLB_SIZE - 1) // IO_TLB_SIZE
        with self.lock:
            if slots > IO_TLB_SEGSIZE:
                self.stats.full += 1
                self.last_error = (f"swiotlb: {size:#x} bytes exceed the largest bounce "
                                   f"({IO_TLB_SEGSIZE * IO_TLB_SIZE:#x})")
                return None
            try:
                tlb = self.pool.alloc(slots * IO_TLB_SIZE)
            except OutOfMemoryError:
                self.stats.full += 1
                self.last_error = (f"swiotlb buffer is full (sz: {size} bytes), total {self.stats.slots_total} "
                                   f"(slots), used {self.stats.slots_used} (slots)")
                return None
            self.stats.maps += 1
            self.stats.slots_used += slots
            self.stats.slots_high_water = max(self.stats.slots_high_water, self.stats.slots_used)
        self.to_device(orig, tlb, size)
        return tlb

    def to_device(self, orig: int, tlb: int, size: int) -> None:
        self._copy(orig, tlb, size)
        with self.lock:
            self.stats.bytes_to_device += size

    def to_cpu(self, orig: int, tlb: int, size: int) -> None:
        self._copy(tlb, orig, size)
        with self.lock:
            self.stats.bytes_to_cpu += size

    def release(self, tlb: int, size: int) -> None:
        slots = (size + IO_TLB_SIZE - 1) // IO_TLB_SIZE
        with self.lock:
            self.pool.free(tlb, slots * IO_TLB_SIZE)
            self.stats.slots_used -= slots


_pools: weakref.WeakKeyDictionary[PhysicalMemory, Swiotlb] = weakref.WeakKeyDictionary()
_pools_lock = threading.Lock()


def swiotlb_init(machine: PhysicalMemory, size: int = DEFAULT_POOL) -> Swiotlb:
    """Give ``machine`` a bounce pool of ``size`` bytes below 4 GiB (swiotlb=<size>);
    refused once a pool exists."""
    if not isinstance(machine, PhysicalMemory):
        raise TypeError(f"expected a Machine, got {type(machine).__name__}")
    with _pools_lock:
        if machine in _pools:
            raise InvalidArgumentError(f"machine {machine.name} already has a swiotlb pool")
        be = getattr(machine, "backend", None)
        limit = (1 << 32) - 1 + (getattr(be, "dma_offset", 0) or 0)
        pool = _pools[machine] = Swiotlb(machine, size, limit)
        return pool


def swiotlb_of(machine: PhysicalMemory) -> Swiotlb:
    """The machine's bounce pool (a default one is made on first use)."""
    with _pools_lock:
        pool = _pools.get(machine)
    if pool is not None:
        return pool
    try:
        return swiotlb_init(machine)
    except InvalidArgumentError:   # another thread made it meanwhile
        return _pools[machine]
