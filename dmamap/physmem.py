"""The physical side of a machine: backing memory, the memory map, page
descriptors and the page allocator, the CPU cache model's maintenance,
memtype tracking, ports, and the subsystems that hand out physical ranges
(device bus, port space, MMIO window, SRAM pool, I/O window).

Backing memory is one sparse anonymous mapping, in host huge pages where the
host allows: nothing is committed on the host until it is touched.
:class:`dmamap.machine.Machine` builds on this with address spaces, the
kernel's direct map and a platform backend.
"""

from __future__ import annotations

import collections
import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dmamap._binding import IoKind, MemtypePolicy, PageFlag, in_buffer, new_handle, out_buffer, phys
from dmamap._binding import Region as RegionType
from dmamap._binding import mm as cmm
from dmamap._check import PAGE_SHIFT, PAGE_SIZE, u64
from dmamap.bus import DeviceBus
from dmamap.errors import (
    BadPageError,
    InvalidArgumentError,
    MachineClosedError,
    PhysicalAddressError,
    UnclaimedIOError,
    VirtToPageError,
)
from dmamap.genalloc import GenPool
from dmamap.ioport import PORT_SPACE_SIZE, PortSpace
from dmamap.isa import Isa, Layout, isa_info
from dmamap.pgprot import cache_id, cache_names

if TYPE_CHECKING:
    from dmamap.mm import AddressSpace

__all__ = ["PhysicalMemory", "Page", "KernelAddress", "Region", "MachineStats", "IOWIN_SIZE"]

#: The memory-mapped I/O-port window: one byte per port.
IOWIN_SIZE = PORT_SPACE_SIZE


@dataclass(frozen=True)
class Region:
    """One range of the physical memory map."""

    kind: str
    base: int
    size: int
    owner: str | None = None

    @property
    def end(self) -> int:
        return self.base + self.size

    def __repr__(self) -> str:
        owner = "" if self.owner is None else f", owner={self.owner!r}"
        return f"Region({self.kind!r}, base={self.base:#x}, size={self.size:#x}{owner})"


@dataclass(frozen=True)
class MachineStats:
    """Machine-wide counters."""

    ram_pages: int
    ram_pages_used: int
    table_pages: int
    dma_bytes_read: int
    dma_bytes_written: int
    cache_hits: int
    cache_misses: int
    cache_writebacks: int
    memtype_reports: int
    mmio_accesses: int
    port_accesses: int
    cache_lines_maintained: int = 0
    port_master_aborts: int = 0   #: port accesses no device claimed (reads gave all-ones)


class KernelAddress(int):
    """A kernel virtual address that remembers its machine (for virt_to_page)."""

    machine: PhysicalMemory

    def __new__(cls, value: int, machine: PhysicalMemory) -> KernelAddress:
        if not isinstance(machine, PhysicalMemory):
            raise TypeError(f"expected a Machine, got {type(machine).__name__}")
        obj = super().__new__(cls, u64("kernel address", value))
        obj.machine = machine
        return obj

    def __repr__(self) -> str:
        return f"KernelAddress({int(self):#x})"


class Page:
    """A page descriptor (struct page): exists for RAM only."""

    __slots__ = ("machine", "pfn")

    def __init__(self, machine: PhysicalMemory, pfn: int) -> None:
        if not isinstance(machine, PhysicalMemory):
            raise TypeError(f"expected a Machine, got {type(machine).__name__}")
        self.machine = machine
        self.pfn = u64("pfn", pfn)

    def _info(self) -> tuple[int, int, int]:
        return phys.page_info(self.machine._ptr(), self.pfn)

    @property
    def refcount(self) -> int:
        return self._info()[1]

    @property
    def mapcount(self) -> int:
        return self._info()[2]

    @property
    def flags(self) -> dict[str, bool]:
        f = PageFlag(self._info()[0])
        return {flag.name.lower(): flag in f for flag in PageFlag if flag.name}

    @property
    def phys_addr(self) -> int:
        return self.pfn << PAGE_SHIFT

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Page) and other.machine is self.machine and other.pfn == self.pfn

    def __hash__(self) -> int:
        return hash((id(self.machine), self.pfn))

    def __repr__(self) -> str:
        return f"<Page pfn={self.pfn:#x}>"


