"""Public check helpers of the conformance suite.

The rules in :mod:`dmamap.testing.areas` are built from these, and a third
party writing its own rules (a port with an extra capability, say) can use
them too: make a device, map a coherent buffer or scatter list and know where
every page lives (:class:`UserMapping`), run the no-sync coherency round trip
both ways, compare the raw user PTE with the kernel's own mapping, snapshot
machine resources.  A failed check raises
:class:`~dmamap.testing.target.ConformanceFailure` through a
:class:`~dmamap.testing.rule.Check`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import dmamap
from dmamap import PAGE_SHIFT, PAGE_SIZE
from dmamap.device import Device
from dmamap.dma import DmaBuffer, SgTable
from dmamap.machine import Machine
from dmamap.mm import AddressSpace, Vma
from dmamap.testing.pagetable import RawEntry, walk
from dmamap.testing.rule import Check

__all__ = [
    "UserMapping", "make_device", "buffer_pages", "sg_pages", "map_buffer", "map_sg", "pattern", "first_diff",
    "device_read", "device_write", "check_coherent", "raw_entry", "check_attributes", "touch", "page_state",
    "resource_snapshot", "compare_snapshots",
]

#: ``(cpu_addr, dma_addr, pa)`` of one page of a buffer.
PageAddrs = tuple[int, int, int]


@dataclass
class UserMapping:
    """A user mapping of (part of) a coherent buffer or scatter list, and where
    each of its pages lives: ``pages[i] = (cpu_addr, dma_addr, pa)`` of page i."""

    mm: AddressSpace
    vma: Vma
    pages: list[PageAddrs]

    @property
    def start(self) -> int:
        return self.vma.start

    @property
    def size(self) -> int:
        return len(self.pages) << PAGE_SHIFT

    def bus(self, offset: int) -> int:
        """The bus address behind byte ``offset`` of the mapping."""
        return self.pages[offset >> PAGE_SHIFT][1] + (offset & (PAGE_SIZE - 1))


def make_device(m: Machine, **kw: Any) -> Device:
    """The device every rule works with (``kw`` as Machine.add_device: bars, ports)."""
    return m.add_device("conformance", **kw)


def buffer_pages(dev: Device, buf: DmaBuffer) -> list[PageAddrs]:
    """Where every page of a coherent buffer lives."""
    n = (buf.size + PAGE_SIZE - 1) >> PAGE_SHIFT
    pfn = dmamap.dma_coherent_to_pfn(dev, buf.cpu_addr, buf.dma_handle)
    return [(int(buf.cpu_addr) + (i << PAGE_SHIFT), buf.dma_handle + (i << PAGE_SHIFT), (pfn + i) << PAGE_SHIFT)
            for i in range(n)]


def sg_pages(dev: Device, sg: SgTable) -> list[PageAddrs]:
    """Where every page of a scatter list lives, chunk after chunk."""
    out = []
    for e in sg.entries:
        pfn = dmamap.dma_coherent_to_pfn(dev, e.cpu_addr, e.dma_handle)
        out += [(int(e.cpu_addr) + (i << PAGE_SHIFT), e.dma_handle + (i << PAGE_SHIFT), (pfn + i) << PAGE_SHIFT)
                for i in range(e.nr_pages)]
    return out


def map_buffer(dev: Device, mm: AddressSpace, buf: DmaBuffer, strategy: str | None, *, first_page: int = 0,
               nr_pages: int | None = None) -> UserMapping:
    """``dma_mmap_coherent`` of pages [first_page, first_page + nr_pages) into a fresh VMA."""
    pages = buffer_pages(dev, buf)
    n = len(pages) - first_page if nr_pages is None else nr_pages
    vma = mm.mmap(n << PAGE_SHIFT, offset=first_page << PAGE_SHIFT)   # the helper maps from vm_pgoff
    dmamap.dma_mmap_coherent(dev, vma, *buf, strategy=strategy)
    return UserMapping(mm, vma, pages[first_page:first_page + n])


def map_sg(dev: Device, mm: AddressSpace, sg: SgTable, strategy: str | None, *, offset: int, nr_pages: int,
           vma_pages: int | None = None) -> UserMapping:
    """``dma_mmap_coherent_sg`` of ``nr_pages`` from page ``offset`` into a fresh VMA of ``vma_pages``."""
    vma = mm.mmap((vma_pages or nr_pages) << PAGE_SHIFT, offset=offset << PAGE_SHIFT)
    dmamap.dma_mmap_coherent_sg(dev, vma, sg, nr_pages=nr_pages, strategy=strategy)
    return UserMapping(mm, vma, sg_pages(dev, sg)[offset:offset + nr_pages])


def pattern(seed: object, n: int) -> bytes:
    """``n`` reproducible pseudo-random bytes."""
    return random.Random(repr(seed)).randbytes(n)


def first_diff(a: bytes, b: bytes) -> int:
    """Index of the first differing byte (the shorter length if one is a prefix)."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


