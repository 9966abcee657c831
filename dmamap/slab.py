"""kmalloc/kfree: kernel memory a driver owns, in the direct map (cacheable),
the usual source of streaming DMA buffers.  Backed by whole pages from the
page allocator, so a buffer never shares a cache line with another one."""

from __future__ import annotations

import threading
import weakref

from dmamap._check import PAGE_SHIFT, PAGE_SIZE, u64
from dmamap.errors import InvalidArgumentError
from dmamap.physmem import KernelAddress, PhysicalMemory

__all__ = ["kmalloc", "kfree", "ksize"]

_live: weakref.WeakKeyDictionary[PhysicalMemory, dict[int, tuple[int, int]]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _table(machine: PhysicalMemory) -> dict[int, tuple[int, int]]:
    if not isinstance(machine, PhysicalMemory):
        raise TypeError(f"expected a Machine, got {type(machine).__name__}")
    with _lock:
        return _live.setdefault(machine, {})


def kmalloc(machine: PhysicalMemory, size: int) -> KernelAddress:
    """``size`` bytes of direct-mapped, cacheable kernel memory (not zeroed
    beyond what the page allocator scrubbed)."""
    size = u64("size", size)
    if size == 0:
        raise InvalidArgumentError("kmalloc: size is zero")
    npages = (size + PAGE_SIZE - 1) >> PAGE_SHIFT
    table = _table(machine)
    page = machine.alloc_pages(npages)
    addr = machine.page_address(page)
    with _lock:
        table[int(addr)] = (size, npages)
    return addr


def ksize(machine: PhysicalMemory, addr: int) -> int:
    """The size ``addr`` was kmalloc'ed with."""
    addr = u64("addr", addr)
    ent = _table(machine).get(addr)
    if ent is None:
        raise InvalidArgumentError(f"ksize: {addr:#x} was not returned by kmalloc", addr)
    return ent[0]


def kfree(machine: PhysicalMemory, addr: int) -> None:
    """Give back a kmalloc buffer."""
    t = _table(machine)
    addr = u64("addr", addr)
    with _lock:
        ent = t.pop(addr, None)
    if ent is None:
        raise InvalidArgumentError(f"kfree: {addr:#x} was not returned by kmalloc (or was freed)", addr)
    machine.free_pages(machine.virt_to_page(KernelAddress(addr, machine)), ent[1])
