"""Non-coherent and non-contiguous DMA allocations (kernel/dma/mapping.c):
cacheable memory allocated for DMA, correct only with the streaming syncs.

``dma_alloc_pages``/``dma_alloc_noncoherent`` hand out direct-mapped pages
the CPU owns; the driver syncs them for the device (``dma_sync_single_for_device``)
before a transfer and for the CPU after it, exactly as a streaming mapping, and
DMA-API debug checks them the same way.  ``dma_alloc_noncontiguous`` returns an
sg table (one contiguous chunk without an IOMMU, as Linux's ``alloc_single_sgt``),
which ``dma_vmap_noncontiguous`` maps into the kernel's vmalloc area and
``dma_mmap_noncontiguous`` into user space, both cacheable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from dmamap._check import PAGE_SHIFT, PAGE_SIZE, u64
from dmamap.device import Device
from dmamap.dma_debug import StreamMapping, machine_debug
from dmamap.dma_stream import (
    DmaDirection,
    Scatterlist,
    _device,
    _direction,
    _lookup,
    _release,
    _size,
    _sync_mapping,
)
from dmamap.errors import DmaFreeError, DmaSyncError, InvalidArgumentError, MmapError
from dmamap.mm import PgProt, Vma, remap_pfn_chunks, remap_pfn_range
from dmamap.physmem import KernelAddress, Page

__all__ = [
    "NoncoherentBuffer", "SgTableNC", "dma_alloc_pages", "dma_free_pages", "dma_mmap_pages",
    "dma_alloc_noncoherent", "dma_free_noncoherent", "dma_alloc_noncontiguous", "dma_free_noncontiguous",
    "dma_vmap_noncontiguous", "dma_vunmap_noncontiguous", "dma_mmap_noncontiguous",
    "dma_sync_sgtable_for_cpu", "dma_sync_sgtable_for_device", "dma_get_sgtable",
]


class NoncoherentBuffer(NamedTuple):
    """``cpu_addr, dma_handle, size = dma_alloc_noncoherent(...)``."""

    cpu_addr: KernelAddress
    dma_handle: int
    size: int


@dataclass(eq=False)
class SgTableNC:
    """struct sg_table of dma_alloc_noncontiguous: ``sgl`` (CPU pages),
    ``nents`` bus segments (``sgl[i].dma_address``/``dma_length``)."""

    sgl: list[Scatterlist]
    nents: int
    size: int
    direction: int

    @property
    def orig_nents(self) -> int:
        return len(self.sgl)

    @property
    def dma_address(self) -> int:
        return self.sgl[0].dma_address


def _npages(size: int) -> int:
    return (size + PAGE_SIZE - 1) >> PAGE_SHIFT


def _alloc(dev: Device, size: int, d: DmaDirection, kind: str, *, scattered: bool = False,
           ) -> tuple[Page, StreamMapping]:
    """Allocate and register; ``scattered`` takes the pages one by one (only
    worth it behind an IOMMU, which gives them one bus range)."""
    m = dev.machine
    npages = _npages(size)
    if scattered:
        pages = []
        try:
            for _ in range(npages):
                pages.append(m.alloc_pages(1, dma=True))
        except BaseException:
            for p in pages:
                m.free_pages(p, 1)
            raise
        runs = [(p.phys_addr, PAGE_SIZE) for p in pages]
        runs[-1] = (runs[-1][0], size - (npages - 1) * PAGE_SIZE)
    else:
        pages = [m.alloc_pages(npages, dma=True)]
        runs = [(pages[0].phys_addr, size)]

    def give_back() -> None:
        for pa, n in runs:
            m.free_pages(Page(m, pa >> PAGE_SHIFT), _npages(n))

    be = m.backend
    iommu_map = getattr(be, "map_streaming", None)
    try:
        if iommu_map is not None:
            dma = iommu_map(dev, runs, int(d))
        else:
            dma = be.phys_to_dma(dev, runs[0][0]) if be is not None else runs[0][0]
    except BaseException:
        give_back()
        raise
    sm = StreamMapping(dev, kind, dma, size, int(d), runs, checked=True)
    sm.extra["iommu"] = iommu_map is not None
    with dev.dma_debug.lock:
        removed = dev.removed
        if not removed:
            dev.dma_debug.add_stream(sm)
            sm.give_to_cpu(0, size)   # the CPU owns a fresh allocation until it syncs for the device
    if removed:
        _release(dev, sm)
        give_back()
        dev._check()
    return pages[0], sm


def _free(dev: Device, what: str, dma_handle: int, size: int, d: DmaDirection, kind: str,
          pa: int | None) -> StreamMapping | None:
    sm = _lookup(dev, what, dma_handle, size, d, exact=True)
    if sm is None:
        return None
    md = machine_debug(dev.machine)
    if sm.kind != kind:
        md.violation(dev, DmaFreeError, f"{what}: {dma_handle:#x} is a {sm.kind} mapping, not from "
                     f"dma_alloc_{kind}", dma_handle)
        return None
    if pa is not None and pa != sm.runs[0][0]:
        md.violation(dev, DmaFreeError, f"{what}: page or cpu_addr does not match the allocation at "
                     f"{dma_handle:#x}", dma_handle)
        return None
    vma = sm.extra.get("vmap")
    if vma is not None and vma.live:
        md.violation(dev, DmaFreeError, f"{what}: buffer at {dma_handle:#x} is still vmapped "
                     f"(dma_vunmap_noncontiguous first)", dma_handle)
        return None
    _release(dev, sm)
    for pa, n in sm.runs:
        dev.machine.free_pages(Page(dev.machine, pa >> PAGE_SHIFT), _npages(n))
    return sm


# ---- pages ----

def dma_alloc_pages(dev: Device, size: int, direction: int) -> tuple[Page, int]:
    """``(page, dma_handle)``: cacheable pages for DMA in ``direction``; the CPU owns them."""
    dev = _device(dev)
    d = _direction(direction, "dma_alloc_pages")
    page, sm = _alloc(dev, _size(size, "dma_alloc_pages"), d, "pages")
    return page, sm.dma_addr


def dma_free_pages(dev: Device, size: int, page: Page, dma_handle: int, direction: int) -> None:
    """Free dma_alloc_pages memory (size, page, handle and direction as allocated)."""
    dev = _device(dev)
    if not isinstance(page, Page):
        raise TypeError(f"expected a Page, got {type(page).__name__}")
    _free(dev, "dma_free_pages", u64("dma_handle", dma_handle), _size(size, "dma_free_pages"),
          _direction(direction, "dma_free_pages"), "pages", page.phys_addr)


def _mmap_chunks(dev: Device, vma: Vma, pa: int, size: int, what: str) -> None:
    if not isinstance(vma, Vma):
        raise TypeError(f"expected a Vma, got {type(vma).__name__}")
    if vma.machine is not dev.machine:
        raise InvalidArgumentError(f"{what}: VMA belongs to another machine", vma.start)
    count, off = _npages(size), vma.vm_pgoff   # kernel/dma/mapping.c dma_mmap_pages
    if off >= count or vma.nr_pages > count - off:
        raise MmapError(f"{what}: VMA of {vma.nr_pages} pages from vm_pgoff {off} does not fit the buffer's "
                        f"{count} pages (-ENXIO)", vma.start)
    remap_pfn_range(vma, vma.start, (pa >> PAGE_SHIFT) + off, vma.nr_pages << PAGE_SHIFT, vma.page_prot)


def dma_mmap_pages(dev: Device, vma: Vma, size: int, page: Page) -> None:
    """Map dma_alloc_pages memory into user space, cacheable like the kernel's
    direct map of it (the syncs keep both coherent with the device)."""
    dev = _device(dev)
    if not isinstance(page, Page):
        raise TypeError(f"expected a Page, got {type(page).__name__}")
    if page.machine is not dev.machine:
        raise InvalidArgumentError("dma_mmap_pages: the page belongs to another machine")
    _mmap_chunks(dev, vma, page.phys_addr, _size(size, "dma_mmap_pages"), "dma_mmap_pages")


# ---- noncoherent ----

def dma_alloc_noncoherent(dev: Device, size: int, direction: int) -> NoncoherentBuffer:
    """A cacheable kernel buffer for DMA: ``cpu_addr, dma_handle, size``."""
    dev = _device(dev)
    d = _direction(direction, "dma_alloc_noncoherent")
    size = _size(size, "dma_alloc_noncoherent")
    page, sm = _alloc(dev, size, d, "noncoherent")
    return NoncoherentBuffer(dev.machine.page_address(page), sm.dma_addr, size)


def dma_free_noncoherent(dev: Device, size: int, cpu_addr: int, dma_handle: int, direction: int) -> None:
    """Free dma_alloc_noncoherent memory."""
    dev = _device(dev)
    cpu_addr = u64("cpu_addr", cpu_addr)
    m = dev.machine
    pa = m.virt_to_phys(cpu_addr) if m.virt_addr_valid(cpu_addr) else -1
    _free(dev, "dma_free_noncoherent", u64("dma_handle", dma_handle), _size(size, "dma_free_noncoherent"),
          _direction(direction, "dma_free_noncoherent"), "noncoherent", pa)


# ---- noncontiguous ----

def dma_alloc_noncontiguous(dev: Device, size: int, direction: int) -> SgTableNC:
    """An sg table of cacheable pages; without an IOMMU one contiguous chunk
    (one entry), as Linux's fallback does."""
    dev = _device(dev)
    d = _direction(direction, "dma_alloc_noncontiguous")
    size = _size(size, "dma_alloc_noncontiguous")
    iommu = getattr(dev.machine.backend, "map_streaming", None) is not None
    _page, sm = _alloc(dev, size, d, "noncontiguous", scattered=iommu)
    m = dev.machine
    sgl = [Scatterlist(Page(m, pa >> PAGE_SHIFT), 0, n) for pa, n in sm.runs]
    sgl[0].dma_address, sgl[0].dma_length = sm.dma_addr, size   # one bus segment either way
    return SgTableNC(sgl, 1, size, int(d))


