"""The emulated machine: physical memory map, page descriptors, kernel
address space (direct map), devices' MMIO/port dispatch and device DMA.

Backing memory is one sparse memfd mapping: nothing is committed on the host
until it is touched.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dmamap._ffi import call, ffi, in_buffer, lib, out_buffer, stash
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
from dmamap.ioport import PortSpace
from dmamap.mm import PAGE_SHIFT, PAGE_SIZE, AddressSpace, PgProt, _addr
from dmamap.policy import PioMethod

if TYPE_CHECKING:
    from dmamap.backends import Backend
    from dmamap.device import BarSpec, Device, PortSpec, ReadFn, WriteFn

__all__ = ["Machine", "Page", "Region", "MachineStats", "KernelAddress", "ISAS"]

ISAS = {"x86_64": 1, "aarch64": 2}
MiB = 1 << 20
GiB = 1 << 30


@dataclass(frozen=True)
class Layout:
    """Where things sit in one ISA's physical and kernel virtual address space."""

    ram_base: int
    sram_base: int
    sram_max: int
    mmio_base: int
    mmio_size: int
    iowin_base: int
    page_offset: int


LAYOUTS = {
    # x86: RAM from 0; device BARs and on-bus SRAM far above any RAM size we allow.
    "x86_64": Layout(ram_base=0, sram_base=0xF0_0000_0000, sram_max=4 * GiB, mmio_base=0x100_0000_0000,
                     mmio_size=64 * GiB, iowin_base=0x110_0000_0000, page_offset=0xFFFF_8880_0000_0000),
    # AArch64, as QEMU virt: SRAM low, PCI MMIO and I/O window below RAM at 1 GiB.
    "aarch64": Layout(ram_base=0x4000_0000, sram_base=0x0400_0000, sram_max=192 * MiB, mmio_base=0x1000_0000,
                      mmio_size=0x2EFF_0000, iowin_base=0x3EFF_0000, page_offset=0xFFFF_FF80_0000_0000),
}
IOWIN_SIZE = 0x10000
MAX_RAM = 1 << 40

_REGION_TYPES = {1: "ram", 2: "sram", 3: "mmio", 4: "io-window"}


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


class KernelAddress(int):
    """A kernel virtual address that remembers its machine (for virt_to_page)."""

    machine: Machine

    def __new__(cls, value: int, machine: Machine) -> KernelAddress:
        if not isinstance(machine, Machine):
            raise TypeError(f"expected a Machine, got {type(machine).__name__}")
        obj = super().__new__(cls, _addr("kernel address", value))
        obj.machine = machine
        return obj

    def __repr__(self) -> str:
        return f"KernelAddress({int(self):#x})"