def device_read(dev: Device, mp: UserMapping) -> bytes:
    """What the device reads behind the whole mapping (DMA, page by page)."""
    return b"".join(dev.dma_read(bus, PAGE_SIZE) for _, bus, _ in mp.pages)


def device_write(dev: Device, mp: UserMapping, data: bytes) -> None:
    """DMA ``data`` into the pages behind the mapping."""
    for i, (_, bus, _) in enumerate(mp.pages):
        dev.dma_write(bus, data[i << PAGE_SHIFT:(i + 1) << PAGE_SHIFT])


def check_coherent(chk: Check, dev: Device, mp: UserMapping, seed: object) -> None:
    """Both DMA directions through the user mapping, with no sync call:
    the device sees what user space wrote, user space sees what the device wrote,
    also after the CPU has read (and could have cached) the old contents."""
    mm, n = mp.mm, mp.size
    for rnd in range(2):
        mm.read(mp.start, n)                       # fault in, and warm any cache lines
        data = pattern((seed, "dev", rnd), n)
        device_write(dev, mp, data)
        got = mm.read(mp.start, n)
        if got != data:
            i = first_diff(got, data)
            bad = sum(x != y for x, y in zip(got, data, strict=True))
            chk.fail(mp.start + i, f"device->CPU: user space read {bad} stale byte(s) of {n} after a device "
                                   f"write with no sync call (first at bus address {mp.bus(i):#x})")
        data = pattern((seed, "cpu", rnd), n)
        mm.write(mp.start, data)
        seen = device_read(dev, mp)
        if seen != data:
            i = first_diff(seen, data)
            bad = sum(x != y for x, y in zip(seen, data, strict=True))
            chk.fail(mp.start + i, f"CPU->device: the device read {bad} stale byte(s) of {n} after a user write "
                                   f"with no sync call (first at bus address {mp.bus(i):#x})")


def raw_entry(m: Machine, mm: AddressSpace, va: int) -> RawEntry | None:
    """The valid leaf entry mapping ``va`` in ``mm``, read from raw page-table memory."""
    return walk(m, mm.root, va)


def check_attributes(chk: Check, m: Machine, mp: UserMapping) -> None:
    """Each user PTE (raw) maps the right page with the attribute of the
    kernel's own mapping (raw) of the same memory."""
    for i, (cpu, _, pa) in enumerate(mp.pages):
        va = mp.start + (i << PAGE_SHIFT)
        u = raw_entry(m, mp.mm, va)
        if u is None:
            chk.fail(va, "no valid user PTE after the page was touched")
        k = walk(m, m.kernel.root, cpu)
        if k is None:
            chk.fail(cpu, f"the kernel alias cpu_addr {cpu:#x} of user page {va:#x} is not mapped")
        if u.pa != pa or k.pa != pa:
            chk.fail(va, f"user PTE maps pa {u.pa:#x} and the kernel alias {cpu:#x} maps pa {k.pa:#x}, but the "
                         f"buffer page is at pa {pa:#x}")
        if not u.user:
            chk.fail(va, "user PTE is not user-accessible")
        if u.cache != k.cache:
            kind = ("a cacheable alias of uncached memory" if u.cacheable and not k.cacheable else
                    "an uncached alias of cacheable memory" if k.cacheable and not u.cacheable else
                    "a mismatched memory type")
            chk.fail(va, f"user PTE {u.entry:#x} (at pa {u.entry_pa:#x}) is {u.cache} but the kernel alias "
                         f"{cpu:#x} of pa {pa:#x} is {k.cache}: {kind}")


def touch(mp: UserMapping) -> None:
    """Fault in every page of the mapping (one C call)."""
    mp.mm.touch(mp.start, len(mp.pages))


def page_state(m: Machine, pa: int) -> tuple[int, int] | None:
    """``(refcount, mapcount)`` of the page descriptor at ``pa``; None if it is not RAM."""
    pfn = pa >> PAGE_SHIFT
    if not m.pfn_valid(pfn):
        return None
    p = m.pfn_to_page(pfn)
    return p.refcount, p.mapcount


def resource_snapshot(m: Machine) -> dict[str, int]:
    """Machine-wide resource counters that must return to baseline once every
    mapping is gone and every buffer freed (keys name them for messages)."""
    s = m.stats
    return {
        "RAM pages in use": s.ram_pages_used,
        "page-table pages": s.table_pages,
        "kernel page-table pages": m.kernel.stats.table_pages,
        # the pools a coherent allocation, a BAR or a port mapping draws from
        "SRAM pool pages free": m.sram_pool.avail >> PAGE_SHIFT,
        "I/O window bytes in use": m.io_window.size - m.io_window.avail,
        "MMIO window bytes free": m.mmio_window.avail,
    }


def compare_snapshots(chk: Check, before: dict[str, int], after: dict[str, int], addr: int, what: str) -> None:
    """Fail naming every counter that differs between two resource snapshots."""
    diff = [f"{k}: {before[k]} -> {after[k]}" for k in before if before[k] != after[k]]
    if diff:
        chk.fail(addr, f"{what} did not return to baseline: {'; '.join(diff)}")