def _sgt(dev: Device, sgt: SgTableNC, what: str) -> StreamMapping:
    if not isinstance(sgt, SgTableNC):
        raise TypeError(f"{what}: expected the table dma_alloc_noncontiguous returned, got {type(sgt).__name__}")
    sm = dev.dma_debug.streams.get(sgt.dma_address)
    if sm is None or sm.kind != "noncontiguous":
        raise DmaFreeError(f"{what}: device {dev.name!r} has no live noncontiguous allocation at "
                           f"{sgt.dma_address:#x}", sgt.dma_address)
    return sm


def dma_free_noncontiguous(dev: Device, size: int, sgt: SgTableNC, direction: int) -> None:
    """Free a dma_alloc_noncontiguous table (dma_vunmap_noncontiguous first)."""
    dev = _device(dev)
    if not isinstance(sgt, SgTableNC):
        raise TypeError(f"expected an SgTableNC, got {type(sgt).__name__}")
    _free(dev, "dma_free_noncontiguous", sgt.dma_address, _size(size, "dma_free_noncontiguous"),
          _direction(direction, "dma_free_noncontiguous"), "noncontiguous", None)


def dma_vmap_noncontiguous(dev: Device, size: int, sgt: SgTableNC) -> KernelAddress:
    """Map the table's pages linearly into the kernel's vmalloc area, cacheable."""
    dev = _device(dev)
    sm = _sgt(dev, sgt, "dma_vmap_noncontiguous")
    size = _size(size, "dma_vmap_noncontiguous")
    if size > sm.size:
        raise InvalidArgumentError(f"dma_vmap_noncontiguous: {size:#x} bytes exceed the {sm.size:#x} allocated")
    if sm.extra.get("vmap") is not None and sm.extra["vmap"].live:
        raise InvalidArgumentError("dma_vmap_noncontiguous: already vmapped")
    m = dev.machine
    npages = _npages(size)
    kvma = m.kernel.mmap(npages << PAGE_SHIFT, prot="rw", align=PAGE_SIZE)
    try:
        off = 0
        for pa, n in sm.runs:
            take = min(_npages(n), npages - (off >> PAGE_SHIFT))
            if take <= 0:
                break
            remap_pfn_range(kvma, kvma.start + off, pa >> PAGE_SHIFT, take << PAGE_SHIFT,
                            PgProt.make(m.isa, write=True, user=False))
            off += take << PAGE_SHIFT
    except BaseException:
        m.kernel.munmap(kvma)
        raise
    sm.extra["vmap"] = kvma
    return KernelAddress(kvma.start, m)