class _State:
    """C-side resources.  close() first refuses every later call (close_core),
    then retires the backing (host memory back at once); release(), at garbage
    collection, frees the C state, when no call on another thread can still be
    using it.

    A C address space whose AddressSpace became garbage is queued by the
    finalizer (free_space: no lock, as a finalizer may run inside any
    allocation, with any lock held) and freed at the machine's next safe point
    (reap) or with the machine's C state, whichever comes first."""

    def __init__(self) -> None:
        self.m: Any = None
        self.buf: Any = None
        self.size = 0
        self.closed = False
        self.retired = False
        self.lock = threading.Lock()
        self.as_ptrs: set[Any] = set()   # C address spaces; never the Python objects
        self.dead: collections.deque[Any] = collections.deque()   # of AddressSpaces gone to garbage

    def close_core(self) -> bool:
        """Refuse every later call; False if that was done already."""
        with self.lock:
            if self.closed:
                return False
            self.closed = True
        if self.m is not None:
            phys.machine_close(self.m)
        return True

    def retire(self) -> None:
        self.close_core()
        with self.lock:
            if self.retired:
                return
            self.retired = True
        if self.buf is not None:
            phys.backing_retire(self.buf, self.size)

    def add_space(self, p: Any) -> None:
        with self.lock:
            self.as_ptrs.add(p)

    def free_space(self, p: Any) -> None:
        """An AddressSpace's finalizer: queue its C state for reap()."""
        self.dead.append(p)

    def reap(self) -> None:
        """Free the C state of address spaces gone to garbage (call with no lock held)."""
        while True:
            try:
                p = self.dead.popleft()
            except IndexError:
                return
            with self.lock:
                if p not in self.as_ptrs:
                    continue
                self.as_ptrs.discard(p)
            cmm.as_free(p)

    def release(self) -> None:
        self.retire()
        with self.lock:
            ptrs, self.as_ptrs = list(self.as_ptrs), set()
        self.dead.clear()
        for p in ptrs:
            cmm.as_free(p)
        if self.m is not None:
            phys.machine_free(self.m)
            self.m = None
        if self.buf is not None:
            phys.backing_unmap(self.buf, self.size)
            self.buf = None


