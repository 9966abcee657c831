"""The helpers driver writers call: coherent DMA buffers (plain and
scatter-gather), mapping them to user space, MMIO and port I/O mappings.

Names and argument order are the kernel's (include/linux/dma-mapping.h).  The
platform backend decides allocator, attribute and strategy; DMA-API-debug
style checks catch misuse (kernel/dma/debug.c).
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from typing import Any, NamedTuple

from dmamap._binding import RemapFlag, coherent, phys
from dmamap._check import u64
from dmamap.backends import STRATEGIES, Backend
from dmamap.device import Device
from dmamap.dma_debug import DmaRecord, slice_runs
from dmamap.errors import (
    DmaDoubleFreeError,
    DmaFreeError,
    DmamapError,
    InvalidArgumentError,
    MachineClosedError,
    MmapError,
    OutOfMemoryError,
    StrategyError,
    VmaNotMappedError,
)
from dmamap.mm import (
    PAGE_SHIFT,
    PAGE_SIZE,
    PgProt,
    Vma,
    VmFlags,
    pgprot_noncached,
    pgprot_writecombine,
    remap_pfn_chunks,
    remap_pfn_range,
)
from dmamap.pgprot import pgprot_of
from dmamap.physmem import IOWIN_SIZE, KernelAddress, Page
from dmamap.policy import RAM_BACKED, CoherentMemory
from dmamap.remote import generic_access_phys
from dmamap.vm_ops import VmOperations

__all__ = [
    "DmaBuffer", "SgEntry", "SgTable", "dma_alloc_coherent", "dma_free_coherent", "dma_mmap_coherent",
    "dma_alloc_coherent_sg", "dma_free_coherent_sg", "dma_mmap_coherent_sg", "dma_munmap_coherent",
    "dma_coherent_to_page", "dma_coherent_to_pfn", "mmio_map", "pio_map", "STRATEGIES",
    "DMA_ATTR_WEAK_ORDERING", "DMA_ATTR_WRITE_COMBINE", "DMA_ATTR_NO_KERNEL_MAPPING", "DMA_ATTR_SKIP_CPU_SYNC",
    "DMA_ATTR_FORCE_CONTIGUOUS", "DMA_ATTR_ALLOC_SINGLE_PAGES", "DMA_ATTR_NO_WARN", "DMA_ATTR_PRIVILEGED",
    "dma_pgprot", "dma_alloc_attrs", "dma_free_attrs", "dma_alloc_wc", "dma_free_wc", "dma_mmap_attrs",
    "dma_mmap_wc", "COHERENT_VM_OPS", "COHERENT_SG_VM_OPS", "MMIO_VM_OPS", "PIO_VM_OPS",
]


class DmaBuffer(NamedTuple):
    """A coherent buffer: ``cpu_addr, dma_handle, size = buf``."""

    cpu_addr: KernelAddress
    dma_handle: int
    size: int

    def __repr__(self) -> str:
        return f"DmaBuffer(cpu_addr={int(self.cpu_addr):#x}, dma_handle={self.dma_handle:#x}, size={self.size:#x})"


class SgEntry(NamedTuple):
    """One physically contiguous chunk of a scatter list."""

    cpu_addr: KernelAddress
    dma_handle: int
    nr_pages: int

    @property
    def length(self) -> int:
        return self.nr_pages << PAGE_SHIFT

    def __repr__(self) -> str:
        return f"SgEntry(cpu_addr={int(self.cpu_addr):#x}, dma_handle={self.dma_handle:#x}, nr_pages={self.nr_pages})"


@dataclass
class SgTable:
    """A scatter list of coherent chunks that maps as one linear range."""

    entries: list[SgEntry]
    device: Device

    @property
    def nr_pages(self) -> int:
        return sum(e.nr_pages for e in self.entries)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> SgEntry:
        return self.entries[i]

    def __repr__(self) -> str:
        return f"<SgTable {len(self.entries)} entries, {self.nr_pages} pages, device {self.device.name!r}>"

    def locate(self, page: int) -> tuple[SgEntry, int]:
        """(chunk, page within chunk) of linear page ``page``."""
        page = u64("page", page)
        for e in self.entries:
            if page < e.nr_pages:
                return e, page
            page -= e.nr_pages
        raise InvalidArgumentError(f"page {page} is past the end of the scatter list")


def _device(dev: Device) -> Device:
    if not isinstance(dev, Device):
        raise TypeError(f"expected a Device, got {type(dev).__name__}")
    dev._check()
    return dev


def _backend(dev: Device) -> Backend:
    be = dev.machine.backend
    if be is None:
        raise InvalidArgumentError(f"machine {dev.machine.name} has no platform backend; create it with "
                                   f"Machine('x86'|'arm'|'sram'|...)")
    return be


def _size(size: int) -> int:
    size = u64("size", size)
    if size == 0:
        raise InvalidArgumentError("DMA buffer size is zero")
    return size


# ---- coherent buffers ----

def dma_alloc_coherent(dev: Device, size: int) -> DmaBuffer:
    """Allocate a zeroed coherent buffer: ``cpu_addr, dma_handle, size = ...``."""
    dev = _device(dev)
    size = _size(size)
    be = _backend(dev)
    npages = (size + PAGE_SIZE - 1) >> PAGE_SHIFT
    alloc = be.alloc_coherent(dev, npages)
    handle = be.phys_to_dma(dev, alloc.pfn << PAGE_SHIFT)
    with dev.dma_debug.lock:   # Device.remove holds it from its leak check to the detach
        removed = dev.removed
        if not removed:
            dev.dma_debug.add(alloc, size, handle)
    if removed:   # removed by another thread meanwhile: the buffer never existed
        be.free_coherent(dev, alloc)
        dev._check()
    return DmaBuffer(alloc.cpu_addr, handle, size)


def dma_free_coherent(dev: Device, size: int, cpu_addr: int, dma_handle: int) -> None:
    """Free a coherent buffer; size, address and handle must match the allocation,
    and no user mapping of it may remain."""
    dev = _device(dev)
    with dev.dma_debug.lock:
        rec = dev.dma_debug.lookup("dma_free_coherent", cpu_addr, dma_handle, size)
        mapped = rec.mapped()
        if mapped:
            raise DmaFreeError(f"dma_free_coherent: buffer at {int(cpu_addr):#x} is still mapped to user space "
                               f"at {', '.join(hex(v.start) for v in mapped)}; munmap first", int(cpu_addr))
        _backend(dev).free_coherent(dev, rec.alloc)
        dev.dma_debug.remove(cpu_addr)


def dma_coherent_to_page(dev: Device, cpu_addr: int, dma_handle: int, offset: int = 0) -> Page:
    """The page descriptor behind a coherent buffer (from the allocator, never
    virt_to_page of cpu_addr); raises BadPageError where there is none."""
    dev = _device(dev)
    rec = dev.dma_debug.lookup("dma_coherent_to_page", cpu_addr, dma_handle, None)
    return _backend(dev).coherent_to_page(dev, rec.alloc, u64("offset", offset) >> PAGE_SHIFT)


def dma_coherent_to_pfn(dev: Device, cpu_addr: int, dma_handle: int, offset: int = 0) -> int:
    """The PFN behind a coherent buffer (always defined)."""
    dev = _device(dev)
    rec = dev.dma_debug.lookup("dma_coherent_to_pfn", cpu_addr, dma_handle, None)
    return rec.alloc.pfn + (u64("offset", offset) >> PAGE_SHIFT)


def _pick_strategy(be: Backend, strategy: str | None, is_ram: bool) -> str:
    if strategy is None:
        strategy = be.strategy_for(is_ram)
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise StrategyError(f"unknown strategy {strategy!r}; one of {', '.join(STRATEGIES)}")
    if not STRATEGIES[strategy].allowed_for(is_ram):
        raise StrategyError(f"strategy {strategy!r} hands out page descriptors, but this memory has none "
                            f"(not RAM): use 'fault-pfn' or 'prefault'")
    return strategy


def _window(chunks: list[tuple[int, int]], first_page: int, nr_pages: int) -> list[tuple[int, int]]:
    """The (pfn, npages) runs of pages [first_page, first_page + nr_pages) of a chunk list."""
    return slice_runs(chunks, first_page, nr_pages)


def _map_chunks(vma: Vma, chunks: list[tuple[int, int]], first_page: int, nr_pages: int, prot: PgProt,
                strategy: str, is_ram: bool, old_prot: PgProt | None = None) -> None:
    """Map nr_pages of the chunk list, from first_page, at vma.start; on failure
    nothing stays mapped and the VMA's protection (``old_prot``, read if not
    given) is restored."""
    window = _window(chunks, first_page, nr_pages)
    if old_prot is None:
        old_prot = vma.page_prot
    vma.page_prot = prot
    rec = STRATEGIES[strategy]
    try:
        if rec.prefault:
            remap_pfn_chunks(vma, vma.start, window, 0, nr_pages, prot, large=rec.large)
            return
        page_mode = rec.uses_pages(is_ram)
        if not page_mode:
            vma.vm_flags_set(VmFlags.VM_IO | VmFlags.VM_PFNMAP | VmFlags.VM_DONTEXPAND | VmFlags.VM_DONTDUMP)
        # Only the window is handed to the fault handler: a fault past it is SIGBUS.
        vma.set_builtin_fault("page" if page_mode else "pfn", window, first_page=0,
                              fault_around=rec.fault_around, large=rec.large)
    except BaseException:
        if vma.live:
            vma.page_prot = old_prot
        raise


def _check_vma_live(vma: Vma, what: str) -> None:
    if not isinstance(vma, Vma):
        raise TypeError(f"expected a Vma, got {type(vma).__name__}")
    if not vma.live:
        vma.mm._check_open()   # a closed address space or machine says so
        raise VmaNotMappedError(f"{what}: {vma!r} is not mapped", vma.start)


def _check_vma_room(vma: Vma, nr_pages: int, what: str) -> None:
    _check_vma_live(vma, what)
    if vma.nr_pages > nr_pages:
        raise MmapError(f"{what}: VMA of {vma.nr_pages} pages is larger than the {nr_pages} pages "
                        f"available from the offset (-ENXIO)", vma.start)


def dma_mmap_coherent(dev: Device, vma: Vma, cpu_addr: int, dma_handle: int, size: int, *,
                      strategy: str | None = None, attrs: int = 0) -> None:
    """Map a coherent buffer into ``vma`` from its page ``vma.vm_pgoff``
    (dma_mmap_attrs / dma_direct_mmap), with the platform's attribute and
    mapping strategy.  ``size`` may be smaller than the allocation (ALSA passes
    runtime->dma_bytes): only its pages may be mapped, and a VMA past them
    raises MmapError (-ENXIO)."""
    dev = _device(dev)
    be = _backend(dev)
    size = _size(size)
    attrs = 0 if type(attrs) is int and attrs == 0 else _attrs(attrs)
    with dev.dma_debug.lock:
        rec = dev.dma_debug.lookup("dma_mmap_coherent", cpu_addr, dma_handle, None)
        asp, start, end, raw_prot, pgoff = _vma_facts(vma, "dma_mmap_coherent")   # one C call, plain ints
        if size > rec.size:
            raise MmapError(f"dma_mmap_coherent: size {size:#x} is larger than the {rec.size:#x} bytes "
                            f"allocated at cpu_addr {int(cpu_addr):#x}", start)
        count = (size + PAGE_SIZE - 1) >> PAGE_SHIFT
        first = pgoff
        if first >= count:
            raise MmapError(f"dma_mmap_coherent: page offset {first} is past the buffer's {count} pages "
                            f"(-ENXIO)", start)
        nr_pages = (end - start) >> PAGE_SHIFT
        if nr_pages > count - first:
            raise MmapError(f"dma_mmap_coherent: VMA of {nr_pages} pages is larger than the {count - first} "
                            f"pages available from the offset (-ENXIO)", start)
        m = dev.machine
        if vma.mm.machine is not m:
            raise InvalidArgumentError("VMA belongs to another machine", start)
        strat = _pick_strategy(be, strategy, rec.alloc.is_ram)
        old_prot = pgprot_of(raw_prot, m.isa)
        prot = _dma_pgprot(be, dev, old_prot, attrs)
        chunks = [(rec.alloc.pfn, rec.alloc.npages)]
        if not be.mmap_user(dev, vma, chunks, first, nr_pages, prot, strat, rec.alloc.is_ram):
            srec = STRATEGIES[strat]
            if srec.prefault:   # vm_page_prot and remap_pfn_range in one C call, all or nothing
                if rec.cchunks is None:
                    rec.cchunks = coherent.chunk_array(chunks)
                coherent.dma_mmap_prefault(asp, vma.id, rec.cchunks, 1, first, nr_pages, prot,
                                           _REMAP_LARGE if srec.large else 0)
            else:
                _map_chunks(vma, chunks, first, nr_pages, prot, strat, rec.alloc.is_ram, old_prot)
        _track_mapping(dev, [rec], vma)


_REMAP_LARGE = int(RemapFlag.LARGE)


def _vma_facts(vma: Vma, what: str) -> tuple[Any, int, int, int, int]:
    """(address space, start, end, vm_page_prot, vm_pgoff) of a live VMA, read in one
    C call; the errors of _check_vma_live otherwise."""
    if not isinstance(vma, Vma):
        raise TypeError(f"expected a Vma, got {type(vma).__name__}")
    try:
        asp = vma.mm._ptr()
        return (asp, *coherent.vma_facts(asp, vma.id))
    except DmamapError:
        vma.mm._check_open()   # a closed address space or machine says so
        raise VmaNotMappedError(f"{what}: {vma!r} is not mapped", vma.start) from None


def _dma_open(vma: Vma) -> None:
    """A new piece of a coherent mapping (a split): it maps the buffers too."""
    dev, recs = vma._dma_mapping
    dev.dma_debug.track(recs, vma)


def _dma_close(vma: Vma) -> None:
    """A piece of a coherent mapping goes: the buffers stay mapped while another piece lives."""
    dev, recs = vma._dma_mapping
    with dev.dma_debug.lock:
        for r in recs:
            r.vmas.discard(vma)


#: vm_operations of the helpers' memory kinds: coherent buffers count their
#: mappings through open/close (dma_free_coherent is refused while one lives);
#: MMIO mappings let a debugger in through generic_access_phys (access_process_vm);
#: port I/O mappings name their kind.
COHERENT_VM_OPS = VmOperations("dma-coherent", open=_dma_open, close=_dma_close)
COHERENT_SG_VM_OPS = VmOperations("dma-coherent-sg", open=_dma_open, close=_dma_close)
MMIO_VM_OPS = VmOperations("mmio", access=generic_access_phys)
PIO_VM_OPS = VmOperations("pio")


def _track_mapping(dev: Device, recs: list[DmaRecord], vma: Vma, ops: VmOperations = COHERENT_VM_OPS) -> None:
    vma._dma_mapping = (dev, recs)
    dev.dma_debug.track(recs, vma)
    vma.vm_ops = ops


def dma_munmap_coherent(vma: Vma) -> None:
    """Unmap a VMA made by dma_mmap_coherent[_sg]: clear its PTEs and flush the TLB."""
    if not isinstance(vma, Vma):
        raise TypeError(f"expected a Vma, got {type(vma).__name__}")
    be = vma.machine.backend
    if be is None:
        vma.mm.munmap(vma)
    else:
        be.munmap_user(vma)


# ---- scatter-gather ----

def dma_alloc_coherent_sg(dev: Device, size: int, *, max_chunk_pages: int = 16,
                          seed: int | None = None) -> SgTable:
    """Allocate ``size`` bytes (rounded up to whole pages, as dma_alloc_coherent
    does) as physically discontiguous chunks of at most ``max_chunk_pages``
    pages each (sizes vary, seeded for reproducibility)."""
    dev = _device(dev)
    size = u64("size", size)
    if size == 0:
        raise InvalidArgumentError("dma_alloc_coherent_sg: size is zero")
    nr_pages = (size + PAGE_SIZE - 1) >> PAGE_SHIFT
    max_chunk_pages = u64("max_chunk_pages", max_chunk_pages)
    if max_chunk_pages == 0:
        raise InvalidArgumentError("dma_alloc_coherent_sg: max_chunk_pages is zero")
    rng = random.Random(nr_pages if seed is None else seed)
    m = dev.machine
    be = _backend(dev)
    # Refuse what cannot possibly fit before allocating (and freeing) anything.
    kind = getattr(be, "coherent_memory", None)
    free = m.sram_pool.avail >> PAGE_SHIFT if kind == CoherentMemory.SRAM else \
        (m.stats.ram_pages - m.stats.ram_pages_used) if kind in RAM_BACKED else nr_pages
    if nr_pages > free:
        raise OutOfMemoryError(f"dma_alloc_coherent_sg: {nr_pages} pages requested, {free} free")
    entries: list[SgEntry] = []
    guards: list[DmaBuffer] = []
    debug = dev.dma_debug
    with debug.lock:
        freed_before = dict(debug.freed)
        try:
            left = nr_pages
            while left:
                n = min(left, rng.randint(1, max_chunk_pages))
                buf = dma_alloc_coherent(dev, n << PAGE_SHIFT)
                entries.append(SgEntry(buf.cpu_addr, buf.dma_handle, n))
                left -= n
                if left:   # a one-page hole keeps the next chunk discontiguous
                    guards.append(dma_alloc_coherent(dev, PAGE_SIZE))
        except BaseException:
            for e in entries:
                dma_free_coherent(dev, e.length, e.cpu_addr, e.dma_handle)
            debug.forget([int(e.cpu_addr) for e in entries], freed_before)
            raise
        finally:
            for g in guards:
                if not m.closed:
                    dma_free_coherent(dev, g.size, g.cpu_addr, g.dma_handle)
            debug.forget([int(g.cpu_addr) for g in guards], freed_before)
    return SgTable(entries, dev)


def dma_free_coherent_sg(dev: Device, sglist: SgTable) -> None:
    """Free every chunk of a scatter list (each must still be allocated)."""
    dev = _device(dev)
    if not isinstance(sglist, SgTable):
        raise TypeError(f"expected an SgTable, got {type(sglist).__name__}")
    with dev.dma_debug.lock:
        seen: set[int] = set()
        for e in sglist.entries:   # check all before freeing any
            rec = dev.dma_debug.lookup("dma_free_coherent_sg", e.cpu_addr, e.dma_handle, e.length)
            if int(e.cpu_addr) in seen:
                raise DmaDoubleFreeError(f"dma_free_coherent_sg: chunk at cpu_addr {int(e.cpu_addr):#x} is listed "
                                         f"twice in the scatter list; nothing was freed", int(e.cpu_addr))
            seen.add(int(e.cpu_addr))
            if rec.mapped():
                raise DmaFreeError(f"dma_free_coherent_sg: chunk at {int(e.cpu_addr):#x} is still mapped to "
                                   f"user space; munmap first", int(e.cpu_addr))
        for e in sglist.entries:
            dma_free_coherent(dev, e.length, e.cpu_addr, e.dma_handle)


def dma_mmap_coherent_sg(dev: Device, vma: Vma, sglist: SgTable, *, nr_pages: int | None = None,
                         strategy: str | None = None) -> None:
    """Map pages [vma.vm_pgoff, vma.vm_pgoff + nr_pages) of a scatter list as
    one linear range at ``vma.start`` (the offset may fall inside any chunk);
    ``nr_pages`` defaults to what fits."""
    dev = _device(dev)
    be = _backend(dev)
    if not isinstance(sglist, SgTable):
        raise TypeError(f"expected an SgTable, got {type(sglist).__name__}")
    if not isinstance(vma, Vma):
        raise TypeError(f"expected a Vma, got {type(vma).__name__}")
    _check_vma_live(vma, "dma_mmap_coherent_sg")
    offset = vma.vm_pgoff
    total = sglist.nr_pages
    if offset >= total:
        raise MmapError(f"dma_mmap_coherent_sg: page offset {offset} is past the {total} pages (-ENXIO)",
                        vma.start)
    if nr_pages is None:
        nr_pages = min(total - offset, vma.nr_pages)
    nr_pages = u64("nr_pages", nr_pages)
    if nr_pages == 0 or offset + nr_pages > total:
        raise MmapError(f"dma_mmap_coherent_sg: pages [{offset}, {offset + nr_pages}) are not inside the "
                        f"{total} pages of the scatter list (-ENXIO)", vma.start)
    if nr_pages > vma.nr_pages:
        raise MmapError(f"dma_mmap_coherent_sg: {nr_pages} pages do not fit the VMA's {vma.nr_pages}",
                        vma.start)
    with dev.dma_debug.lock:
        recs = [dev.dma_debug.lookup("dma_mmap_coherent_sg", e.cpu_addr, e.dma_handle, e.length)
                for e in sglist.entries]
        _check_vma_room(vma, vma.nr_pages, "dma_mmap_coherent_sg")
        if vma.machine is not dev.machine:
            raise InvalidArgumentError("dma_mmap_coherent_sg: VMA belongs to another machine", vma.start)
        is_ram = all(r.alloc.is_ram for r in recs)
        strat = _pick_strategy(be, strategy, is_ram)
        prot = be.dma_pgprot(dev, vma.page_prot)
        chunks = [(r.alloc.pfn, r.alloc.npages) for r in recs]
        if not be.mmap_user(dev, vma, chunks, offset, nr_pages, prot, strat, is_ram):
            _map_chunks(vma, chunks, offset, nr_pages, prot, strat, is_ram)
        _track_mapping(dev, recs, vma, COHERENT_SG_VM_OPS)


# ---- MMIO and port I/O ----

def mmio_map(vma: Vma, phys_addr: int, size: int, *, cache: str = "uc") -> None:
    """Map device registers at ``phys_addr`` into ``vma`` (io_remap_pfn_range),
    uncached (``"uc"``) or write-combining (``"wc"``)."""
    if not isinstance(vma, Vma):
        raise TypeError(f"expected a Vma, got {type(vma).__name__}")
    m = vma.machine
    phys_addr, size = u64("phys_addr", phys_addr), u64("size", size)
    if phys_addr % PAGE_SIZE:
        raise InvalidArgumentError(f"mmio_map: phys_addr {phys_addr:#x} is not page-aligned", phys_addr)
    if size == 0:
        raise InvalidArgumentError("mmio_map: size is zero", phys_addr)
    if cache not in ("uc", "wc"):
        raise InvalidArgumentError(f"mmio_map: cache must be 'uc' or 'wc', not {cache!r}")
    size = (size + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    region = m.region_at(phys_addr)
    if region is None or region.kind != "mmio" or phys_addr + size > region.end:
        raise InvalidArgumentError(f"mmio_map: [{phys_addr:#x}, {phys_addr + size:#x}) is not inside one MMIO "
                                   f"region ({region.kind if region else 'unmapped'})", phys_addr)
    if size > len(vma):
        raise InvalidArgumentError(f"mmio_map: {size:#x} bytes do not fit the VMA's {len(vma):#x}", vma.start)
    old_prot = vma.page_prot
    prot = pgprot_noncached(old_prot) if cache == "uc" else pgprot_writecombine(old_prot)
    vma.page_prot = prot
    try:
        remap_pfn_range(vma, vma.start, phys_addr >> PAGE_SHIFT, size, prot)
    except BaseException:
        vma.page_prot = old_prot   # a refused mapping leaves the VMA as it was
        raise
    vma.vm_ops = MMIO_VM_OPS


def pio_map(vma: Vma, port: int, count: int) -> None:
    """Make ``vma.start + i`` reach I/O port ``port + i`` for ``i < count``:
    trapped port space on x86, a translated I/O window elsewhere."""
    if not isinstance(vma, Vma):
        raise TypeError(f"expected a Vma, got {type(vma).__name__}")
    m = vma.machine
    port, count = u64("port", port), u64("count", count)
    if count == 0 or port + count > 0x10000:
        raise InvalidArgumentError(f"pio_map: ports {port:#x}+{count} are outside the 64 KiB port space", port)
    if count > len(vma):
        raise InvalidArgumentError(f"pio_map: {count} ports do not fit the VMA's {len(vma)} bytes", vma.start)
    if not m.has_io_window:
        vma.set_pio_trap(port, count)
        vma.vm_ops = PIO_VM_OPS
        return
    size = (count + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    try:
        win = m.io_window.alloc(size)
    except OutOfMemoryError:
        raise InvalidArgumentError(f"pio_map: the {IOWIN_SIZE:#x}-byte I/O window has no {size:#x} bytes "
                                   f"free") from None
    try:
        old_prot = vma.page_prot
        phys.iowin_map(m._ptr(), win, count, port)   # only ports [port, port + count)
        try:
            prot = pgprot_noncached(old_prot)
            vma.page_prot = prot
            remap_pfn_range(vma, vma.start, win >> PAGE_SHIFT, size, prot)
        except BaseException:
            if vma.live:
                vma.page_prot = old_prot
            if not m.closed:
                phys.iowin_unmap(m._ptr(), win)
            raise
    except BaseException:
        m.io_window.free(win, size)
        raise

    def release() -> None:
        with contextlib.suppress(MachineClosedError):   # a closed machine has no translations left
            phys.iowin_unmap(m._ptr(), win)
        m.io_window.free(win, size)

    vma._add_unmap_callback(release)
    vma.vm_ops = PIO_VM_OPS


# ---- attributes, write-combining buffers, pages (kernel/dma/mapping.c) ----

#: include/linux/dma-mapping.h
DMA_ATTR_WEAK_ORDERING = 1 << 1
DMA_ATTR_WRITE_COMBINE = 1 << 2
DMA_ATTR_NO_KERNEL_MAPPING = 1 << 4
DMA_ATTR_SKIP_CPU_SYNC = 1 << 5
DMA_ATTR_FORCE_CONTIGUOUS = 1 << 6
DMA_ATTR_ALLOC_SINGLE_PAGES = 1 << 7
DMA_ATTR_NO_WARN = 1 << 8
DMA_ATTR_PRIVILEGED = 1 << 9
_DMA_ATTRS = (DMA_ATTR_WEAK_ORDERING | DMA_ATTR_WRITE_COMBINE | DMA_ATTR_NO_KERNEL_MAPPING | DMA_ATTR_SKIP_CPU_SYNC
              | DMA_ATTR_FORCE_CONTIGUOUS | DMA_ATTR_ALLOC_SINGLE_PAGES | DMA_ATTR_NO_WARN | DMA_ATTR_PRIVILEGED)


def _attrs(attrs: int) -> int:
    attrs = u64("attrs", attrs)
    if attrs & ~_DMA_ATTRS:
        raise InvalidArgumentError(f"unknown DMA attribute bits {attrs & ~_DMA_ATTRS:#x}")
    return attrs


def dma_pgprot(dev: Device, prot: PgProt, attrs: int) -> PgProt:
    """The user attribute of coherent memory (kernel/dma/mapping.c): unchanged
    for a DMA-coherent device, write-combining with DMA_ATTR_WRITE_COMBINE,
    else the platform's coherent attribute."""
    be = _backend(_device(dev))
    if not isinstance(prot, PgProt):
        raise TypeError(f"expected a PgProt, got {type(prot).__name__}")
    return _dma_pgprot(be, dev, prot, _attrs(attrs))


