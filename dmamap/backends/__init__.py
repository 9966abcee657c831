"""Platform backends: what a platform decides for the helpers.

A backend is mostly data (ISA, DMA coherency, what coherent memory is, user
attribute, default strategy, PIO method) plus a few hooks a port may override.
Third-party backends subclass :class:`Backend` and register it under the
``dmamap.arch`` entry point group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from dmamap.errors import BackendError, BadPageError, OutOfMemoryError
from dmamap.isa import ISAS, isa_info
from dmamap.mm import PAGE_SHIFT, PAGE_SIZE, PgProt, Vma, remap_pfn_range
from dmamap.pgprot import cache_names
from dmamap.physmem import KernelAddress, Page
from dmamap.policy import CoherentMemory, PioMethod
from dmamap.strategy import STRATEGIES

if TYPE_CHECKING:
    from dmamap.device import Device
    from dmamap.machine import Machine

__all__ = ["Backend", "CoherentAlloc", "STRATEGIES"]


@dataclass
class CoherentAlloc:
    """What a backend hands back for one coherent allocation."""

    pfn: int
    npages: int
    cpu_addr: KernelAddress
    is_ram: bool
    kernel_vma: Vma | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Backend:
    """Base class and reference implementation of a platform."""

    name: ClassVar[str] = ""
    isa: ClassVar[str] = "x86_64"
    #: DMA snoops CPU caches (no cache model when True).
    dma_coherent: ClassVar[bool] = True
    #: Conflicting cache types raise (x86 PAT) rather than being reported (ARM).
    strict_memtype: ClassVar[bool] = True
    #: A PioMethod: TRAP (x86 port space) or WINDOW (memory-mapped I/O window); plain strings work too.
    pio: ClassVar[str] = PioMethod.TRAP
    #: A CoherentMemory: RAM (direct-mapped), REMAP (RAM remapped uncached), SRAM (no page descriptors).
    coherent_memory: ClassVar[str] = CoherentMemory.RAM
    #: Cache type of the kernel alias of coherent memory.
    kernel_cache: ClassVar[str] = "WB"
    #: Cache type of user mappings of coherent memory (dma_pgprot).
    user_cache: ClassVar[str] = "WB"
    default_strategy: ClassVar[str] = "prefault"
    default_sram: ClassVar[int] = 0
    #: Bus address = physical address - dma_offset.
    dma_offset: ClassVar[int] = 0
    description: ClassVar[str] = ""

    # ---- hooks ----
    def setup(self, machine: Machine) -> None:
        """Called once the machine's memory map and kernel direct map exist."""

    def phys_to_dma(self, dev: Device, pa: int) -> int:
        return pa - self.dma_offset

    def dma_to_phys(self, dev: Device, dma_addr: int) -> int:
        return dma_addr + self.dma_offset

    def dma_pgprot(self, dev: Device, prot: PgProt) -> PgProt:
        """The user attribute for coherent memory (kernel/dma/mapping.c dma_pgprot)."""
        return prot.with_cache(self.user_cache)

    def strategy_for(self, is_ram: bool) -> str:
        return self.default_strategy

    def alloc_coherent(self, dev: Device, npages: int) -> CoherentAlloc:
        m = dev.machine
        kind = self.coherent_memory
        if kind == CoherentMemory.SRAM:
            pfn = m.sram_pool.alloc(npages << PAGE_SHIFT) >> PAGE_SHIFT   # a gen_pool, as Linux's SRAM driver
            try:
                cpu, kvma = _kernel_remap(m, pfn, npages, self.kernel_cache)
            except BaseException:
                m.sram_pool.free(pfn << PAGE_SHIFT, npages << PAGE_SHIFT)
                raise
            return CoherentAlloc(pfn, npages, cpu, False, kvma)
        page = _alloc_aligned(m, npages)
        pa, size = page.phys_addr, npages << PAGE_SHIFT
        try:
            if kind == CoherentMemory.REMAP:
                # dma_prep_coherent: no dirty line of the cacheable direct map may
                # later land on top of what the device wrote.
                m.flush_dcache_range(pa, size)
                cpu, kvma = _kernel_remap(m, page.pfn, npages, self.kernel_cache)
                return CoherentAlloc(page.pfn, npages, cpu, True, kvma)
            m.memtype_reserve(pa, size, self.kernel_cache)
            return CoherentAlloc(page.pfn, npages, m.page_address(page), True)
        except BaseException:
            m.free_pages(page, npages)
            raise

    def free_coherent(self, dev: Device, alloc: CoherentAlloc) -> None:
        m = dev.machine
        if alloc.kernel_vma is not None:
            m.kernel.munmap(alloc.kernel_vma)
        elif alloc.is_ram:
            m.memtype_free(alloc.pfn << PAGE_SHIFT, alloc.npages << PAGE_SHIFT, self.kernel_cache)
        if alloc.is_ram:
            m.free_pages(Page(m, alloc.pfn), alloc.npages)   # scrubs the pages and their cache lines
        else:
            # As the page allocator does for RAM: drop any cache lines (no dirty line of a
            # mis-attributed alias may land on the next owner's data) and clear the memory,
            # so the next dma_alloc_coherent is zeroed.
            pa, size = alloc.pfn << PAGE_SHIFT, alloc.npages << PAGE_SHIFT
            m.invalidate_dcache_range(pa, size)
            m.phys_write(pa, bytes(size))
            m.sram_pool.free(pa, size)

    def coherent_to_page(self, dev: Device, alloc: CoherentAlloc, index: int) -> Page:
        """The page descriptor of page ``index`` of a coherent buffer: from the
        allocator's pfn, never virt_to_page() of the (possibly remapped) cpu_addr."""
        if not alloc.is_ram:
            raise BadPageError(f"{self.name}: coherent memory at pfn {alloc.pfn + index:#x} has no page "
                               f"descriptor; only a PFN can be mapped", (alloc.pfn + index) << PAGE_SHIFT)
        return Page(dev.machine, alloc.pfn + index)

    # ---- optional operations (as dma_map_ops->mmap): the generic path unless overridden ----
    def mmap_user(self, dev: Device, vma: Vma, chunks: list[tuple[int, int]], first_page: int, nr_pages: int,
                  prot: PgProt, strategy: str, is_ram: bool) -> bool:
        """Fill the user page tables of a coherent mapping yourself: pages
        ``[first_page, first_page + nr_pages)`` of the ``(pfn, npages)`` chunk list at
        ``vma.start`` with ``prot``, honouring ``strategy``.  Return True when done;
        the default returns False and the helpers use the generic path (prefault,
        or a fault handler handing out pages for RAM and PFNs otherwise)."""
        return False

    def munmap_user(self, vma: Vma) -> None:
        """Tear down a user mapping made by the helpers (dma_munmap_coherent):
        clear every PTE, free emptied tables, flush the TLB."""
        vma.mm.munmap(vma)

    def describe(self) -> dict[str, str]:
        """The platform's whole policy, one human-readable line per setting (``dmamap info``)."""
        offset = self.dma_offset
        return {
            "isa": self.isa,
            "dma_coherent": "yes (snooping)" if self.dma_coherent else "no",
            "coherent memory": CoherentMemory(self.coherent_memory).description,
            "kernel attribute": self.kernel_cache,
            "user attribute": self.user_cache,
            "default strategy": self.default_strategy,
            "bus offset": "none (bus address = physical address)" if offset == 0
            else f"bus address = physical address {'-' if offset > 0 else '+'} {abs(offset):#x}",
            "memtype policy": "conflicting cache types raise (x86 PAT)" if self.strict_memtype
            else "conflicting cache types are reported (mismatched attributes)",
            "pio": PioMethod(self.pio).description,
            "sram pool": _size(self.default_sram) if self.default_sram else "none",
        }

    def validate(self) -> None:
        """Check every policy attribute; raise :class:`BackendError` naming the
        first bad one and its allowed values.

        Called by the registry when a backend is registered or first loaded, so
        a typo (``pio = "windows"``) fails at once instead of silently skipping
        rules.  The ISAs and cache names are read from the core at call time.
        """
        who = f"backend {self.name or type(self).__name__!r}"

        def bad(attr: str, allowed: str) -> BackendError:
            return BackendError(f"{who}: {attr} = {getattr(self, attr)!r} is not valid; {allowed}")

        for attr in ("name", "description"):
            if not isinstance(getattr(self, attr), str):
                raise bad(attr, "it must be a str")
        if not isinstance(self.isa, str) or self.isa not in ISAS:
            raise bad("isa", f"allowed: {', '.join(map(repr, ISAS))}")
        for attr in ("dma_coherent", "strict_memtype"):
            if not isinstance(getattr(self, attr), bool):
                raise bad(attr, "it must be True or False")
        for attr, enum in (("pio", PioMethod), ("coherent_memory", CoherentMemory)):
            if getattr(self, attr) not in set(enum):
                raise bad(attr, f"allowed: {', '.join(repr(m.value) for m in enum)} "
                                f"(dmamap.policy.{enum.__name__})")
        names = list(dict.fromkeys(cache_names(self.isa)))
        for attr in ("kernel_cache", "user_cache"):
            if getattr(self, attr) not in names:
                raise bad(attr, f"{self.isa} cache types: {', '.join(names)}")
        if self.default_strategy not in STRATEGIES:
            raise bad("default_strategy", f"allowed: {', '.join(STRATEGIES)}")
        has_pages = CoherentMemory(self.coherent_memory).has_page_descriptors
        if not STRATEGIES[self.default_strategy].allowed_for(has_pages):
            raise bad("default_strategy", "SRAM coherent memory has no page descriptors: pick a strategy that "
                                          "inserts PFNs")
        sram_max = isa_info(self.isa).layout.sram_max
        sram = self.default_sram
        if (not isinstance(sram, int) or isinstance(sram, bool) or sram < 0 or sram % PAGE_SIZE
                or (sram_max is not None and sram > sram_max)):
            limit = f"{sram_max:#x}" if sram_max is not None else "the ISA's SRAM window"
            raise bad("default_sram", f"it must be a multiple of {PAGE_SIZE:#x} bytes between 0 and {limit}")
        off = self.dma_offset
        if not isinstance(off, int) or isinstance(off, bool) or not -(1 << 64) < off < 1 << 64:
            raise bad("dma_offset", "it must be an int with |dma_offset| < 2**64")

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.name!r}: {self.isa}, coherent memory "
                f"{getattr(self.coherent_memory, 'value', self.coherent_memory)}, user {self.user_cache}, "
                f"default {self.default_strategy}>")


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n:#x} bytes"