class PhysicalMemory:
    """The physical machine of one ISA: memory, its map and the subsystems
    that hand out physical ranges.  Create a :class:`dmamap.Machine`."""

    def __init__(self, name: str, isa: str, *, ram: int, sram: int, dma_coherent: bool, cache_size: int,
                 cache_ways: int, strict_memtype: bool, io_window: bool) -> None:
        self.name = name
        self.isa = isa
        self.isa_info: Isa = isa_info(isa)
        self.layout: Layout = self.isa_info.layout
        ram = u64("ram", ram)
        if ram < 16 * PAGE_SIZE or ram % PAGE_SIZE or ram > self.layout.ram_max:
            raise InvalidArgumentError(f"ram must be a multiple of 4 KiB between 64 KiB and the {isa} limit of "
                                       f"{self.layout.ram_max >> 30} GiB (where its memory map puts SRAM or "
                                       f"MMIO), not {ram:#x}")
        sram = u64("sram", sram)
        if sram % PAGE_SIZE or sram > self.layout.sram_max:
            raise InvalidArgumentError(f"sram must be a multiple of 4 KiB up to {self.layout.sram_max:#x}")
        self.dma_coherent = bool(dma_coherent)
        self.ram_base = self.layout.ram_base
        self.ram_size = ram
        self.sram_base = self.layout.sram_base
        self.sram_size = sram
        self.page_offset = self.layout.page_offset
        self.has_io_window = io_window
        #: The machine's subsystems, each the only owner of its state, each with its own lock.
        self.bus = DeviceBus()
        self.port_space = PortSpace()
        self.mmio_window = GenPool("MMIO window", self.layout.mmio_base, self.layout.mmio_size,
                                   granule=PAGE_SIZE)
        self.sram_pool = GenPool("SRAM pool", self.layout.sram_base, sram, granule=PAGE_SIZE,
                                 hint="give the machine more with Machine(..., sram=BYTES)")
        self.io_window = GenPool("I/O window", self.layout.iowin_base, IOWIN_SIZE if io_window else 0,
                                 granule=PAGE_SIZE)
        self._spaces_lock = threading.Lock()
        self._address_spaces: set[AddressSpace] = set()

        st = _State()
        self._state = st
        self._finalizer = weakref.finalize(self, st.release)
        size = ram + sram
        st.buf = phys.backing_map(size)
        st.size = size
        st.m = phys.machine_new(self.isa_info.id, st.buf, size, self.dma_coherent)
        self._handle = new_handle(self)
        phys.machine_set_io(st.m, self._handle)
        phys.machine_set_memtype_policy(st.m, MemtypePolicy.STRICT if strict_memtype else MemtypePolicy.REPORT)
        if not self.dma_coherent:
            phys.machine_set_cache(st.m, u64("cache_size", cache_size), cache_ways)
        self.cache_size = 0 if self.dma_coherent else cache_size
        self.cache_ways = 0 if self.dma_coherent else cache_ways
        self._add_region(RegionType.RAM, self.ram_base, ram, 0)
        if sram:
            self._add_region(RegionType.SRAM, self.sram_base, sram, ram)
        if io_window:
            self._add_region(RegionType.IOWIN, self.layout.iowin_base, IOWIN_SIZE, 0)

    # ---- lifetime ----
    def _ptr(self) -> Any:
        st = self._state
        if st.closed or st.m is None:
            raise MachineClosedError(f"machine {self.name} is closed")
        return st.m

    @property
    def closed(self) -> bool:
        return self._state.closed

    def close(self) -> None:
        """Give the machine's memory back to the host; every later use raises
        MachineClosedError.  Safe while another thread is inside a call on this
        machine: the core refuses new calls first, a call already inside
        finishes on zeroed memory, and the small C state is freed at garbage
        collection."""
        if not self._state.close_core():
            return
        for dev in self.bus.devices().values():
            dev._closing()
        with self._spaces_lock:
            spaces, self._address_spaces = list(self._address_spaces), set()
        for space in spaces:
            space._detach()
        self._state.retire()

    def _add_space(self, space: AddressSpace, ptr: Any) -> None:
        """Track a new address space; its C state ``ptr`` is freed when ``space``
        is garbage, or with the machine's C state, whichever comes first."""
        self._state.reap()
        with self._spaces_lock:
            if self._state.closed:
                raise MachineClosedError(f"machine {self.name} is closed")
            self._address_spaces.add(space)
            self._state.add_space(ptr)
        weakref.finalize(space, self._state.free_space, ptr)

    def _forget_space(self, space: AddressSpace) -> None:
        with self._spaces_lock:
            self._address_spaces.discard(space)
        self._state.reap()

    def __enter__(self) -> PhysicalMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the memory map ----
    def _add_region(self, kind: int, base: int, size: int, backing_offset: int, owner: int = -1,
                    bar: int = 0) -> None:
        phys.add_region(self._ptr(), kind, base, size, backing_offset, owner, bar)

    def _remove_region(self, base: int) -> None:
        """Take a device's region out of the map (nothing to do once the machine is closed)."""
        if not self.closed:
            phys.remove_region(self._state.m, base)

    @property
    def memory_map(self) -> list[Region]:
        out = []
        for kind, base, size, owner, bar in phys.regions(self._ptr()):   # one consistent snapshot
            name = None
            if kind == RegionType.MMIO:
                name = (self.bus.name_of(owner) or f"device {owner}") + f" BAR{bar}"
            out.append(Region(RegionType(kind).label, base, size, name))
        return sorted(out, key=lambda x: x.base)

    def region_at(self, pa: int) -> Region | None:
        """The memory-map region containing ``pa``."""
        for r in self.memory_map:
            if r.base <= pa < r.end:
                return r
        return None

    def region_of(self, pa: int) -> str | None:
        kind = phys.region_of(self._ptr(), u64("pa", pa))
        return RegionType(kind).label if kind else None

    def phys_read(self, pa: int, n: int) -> bytes:
        """Read physical memory as a device would (not through the CPU cache)."""
        n, pa = u64("n", n), u64("pa", pa)
        if not n:
            return b""
        self._check_phys_span(pa, n)
        buf = out_buffer(n)
        phys.phys_read(self._ptr(), pa, in_buffer("buffer", buf)[0], n)
        return bytes(buf)

    def _check_phys_span(self, pa: int, n: int) -> None:
        """Memory (RAM and SRAM) is all a physical access may reach: refuse longer
        ones before allocating a host buffer for them."""
        self._ptr()
        if n > self.ram_size + self.sram_size:
            raise PhysicalAddressError(f"physical access {pa:#x}+{n:#x} is longer than all memory of the "
                                       f"machine", pa)

    def phys_write(self, pa: int, data: bytes | bytearray | memoryview) -> None:
        """Write physical memory directly (not through the CPU cache)."""
        cdata, n = in_buffer("data", data)
        pa = u64("pa", pa)
        if n:
            phys.phys_write(self._ptr(), pa, cdata, n)

    # ---- page descriptors and the allocator ----
    def pfn_valid(self, pfn: int) -> bool:
        """True only for RAM: the page frames that have page descriptors."""
        return phys.pfn_valid(self._ptr(), u64("pfn", pfn))

    def pfn_to_page(self, pfn: int) -> Page:
        if not self.pfn_valid(pfn):
            raise BadPageError(f"pfn_to_page({pfn:#x}): not RAM, so there is no page descriptor "
                               f"(pfn_valid() is false)", pfn << PAGE_SHIFT)
        return Page(self, pfn)

    def _own_page(self, page: Page) -> Page:
        if not isinstance(page, Page):
            raise TypeError(f"expected a Page, got {type(page).__name__}")
        if page.machine is not self:
            raise InvalidArgumentError("page belongs to another machine", page.phys_addr)
        return page

    def alloc_pages(self, npages: int = 1, *, align: int = 1, dma: bool = False, max_pa: int | None = None) -> Page:
        """Allocate ``npages`` physically contiguous RAM pages; returns the first.
        With ``max_pa`` every page lies at or below it (memory a DMA mask reaches)."""
        flags = PageFlag.RESERVED | (PageFlag.DMA if dma else 0)
        if max_pa is not None:
            return Page(self, phys.alloc_pages_below(self._ptr(), u64("npages", npages), u64("align", align),
                                                     flags, u64("max_pa", max_pa)))
        return Page(self, phys.alloc_pages(self._ptr(), u64("npages", npages), u64("align", align), flags))

    def free_pages(self, page: Page, npages: int = 1) -> None:
        self._own_page(page)
        phys.free_pages(self._ptr(), page.pfn, u64("npages", npages))

    def get_page(self, page: Page) -> None:
        phys.get_page(self._ptr(), self._own_page(page).pfn)

    def put_page(self, page: Page) -> None:
        phys.put_page(self._ptr(), self._own_page(page).pfn)

    # ---- the kernel's direct map of RAM (at the layout's PAGE_OFFSET) ----
    def page_address(self, page: Page) -> KernelAddress:
        """The direct-map kernel address of a RAM page (page_address / page_to_virt)."""
        self._own_page(page)
        return KernelAddress(self.page_offset + (page.pfn << PAGE_SHIFT) - self.ram_base, self)

    def phys_to_virt(self, pa: int) -> KernelAddress:
        if not self.pfn_valid(u64("pa", pa) >> PAGE_SHIFT):
            raise VirtToPageError(f"phys_to_virt({pa:#x}): only RAM is in the direct map", pa)
        return KernelAddress(self.page_offset + pa - self.ram_base, self)

    def virt_addr_valid(self, kaddr: int) -> bool:
        off = u64("kaddr", kaddr) - self.page_offset
        return 0 <= off < self.ram_size

    def virt_to_phys(self, kaddr: int) -> int:
        if not self.virt_addr_valid(kaddr):
            raise VirtToPageError(f"virt_to_phys({kaddr:#x}): not a direct-mapped RAM address "
                                  f"(vmalloc/remapped or bogus)", kaddr)
        return kaddr - self.page_offset + self.ram_base

    def virt_to_page(self, kaddr: int) -> Page:
        """The page descriptor of a direct-mapped RAM address; anything else raises."""
        if not self.virt_addr_valid(kaddr):
            raise VirtToPageError(f"virt_to_page({kaddr:#x}): defined only on direct-mapped RAM addresses "
                                  f"[{self.page_offset:#x}, {self.page_offset + self.ram_size:#x})", kaddr)
        return Page(self, self.virt_to_phys(kaddr) >> PAGE_SHIFT)

    # ---- the cache model ----
    def flush_dcache_range(self, pa: int, size: int) -> None:
        """Clean and invalidate CPU cache lines of [pa, pa+size)."""
        phys.flush_dcache_range(self._ptr(), u64("pa", pa), u64("size", size))

    def invalidate_dcache_range(self, pa: int, size: int) -> None:
        """Drop CPU cache lines of [pa, pa+size) without writing them back."""
        phys.invalidate_dcache_range(self._ptr(), u64("pa", pa), u64("size", size))

    def clean_dcache_range(self, pa: int, size: int) -> None:
        """Write back dirty CPU cache lines of [pa, pa+size), keeping them."""
        phys.clean_dcache_range(self._ptr(), u64("pa", pa), u64("size", size))

    # ---- memtype tracking ----
    def memtype_reserve(self, pa: int, size: int, cache: str) -> None:
        phys.memtype_reserve(self._ptr(), u64("pa", pa), u64("size", size), cache_id(self.isa, cache))

    def memtype_free(self, pa: int, size: int, cache: str) -> None:
        phys.memtype_free(self._ptr(), u64("pa", pa), u64("size", size), cache_id(self.isa, cache))

    def memtype_lookup(self, pa: int) -> str | None:
        c = phys.memtype_lookup(self._ptr(), u64("pa", pa))
        return None if c < 0 else cache_names(self.isa)[c]

    @property
    def attribute_reports(self) -> list[dict[str, Any]]:
        """Mismatched-attribute mappings recorded (not refused) on non-strict platforms."""
        names = cache_names(self.isa)
        return [{"start": s, "end": e, "existing": names[x], "requested": names[r]}
                for s, e, x, r in phys.memtype_reports(self._ptr())]

    @property
    def stats(self) -> MachineStats:
        return MachineStats(**phys.machine_stats(self._ptr()))

    # ---- ports and register dispatch ----
    def port_read(self, port: int, size: int = 1) -> int:
        """An in{b,w,l} instruction: read a port directly (kernel mode)."""
        return phys.port_access(self._ptr(), u64("port", port), size, False)

    def port_write(self, port: int, value: int, size: int = 1) -> None:
        """An out{b,w,l} instruction."""
        phys.port_access(self._ptr(), u64("port", port), size, True, u64("value", value))

    def _io(self, kind: int, owner: int, bar: int, offset: int, size: int, is_write: bool,
            value: int) -> int | None:
        """The core's register-access callback: route to the owning device."""
        if kind == IoKind.MMIO:
            dev = self.bus.by_id(owner)
            if dev is None:
                raise UnclaimedIOError(f"MMIO access to removed device {owner}")
            return dev._mmio(bar, offset, size, is_write, value)
        dev = self.port_space.owner_of(offset)
        return None if dev is None else dev._pio(offset, size, is_write, value)