def _dma_pgprot(be: Backend, dev: Device, prot: PgProt, attrs: int) -> PgProt:
    """dma_pgprot of checked arguments (the helpers' hot path)."""
    if not be.dma_coherent and attrs & DMA_ATTR_WRITE_COMBINE:
        return pgprot_writecombine(prot)
    return be.dma_pgprot(dev, prot)


def dma_alloc_attrs(dev: Device, size: int, attrs: int = 0) -> DmaBuffer:
    """dma_alloc_coherent with attributes.  Every in-tree platform's kernel
    alias of coherent memory is already write-combining where DMA does not
    snoop (AArch64 and RISC-V NC) and WB where it does, so the allocation is
    the coherent one; the attributes choose the user mapping."""
    _attrs(attrs)
    return dma_alloc_coherent(dev, size)


def dma_free_attrs(dev: Device, size: int, cpu_addr: int, dma_handle: int, attrs: int = 0) -> None:
    _attrs(attrs)
    dma_free_coherent(dev, size, cpu_addr, dma_handle)


def dma_alloc_wc(dev: Device, size: int) -> DmaBuffer:
    """A coherent buffer meant to be mapped write-combining (dma_mmap_wc)."""
    return dma_alloc_attrs(dev, size, DMA_ATTR_WRITE_COMBINE)