#: Like the buddy allocator behind dma_direct_alloc, coherent RAM is aligned to
#: its size rounded up to a power of two, up to MAX_ORDER (4 MiB): a 2 MiB buffer
#: can then be mapped with a 2 MiB entry.
MAX_ORDER_PAGES = 1024


def _alloc_aligned(m: Machine, npages: int) -> Page:
    align = min(1 << (npages - 1).bit_length(), MAX_ORDER_PAGES)
    try:
        return m.alloc_pages(npages, align=align, dma=True)
    except OutOfMemoryError:
        if align == 1:
            raise
        return m.alloc_pages(npages, dma=True)   # fragmented: any contiguous run will do


def _kernel_remap(m: Machine, pfn: int, npages: int, cache: str) -> tuple[KernelAddress, Vma]:
    """Map pfns into the kernel's vmalloc area with ``cache`` (dma_common_contiguous_remap / ioremap)."""
    kvma = m.kernel.mmap(npages << PAGE_SHIFT, prot="rw", align=PAGE_SIZE)
    try:
        remap_pfn_range(kvma, kvma.start, pfn, npages << PAGE_SHIFT,
                        PgProt.make(m.isa, write=True, user=False, cache=cache))
    except BaseException:
        m.kernel.munmap(kvma)
        raise
    return KernelAddress(kvma.start, m), kvma