def dma_vunmap_noncontiguous(dev: Device, vaddr: int) -> None:
    """Undo dma_vmap_noncontiguous."""
    dev = _device(dev)
    vaddr = u64("vaddr", vaddr)
    with dev.dma_debug.lock:
        sms = [s for s in dev.dma_debug.streams.values()
               if s.extra.get("vmap") is not None and s.extra["vmap"].live and s.extra["vmap"].start == vaddr]
    if not sms:
        raise InvalidArgumentError(f"dma_vunmap_noncontiguous: {vaddr:#x} is not a live dma_vmap_noncontiguous "
                                   f"address of device {dev.name!r}", vaddr)
    dev.machine.kernel.munmap(sms[0].extra.pop("vmap"))


def dma_mmap_noncontiguous(dev: Device, vma: Vma, size: int, sgt: SgTableNC) -> None:
    """Map the table's pages into user space, cacheable."""
    dev = _device(dev)
    sm = _sgt(dev, sgt, "dma_mmap_noncontiguous")
    size = _size(size, "dma_mmap_noncontiguous")
    if size > sm.size:
        raise InvalidArgumentError(f"dma_mmap_noncontiguous: {size:#x} bytes exceed the {sm.size:#x} allocated")
    if not isinstance(vma, Vma):
        raise TypeError(f"expected a Vma, got {type(vma).__name__}")
    if vma.machine is not dev.machine:
        raise InvalidArgumentError("dma_mmap_noncontiguous: VMA belongs to another machine", vma.start)
    if vma.nr_pages > _npages(size):
        raise InvalidArgumentError(f"dma_mmap_noncontiguous: VMA of {vma.nr_pages} pages is larger than the "
                                   f"buffer's {_npages(size)} (-ENXIO)", vma.start)
    chunks = [(pa >> PAGE_SHIFT, _npages(n)) for pa, n in sm.runs]
    remap_pfn_chunks(vma, vma.start, chunks, 0, vma.nr_pages, vma.page_prot)