class Page:
    """A page descriptor (struct page): exists for RAM only."""

    __slots__ = ("machine", "pfn")

    def __init__(self, machine: Machine, pfn: int) -> None:
        if not isinstance(machine, Machine):
            raise TypeError(f"expected a Machine, got {type(machine).__name__}")
        self.machine = machine
        self.pfn = _addr("pfn", pfn)

    def _info(self) -> Any:
        info = ffi.new("struct dmamap_page_info *")
        call(lib.dmamap_page_info, self.machine._ptr(), self.pfn, info)
        return info

    @property
    def refcount(self) -> int:
        return int(self._info().refcount)

    @property
    def mapcount(self) -> int:
        return int(self._info().mapcount)

    @property
    def flags(self) -> dict[str, bool]:
        f = self._info().flags
        return {"reserved": bool(f & 1), "anon": bool(f & 2), "table": bool(f & 4), "dma": bool(f & 8)}

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
    using it.  A C address space is freed by its own AddressSpace's finalizer
    (free_space) or, whichever comes first, here."""

    def __init__(self) -> None:
        self.m: Any = None
        self.buf: Any = None
        self.size = 0
        self.closed = False
        self.retired = False
        # Re-entrant: a garbage collection inside a critical section (any allocation can
        # start one) may run an AddressSpace finalizer, free_space, on this same thread.
        self.lock = threading.RLock()
        self.as_ptrs: set[Any] = set()   # C address spaces; never the Python objects

    def close_core(self) -> bool:
        """Refuse every later call; False if that was done already."""
        with self.lock:
            if self.closed:
                return False
            self.closed = True
        if self.m is not None:
            lib.dmamap_machine_close(self.m)
        return True

    def retire(self) -> None:
        self.close_core()
        with self.lock:
            if self.retired:
                return
            self.retired = True
        if self.buf is not None:
            lib.dmamap_backing_retire(self.buf, self.size)

    def add_space(self, p: Any) -> None:
        with self.lock:
            self.as_ptrs.add(p)

    def free_space(self, p: Any) -> None:
        with self.lock:
            if p not in self.as_ptrs:
                return
            self.as_ptrs.discard(p)
        lib.dmamap_as_free(p)

    def release(self) -> None:
        self.retire()
        with self.lock:
            ptrs, self.as_ptrs = list(self.as_ptrs), set()
        for p in ptrs:
            lib.dmamap_as_free(p)
        if self.m is not None:
            lib.dmamap_machine_free(self.m)
            self.m = None
        if self.buf is not None:
            lib.dmamap_backing_unmap(self.buf, self.size)
            self.buf = None


_open_machines: weakref.WeakSet[Machine] = weakref.WeakSet()
_open_lock = threading.Lock()


class Machine:
    """An emulated machine of one platform.

    ``arch`` is a backend name (``"x86"``, ``"arm"``, ``"sram"`` or one from the
    ``dmamap.arch`` entry point group) or a bare ISA (``"x86_64"``,
    ``"aarch64"``) for a machine with no platform policy.
    """

    def __init__(self, arch: str = "x86", *, ram: int = 256 * MiB, sram: int | None = None,
                 dma_coherent: bool | None = None, cache_size: int = 32 * 1024, cache_ways: int = 4,
                 strict_memtype: bool | None = None) -> None:
        from dmamap.registry import get_backend

        if not isinstance(arch, str):
            raise TypeError(f"arch must be a str, not {type(arch).__name__}")
        backend: Backend | None = None
        if arch in ISAS:
            isa = arch
        else:
            backend = get_backend(arch)
            isa = backend.isa
        self.backend = backend
        self.name = backend.name if backend else isa
        self.isa = isa
        self.layout = LAYOUTS[isa]
        ram = _addr("ram", ram)
        if ram < 16 * PAGE_SIZE or ram % PAGE_SIZE or ram > MAX_RAM:
            raise InvalidArgumentError(f"ram must be a multiple of 4 KiB between 64 KiB and 1 TiB, not {ram:#x}")
        if sram is None:
            sram = backend.default_sram if backend else 0
        sram = _addr("sram", sram)
        if sram % PAGE_SIZE or sram > self.layout.sram_max:
            raise InvalidArgumentError(f"sram must be a multiple of 4 KiB up to {self.layout.sram_max:#x}")
        if dma_coherent is None:
            dma_coherent = backend.dma_coherent if backend else True
        if strict_memtype is None:
            strict_memtype = backend.strict_memtype if backend else True
        self.dma_coherent = bool(dma_coherent)
        self.ram_base = self.layout.ram_base
        self.ram_size = ram
        self.sram_base = self.layout.sram_base
        self.sram_size = sram
        self.page_offset = self.layout.page_offset
        #: The machine's subsystems, each the only owner of its state, each with its own lock.
        self.bus = DeviceBus()
        self.port_space = PortSpace()
        self.mmio_window = GenPool("MMIO window", self.layout.mmio_base, self.layout.mmio_size,
                                   granule=PAGE_SIZE)
        self.sram_pool = GenPool("SRAM pool", self.layout.sram_base, sram, granule=PAGE_SIZE,
                                 hint="give the machine more with Machine(..., sram=BYTES)")
        self.io_window = GenPool("I/O window", self.layout.iowin_base, IOWIN_SIZE, granule=PAGE_SIZE)
        self._spaces_lock = threading.Lock()
        self._address_spaces: set[AddressSpace] = set()

        st = _State()
        self._state = st
        self._finalizer = weakref.finalize(self, st.release)
        size = ram + sram
        fd = os.memfd_create(f"dmamap-{self.name}", os.MFD_CLOEXEC)
        try:   # the mapping keeps the memfd alive; no descriptor stays open
            os.ftruncate(fd, size)
            out = ffi.new("void **")
            call(lib.dmamap_backing_map, fd, size, out)
        finally:
            os.close(fd)
        st.buf, st.size = ffi.cast("uint8_t *", out[0]), size
        err = ffi.new("struct dmamap_err *")
        st.m = lib.dmamap_machine_new(ISAS[isa], st.buf, size, int(self.dma_coherent), err)
        if st.m == ffi.NULL:
            st.m = None
            from dmamap._ffi import raise_for

            raise_for(err.code, err)
        self._handle = ffi.new_handle(self)
        lib.dmamap_machine_set_io(st.m, lib._dmamap_io_cb, self._handle)
        lib.dmamap_machine_set_memtype_policy(st.m, 0 if strict_memtype else 1)
        if not self.dma_coherent:
            call(lib.dmamap_machine_set_cache, st.m, _addr("cache_size", cache_size), cache_ways)
        self.cache_size = 0 if self.dma_coherent else cache_size
        self.cache_ways = 0 if self.dma_coherent else cache_ways
        self._add_region(1, self.ram_base, ram, 0)
        if sram:
            self._add_region(2, self.sram_base, sram, ram)
        if backend is None or backend.pio == PioMethod.WINDOW:
            self._add_region(4, self.layout.iowin_base, IOWIN_SIZE, 0)
        self.has_io_window = backend is None or backend.pio == PioMethod.WINDOW
        self.kernel = self.new_address_space(kernel=True)
        # The direct map: all of RAM at PAGE_OFFSET, write-back, with large pages.
        vma = self.kernel.mmap(ram, addr=self.page_offset, prot="rw", align=PAGE_SIZE)
        from dmamap.mm import remap_pfn_range

        remap_pfn_range(vma, vma.start, self.ram_base >> PAGE_SHIFT, ram,
                        PgProt.make(isa, write=True, user=False), large=True, track=False)
        self._direct_map = vma
        with _open_lock:
            _open_machines.add(self)
        if backend is not None:
            backend.setup(self)

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
        machine: that call finishes on zeroed memory, and the small C state is
        freed at garbage collection."""
        if not self._state.close_core():   # the core refuses every call from here on
            return
        for dev in self.bus.devices().values():
            dev._closing()
        with self._spaces_lock:
            spaces, self._address_spaces = list(self._address_spaces), set()
        for space in spaces:
            space._detach()
        self._state.retire()
        with _open_lock:
            _open_machines.discard(self)

    def _add_space(self, space: AddressSpace, ptr: Any) -> None:
        """Track a new address space (its C state is freed by its finalizer or with ours)."""
        with self._spaces_lock:
            if self._state.closed:
                raise MachineClosedError(f"machine {self.name} is closed")
            self._address_spaces.add(space)
            self._state.add_space(ptr)

    def _forget_space(self, space: AddressSpace) -> None:
        with self._spaces_lock:
            self._address_spaces.discard(space)

    @property
    def devices(self) -> dict[str, Device]:
        """A snapshot of the attached devices, by name."""
        return self.bus.devices()

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<Machine {self.name} ({self.isa}) ram={self.ram_size >> 20} MiB{state}>"

    # ---- physical memory map ----
    def _add_region(self, kind: int, base: int, size: int, backing_offset: int, owner: int = -1,
                    bar: int = 0) -> None:
        r = ffi.new("struct dmamap_region *")
        r.type, r.base, r.size, r.backing_offset, r.owner, r.bar = kind, base, size, backing_offset, owner, bar
        call(lib.dmamap_add_region, self._ptr(), r)

    @property
    def memory_map(self) -> list[Region]:
        out = []
        regs = ffi.new("struct dmamap_region[]", lib.DMAMAP_MAX_REGIONS)
        for i in range(lib.dmamap_regions(self._ptr(), regs, lib.DMAMAP_MAX_REGIONS)):   # one snapshot
            r = regs[i]
            owner = None
            if r.type == 3:
                owner = (self.bus.name_of(r.owner) or f"device {r.owner}") + f" BAR{r.bar}"
            out.append(Region(_REGION_TYPES[r.type], int(r.base), int(r.size), owner))
        return sorted(out, key=lambda x: x.base)

    def region_at(self, pa: int) -> Region | None:
        """The memory-map region containing ``pa``."""
        for r in self.memory_map:
            if r.base <= pa < r.end:
                return r
        return None

    def region_of(self, pa: int) -> str | None:
        return _REGION_TYPES.get(lib.dmamap_region_of(self._ptr(), _addr("pa", pa)))

    def phys_read(self, pa: int, n: int) -> bytes:
        """Read physical memory as a device would (not through the CPU cache)."""
        n, pa = _addr("n", n), _addr("pa", pa)
        if not n:
            return b""
        self._check_phys_span(pa, n)
        buf = out_buffer(n)
        call(lib.dmamap_phys_read, self._ptr(), pa, ffi.from_buffer(buf), n)
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
        pa = _addr("pa", pa)
        if n:
            call(lib.dmamap_phys_write, self._ptr(), pa, cdata, n)

    def pfn_valid(self, pfn: int) -> bool:
        """True only for RAM: the page frames that have page descriptors."""
        return bool(lib.dmamap_pfn_valid(self._ptr(), _addr("pfn", pfn)))

    def pfn_to_page(self, pfn: int) -> Page:
        if not self.pfn_valid(pfn):
            raise BadPageError(f"pfn_to_page({pfn:#x}): not RAM, so there is no page descriptor "
                               f"(pfn_valid() is false)", pfn << PAGE_SHIFT)
        return Page(self, pfn)

    def page_address(self, page: Page) -> KernelAddress:
        """The direct-map kernel address of a RAM page (page_address / page_to_virt)."""
        self._own_page(page)
        return KernelAddress(self.page_offset + (page.pfn << PAGE_SHIFT) - self.ram_base, self)

    def phys_to_virt(self, pa: int) -> KernelAddress:
        if not self.pfn_valid(_addr("pa", pa) >> PAGE_SHIFT):
            raise VirtToPageError(f"phys_to_virt({pa:#x}): only RAM is in the direct map", pa)
        return KernelAddress(self.page_offset + pa - self.ram_base, self)

    def virt_addr_valid(self, kaddr: int) -> bool:
        off = _addr("kaddr", kaddr) - self.page_offset
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

    def _own_page(self, page: Page) -> Page:
        if not isinstance(page, Page):
            raise TypeError(f"expected a Page, got {type(page).__name__}")
        if page.machine is not self:
            raise InvalidArgumentError("page belongs to another machine", page.phys_addr)
        return page

    # ---- page allocator ----
    def alloc_pages(self, npages: int = 1, *, align: int = 1, dma: bool = False) -> Page:
        """Allocate ``npages`` physically contiguous RAM pages; returns the first."""
        out = ffi.new("uint64_t *")
        call(lib.dmamap_alloc_pages, self._ptr(), _addr("npages", npages), _addr("align", align),
             1 | (8 if dma else 0), out)
        return Page(self, int(out[0]))

    def free_pages(self, page: Page, npages: int = 1) -> None:
        self._own_page(page)
        call(lib.dmamap_free_pages, self._ptr(), page.pfn, _addr("npages", npages))

    def get_page(self, page: Page) -> None:
        call(lib.dmamap_get_page, self._ptr(), self._own_page(page).pfn)

    def put_page(self, page: Page) -> None:
        call(lib.dmamap_put_page, self._ptr(), self._own_page(page).pfn)

    # ---- address spaces ----
    def new_address_space(self, *, kernel: bool = False) -> AddressSpace:
        """A fresh user address space with an empty root table."""
        return AddressSpace(self, kernel=kernel)

    # ---- cache model ----
    def flush_dcache_range(self, pa: int, size: int) -> None:
        """Clean and invalidate CPU cache lines of [pa, pa+size)."""
        call(lib.dmamap_flush_dcache_range, self._ptr(), _addr("pa", pa), _addr("size", size))

    def invalidate_dcache_range(self, pa: int, size: int) -> None:
        """Drop CPU cache lines of [pa, pa+size) without writing them back."""
        call(lib.dmamap_invalidate_dcache_range, self._ptr(), _addr("pa", pa), _addr("size", size))

    def clean_dcache_range(self, pa: int, size: int) -> None:
        """Write back dirty CPU cache lines of [pa, pa+size), keeping them."""
        call(lib.dmamap_clean_dcache_range, self._ptr(), _addr("pa", pa), _addr("size", size))

    # ---- memtype tracking ----
    def memtype_reserve(self, pa: int, size: int, cache: str) -> None:
        from dmamap.mm import cache_id

        call(lib.dmamap_memtype_reserve, self._ptr(), _addr("pa", pa), _addr("size", size),
             cache_id(self.isa, cache))

    def memtype_free(self, pa: int, size: int, cache: str) -> None:
        from dmamap.mm import cache_id

        call(lib.dmamap_memtype_free, self._ptr(), _addr("pa", pa), _addr("size", size), cache_id(self.isa, cache))

    def memtype_lookup(self, pa: int) -> str | None:
        from dmamap.mm import cache_names

        c = lib.dmamap_memtype_lookup(self._ptr(), _addr("pa", pa))
        return None if c < 0 else cache_names(self.isa)[c]

    @property
    def attribute_reports(self) -> list[dict[str, Any]]:
        """Mismatched-attribute mappings recorded (not refused) on non-strict platforms."""
        from dmamap.mm import cache_names

        names = cache_names(self.isa)
        arr = ffi.new("struct dmamap_memtype_report[64]")
        n = lib.dmamap_memtype_reports(self._ptr(), arr, 64)
        return [{"start": int(arr[i].start), "end": int(arr[i].end), "existing": names[arr[i].existing],
                 "requested": names[arr[i].requested]} for i in range(n)]

    # ---- stats ----
    @property
    def stats(self) -> MachineStats:
        s = ffi.new("struct dmamap_machine_stats *")
        lib.dmamap_machine_stats(self._ptr(), s)
        return MachineStats(*(int(getattr(s, f)) for f in MachineStats.__dataclass_fields__))

    # ---- devices and I/O dispatch ----
    def add_device(self, name: str, *, bars: Sequence[BarSpec] = (), ports: Sequence[PortSpec] = (),
                   read: ReadFn | None = None, write: WriteFn | None = None) -> Device:
        """Attach a device with MMIO ``bars`` (sizes or :class:`~dmamap.device.Bar`), I/O ``ports``
        (``(base, count)`` or :class:`~dmamap.device.PortRange`) and default ``read``/``write``
        callbacks; see :class:`dmamap.device.Device`."""
        from dmamap.device import Device

        return Device(self, name, bars=bars, ports=ports, read=read, write=write)

    def remove_device(self, dev: Device | str) -> None:
        from dmamap.device import Device

        if not isinstance(dev, (str, Device)):
            raise TypeError(f"expected a Device or its name, not {type(dev).__name__}")
        d = self.bus.by_name(dev) if isinstance(dev, str) else dev
        if d is None or d.machine is not self:
            raise InvalidArgumentError(f"no device {dev!r} on this machine")
        d.remove()

    def _io(self, kind: int, owner: int, bar: int, offset: int, size: int, is_write: bool,
            value: int) -> int | None:
        if kind == 0:
            dev = self.bus.by_id(owner)
            if dev is None:
                raise UnclaimedIOError(f"MMIO access to removed device {owner}")
            return dev._mmio(bar, offset, size, is_write, value)
        dev = self.port_space.owner_of(offset)
        return None if dev is None else dev._pio(offset, size, is_write, value)

    def port_read(self, port: int, size: int = 1) -> int:
        """An in{b,w,l} instruction: read a port directly (kernel mode)."""
        v = ffi.new("uint64_t *")
        call(lib.dmamap_port_access, self._ptr(), _addr("port", port), size, 0, v)
        return int(v[0])

    def port_write(self, port: int, value: int, size: int = 1) -> None:
        """An out{b,w,l} instruction."""
        v = ffi.new("uint64_t *", _addr("value", value))
        call(lib.dmamap_port_access, self._ptr(), _addr("port", port), size, 1, v)

    def info(self) -> dict[str, Any]:
        """Configuration and memory map, for ``dmamap info``."""
        return {
            "platform": self.name,
            "isa": self.isa,
            "page_table_levels": lib.dmamap_isa_levels(ISAS[self.isa]),
            "va_bits": lib.dmamap_isa_va_bits(ISAS[self.isa]),
            "dma_coherent": self.dma_coherent,
            "cache": f"{self.cache_size // 1024} KiB, {self.cache_ways}-way, 64-byte lines, write-back"
            if self.cache_size else "none modelled (DMA snoops)",
            "page_offset": self.page_offset,
            "memory_map": self.memory_map,
        }


@ffi.def_extern()
def _dmamap_io_cb(ctx: Any, kind: int, owner: int, bar: int, offset: int, size: int, is_write: int,
                  value: Any) -> int:
    try:
        m: Machine = ffi.from_handle(ctx)
        r = m._io(kind, owner, bar, offset, size, bool(is_write), int(value[0]) if is_write else 0)
        if r is None:
            return -18
        if not is_write:
            value[0] = int(r) & ((1 << (8 * size)) - 1)
        return 0
    except BaseException as exc:  # noqa: BLE001 - re-raised when the C call returns
        stash(exc)
        return -14


def open_machines() -> Iterator[Machine]:
    with _open_lock:
        return iter(list(_open_machines))


def resolve_machine(value: object, machine: Machine | None) -> Machine:
    """The machine an int argument belongs to: explicit, carried, or the only open one."""
    if machine is not None:
        return machine
    carried = getattr(value, "machine", None)
    if carried is not None:
        return carried
    with _open_lock:
        live = [m for m in _open_machines if not m.closed]
    if len(live) == 1:
        return live[0]
    raise InvalidArgumentError(f"cannot tell which machine {value!r} belongs to ({len(live)} open): pass machine=")


_Callback = Callable[..., Any]