def dma_free_wc(dev: Device, size: int, cpu_addr: int, dma_handle: int) -> None:
    dma_free_attrs(dev, size, cpu_addr, dma_handle, DMA_ATTR_WRITE_COMBINE)


def dma_mmap_attrs(dev: Device, vma: Vma, cpu_addr: int, dma_handle: int, size: int, attrs: int = 0, *,
                   strategy: str | None = None) -> None:
    """dma_mmap_coherent with attributes (the kernel's signature: the offset
    comes from the VMA, never an argument).  DMA_ATTR_WRITE_COMBINE maps the
    user side write-combining on a non-coherent device (AArch64 NORMAL_NC,
    RISC-V NC); a coherent device (x86) keeps the VMA's cacheable protection,
    as the kernel's dma_pgprot does."""
    dma_mmap_coherent(dev, vma, cpu_addr, dma_handle, size, strategy=strategy, attrs=_attrs(attrs))


def dma_mmap_wc(dev: Device, vma: Vma, cpu_addr: int, dma_handle: int, size: int, *,
                strategy: str | None = None) -> None:
    """Map a dma_alloc_wc buffer to user space write-combining."""
    dma_mmap_attrs(dev, vma, cpu_addr, dma_handle, size, DMA_ATTR_WRITE_COMBINE, strategy=strategy)