def _sync_sgt(dev: Device, sgt: SgTableNC, direction: int, for_cpu: bool, what: str) -> None:
    dev = _device(dev)
    d = _direction(direction, what)
    sm = _sgt(dev, sgt, what)
    if d != sm.direction:
        machine_debug(dev.machine).violation(dev, DmaSyncError, f"{what}: direction {d.name} differs from the "
                                             f"allocation's", sm.dma_addr)
    _sync_mapping(dev, sm, 0, sm.size, d, for_cpu)


def dma_sync_sgtable_for_cpu(dev: Device, sgt: SgTableNC, direction: int) -> None:
    """Hand the whole table to the CPU."""
    _sync_sgt(dev, sgt, direction, True, "dma_sync_sgtable_for_cpu")


def dma_sync_sgtable_for_device(dev: Device, sgt: SgTableNC, direction: int) -> None:
    """Hand the whole table to the device."""
    _sync_sgt(dev, sgt, direction, False, "dma_sync_sgtable_for_device")


def dma_get_sgtable(dev: Device, cpu_addr: int, dma_addr: int, size: int) -> list[Scatterlist]:
    """The pages behind a coherent buffer as a one-entry sg table (for export,
    e.g. dma-buf); BadPageError for memory without page descriptors."""
    dev = _device(dev)
    rec = dev.dma_debug.lookup("dma_get_sgtable", cpu_addr, dma_addr, _size(size, "dma_get_sgtable"))
    be = dev.machine.backend
    if be is None:
        raise InvalidArgumentError("dma_get_sgtable: machine has no platform backend")
    page = be.coherent_to_page(dev, rec.alloc, 0)
    return [Scatterlist(page, 0, rec.size, u64("dma_addr", dma_addr), rec.size)]
