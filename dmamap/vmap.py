"""Mapping many pages or a device range into a user VMA, as drivers do from
their ``mmap``: ``vm_insert_pages``/``vm_map_pages`` (one C call for the whole
list), ``vm_iomap_memory``/``io_remap_pfn_range`` (mm/memory.c), and
vmalloc'd buffers for user space, ``vmalloc_user``/``remap_vmalloc_range``
(mm/vmalloc.c).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

from dmamap._binding import kernel as ckernel
from dmamap._check import PAGE_SHIFT, PAGE_SIZE, page_align, u64
from dmamap.errors import InvalidArgumentError, MmapError, OutOfMemoryError, VmallocError
from dmamap.mm import Vma, VmFlags, remap_pfn_range
from dmamap.physmem import KernelAddress, Page, PhysicalMemory
from dmamap.vm_ops import VmOperations

__all__ = [
    "vm_insert_pages", "vm_map_pages", "vm_map_pages_zero", "vm_iomap_memory", "io_remap_pfn_range",
    "vmalloc_user", "vfree", "remap_vmalloc_range", "remap_vmalloc_range_partial", "vmalloc_to_page",
    "VMALLOC_VM_OPS",
]


def _vma(vma: Vma) -> Vma:
    if not isinstance(vma, Vma):
        raise TypeError(f"expected a Vma, got {type(vma).__name__}")
    return vma


def _pgoff(vma: Vma) -> int:
    """vma->vm_pgoff: the mmap offset in pages."""
    return vma.vm_pgoff


def _pfns(vma: Vma, pages: Sequence[Page], what: str) -> list[int]:
    if isinstance(pages, (str, bytes)) or not isinstance(pages, Sequence):
        raise TypeError(f"{what} takes a sequence of Page, not {type(pages).__name__}")
    out = []
    for p in pages:
        if not isinstance(p, Page):
            raise TypeError(f"{what} takes Page objects, not {type(p).__name__}")
        if p.machine is not vma.machine:
            raise InvalidArgumentError(f"{what}: page {p!r} belongs to another machine", vma.start)
        out.append(p.pfn)
    return out


def vm_insert_pages(vma: Vma, addr: int, pages: Sequence[Page]) -> None:
    """Insert RAM pages at ``addr``, ``addr + PAGE_SIZE``, ... in one C call
    (each takes a reference; the VMA becomes VM_MIXEDMAP).  All or nothing:
    where the kernel stops at the first bad page and reports how many were
    left, this checks every page and PTE first and inserts none on a refusal."""
    _vma(vma)
    pfns = _pfns(vma, pages, "vm_insert_pages")
    if not pfns:
        raise InvalidArgumentError("vm_insert_pages: no pages", addr)
    ckernel.vm_insert_pages(vma.mm._ptr(), vma.id, u64("addr", addr), pfns)


def _map_pages(vma: Vma, pages: Sequence[Page], num: int, offset: int, what: str) -> None:
    num = u64("num", num)
    pfns = _pfns(vma, pages, what)
    if num > len(pfns):
        raise InvalidArgumentError(f"{what}: num {num} is more than the {len(pfns)} pages given", vma.start)
    if offset >= num:
        raise MmapError(f"{what}: vm_pgoff {offset} is past the {num} pages (-ENXIO)", vma.start)
    if vma.nr_pages > num - offset:
        raise MmapError(f"{what}: VMA of {vma.nr_pages} pages is larger than the {num - offset} "
                                   f"pages from vm_pgoff {offset} (-ENXIO)", vma.start)
    ckernel.vm_insert_pages(vma.mm._ptr(), vma.id, vma.start, pfns[offset:offset + vma.nr_pages])


def vm_map_pages(vma: Vma, pages: Sequence[Page], num: int) -> None:
    """Map ``pages[vm_pgoff:]`` over the whole VMA (the VMA may not be larger than that)."""
    _vma(vma)
    _map_pages(vma, pages, num, _pgoff(vma), "vm_map_pages")


def vm_map_pages_zero(vma: Vma, pages: Sequence[Page], num: int) -> None:
    """vm_map_pages ignoring vm_pgoff: the VMA maps ``pages[0:]``."""
    _vma(vma)
    _map_pages(vma, pages, num, 0, "vm_map_pages_zero")


def io_remap_pfn_range(vma: Vma, addr: int, pfn: int, size: int, prot: int) -> None:
    """remap_pfn_range for I/O memory (the kernel's hook for platforms whose
    I/O space needs a different pfn or protection; none of dmamap's does)."""
    remap_pfn_range(_vma(vma), addr, pfn, size, prot)


def vm_iomap_memory(vma: Vma, start: int, len: int) -> None:   # noqa: A002 - the kernel's parameter name
    """Map the device range ``[start, start + len)`` over the whole VMA, from
    ``vm_pgoff`` pages into it, with the VMA's protection (set it with
    pgprot_noncached / pgprot_writecombine first); the range need not be page-aligned."""
    _vma(vma)
    start, len = u64("start", start), u64("len", len)
    if start + len >= 1 << 64:
        raise InvalidArgumentError(f"vm_iomap_memory: [{start:#x}, +{len:#x}) wraps (-EINVAL)", start)
    len += start & (PAGE_SIZE - 1)
    pfn = start >> PAGE_SHIFT
    pages = (len + PAGE_SIZE - 1) >> PAGE_SHIFT
    off = _pgoff(vma)
    if off > pages:
        raise MmapError(f"vm_iomap_memory: vm_pgoff {off} is past the range's {pages} pages (-EINVAL)",
                                   vma.start)
    pfn += off
    pages -= off
    if vma.nr_pages > pages:
        raise MmapError(f"vm_iomap_memory: VMA of {vma.nr_pages} pages does not fit the {pages} "
                                   f"pages of the range from vm_pgoff {off} (-EINVAL)", vma.start)
    io_remap_pfn_range(vma, vma.start, pfn, vma.end - vma.start, vma.vm_page_prot)


# ---- vmalloc ----

@dataclass(frozen=True)
class _Area:
    """One vmalloc_user area (a vm_struct with VM_USERMAP); no reference to
    the machine, as the registry is keyed weakly by it."""

    start: int
    pfns: tuple[int, ...]
    size: int


_areas: weakref.WeakKeyDictionary[PhysicalMemory, dict[int, _Area]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def vmalloc_user(machine: PhysicalMemory, size: int) -> KernelAddress:
    """Zeroed, virtually contiguous kernel memory made of separately allocated
    RAM pages (each with its page descriptor), fit to be mapped to user space
    with remap_vmalloc_range."""
    if not isinstance(machine, PhysicalMemory):
        raise TypeError(f"expected a Machine, got {type(machine).__name__}")
    size = u64("size", size)
    if size == 0:
        raise InvalidArgumentError("vmalloc_user: size is zero")
    size = page_align("vmalloc_user", size)
    n = size >> PAGE_SHIFT
    if n > machine.stats.ram_pages - machine.stats.ram_pages_used:
        raise OutOfMemoryError(f"vmalloc_user: {n} pages requested, more than the free RAM")
    pages: list[Page] = []
    kernel = machine.kernel   # type: ignore[attr-defined]
    try:
        for _ in range(n):   # page by page, as vmalloc's __vmalloc_area_node
            pages.append(machine.alloc_pages(1))
        kvma = kernel.mmap(size, prot="rw", align=PAGE_SIZE)
        try:
            ckernel.vm_insert_pages(kernel._ptr(), kvma.id, kvma.start, [p.pfn for p in pages])
        except BaseException:
            kernel.munmap(kvma)
            raise
    except BaseException:
        for p in pages:
            machine.free_pages(p)
        raise
    with _lock:
        _areas.setdefault(machine, {})[kvma.start] = _Area(kvma.start, tuple(p.pfn for p in pages), size)
    return KernelAddress(kvma.start, machine)


def _find(addr: int, what: str) -> tuple[PhysicalMemory, _Area, int]:
    """The area holding kernel address ``addr``, and the offset in it."""
    m = getattr(addr, "machine", None)
    if not isinstance(addr, KernelAddress) or m is None:
        if isinstance(addr, bool) or not isinstance(addr, int):
            raise TypeError(f"{what} takes a kernel address, not {type(addr).__name__}")
        raise VmallocError(f"{what}: {int(addr):#x} is not an address vmalloc_user returned", int(addr))
    with _lock:
        for start, area in _areas.get(m, {}).items():
            if start <= addr < start + area.size:
                return m, area, int(addr) - start
    raise VmallocError(f"{what}: {int(addr):#x} is in no vmalloc_user area (find_vm_area is NULL or not "
                       f"VM_USERMAP)", int(addr))


def vfree(addr: KernelAddress) -> None:
    """Free a vmalloc_user area: ``addr`` is what it returned.  Pages still
    mapped to user space stay allocated until their last mapping goes."""
    m, area, off = _find(addr, "vfree")
    if off:
        raise VmallocError(f"vfree: {int(addr):#x} is inside an area, not its start", int(addr))
    with _lock:
        _areas.get(m, {}).pop(int(addr), None)
    if m.closed:
        return
    kernel = m.kernel   # type: ignore[attr-defined]
    kvma = kernel.find_vma(area.start)
    if kvma is not None:
        kernel.munmap(kvma)
    for pfn in area.pfns:
        page = Page(m, pfn)
        if page.refcount > 1:
            m.put_page(page)   # user PTEs still hold it: their last unmap frees it
        else:
            m.free_pages(page)


def vmalloc_to_page(addr: KernelAddress) -> Page:
    """The page descriptor behind a vmalloc address."""
    m, area, off = _find(addr, "vmalloc_to_page")
    return Page(m, area.pfns[off >> PAGE_SHIFT])


#: vm_operations of vmalloc_user memory mapped by remap_vmalloc_range: RAM pages
#: with their descriptors, inserted whole (VM_MIXEDMAP); each PTE holds a page
#: reference, so a vfree while mapped leaves the pages to the last unmap.  The
#: pages are reachable by access_process_vm's normal path (no ``access``).
VMALLOC_VM_OPS = VmOperations("vmalloc")


def remap_vmalloc_range_partial(vma: Vma, uaddr: int, kaddr: KernelAddress, pgoff: int, size: int) -> None:
    """Map ``size`` bytes of a vmalloc_user area, from page ``pgoff`` after
    ``kaddr``, at user address ``uaddr`` page by page (vm_insert_page each)."""
    _vma(vma)
    uaddr, pgoff, size = u64("uaddr", uaddr), u64("pgoff", pgoff), u64("size", size)
    m, area, off = _find(kaddr, "remap_vmalloc_range")
    if m is not vma.machine:
        raise InvalidArgumentError("remap_vmalloc_range: the area belongs to another machine", uaddr)
    if off % PAGE_SIZE or uaddr % PAGE_SIZE:
        raise InvalidArgumentError(f"remap_vmalloc_range: kaddr {int(kaddr):#x} / uaddr {uaddr:#x} not "
                                   f"page-aligned (-EINVAL)", uaddr)
    size = page_align("remap_vmalloc_range", size)
    first = (off >> PAGE_SHIFT) + pgoff
    n = size >> PAGE_SHIFT
    if n == 0 or first + n > len(area.pfns):
        raise VmallocError(f"remap_vmalloc_range: pages [{first}, {first + n}) are not inside the area's "
                           f"{len(area.pfns)} pages (-EINVAL)", uaddr)
    ckernel.vm_insert_pages(vma.mm._ptr(), vma.id, uaddr, list(area.pfns[first:first + n]))
    vma.vm_flags_set(VmFlags.VM_DONTEXPAND | VmFlags.VM_DONTDUMP)
    vma.vm_ops = VMALLOC_VM_OPS


def remap_vmalloc_range(vma: Vma, addr: KernelAddress, pgoff: int) -> None:
    """Map a vmalloc_user area over the whole VMA, from page ``pgoff`` of it
    (drivers pass ``vma.vm_pgoff``)."""
    _vma(vma)
    remap_vmalloc_range_partial(vma, vma.start, addr, pgoff, len(vma))
