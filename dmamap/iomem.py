"""The kernel's view of device registers: ``ioremap`` into the kernel address
space (``machine.kernel``), and the ``readl``/``writel`` family on the
``__iomem`` cookies it returns (include/asm-generic/io.h, lib/iomap.c).

Every access goes through the kernel's page tables and reaches the device's
register callback exactly once, at the access's width, little-endian.  The
``_relaxed`` forms are the same accesses without the ordering barrier; the
emulated CPU executes accesses in program order, so they differ only in name.
``ioread*``/``iowrite*`` also take the port cookie of ``ioport_map`` and then
make port accesses (``in``/``out``), as lib/iomap.c does.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

from dmamap._check import PAGE_SHIFT, PAGE_SIZE, u64
from dmamap.errors import InvalidArgumentError, IoremapError
from dmamap.isa import isa_info
from dmamap.mm import remap_pfn_range
from dmamap.pgprot import PgProt, cache_names
from dmamap.physmem import PhysicalMemory

__all__ = [
    "IoMem", "ioremap", "ioremap_wc", "ioremap_cache_type", "iounmap", "readb", "readw", "readl", "readq",
    "writeb", "writew", "writel", "writeq", "readb_relaxed", "readw_relaxed", "readl_relaxed", "readq_relaxed",
    "writeb_relaxed", "writew_relaxed", "writel_relaxed", "writeq_relaxed", "ioread8", "ioread16", "ioread32",
    "iowrite8", "iowrite16", "iowrite32", "IoPort", "ioport_map", "ioport_unmap",
]


@dataclass(frozen=True)
class _Mapping:
    """One live ioremap (no reference to the machine: the registry is keyed weakly by it)."""

    start: int
    phys_addr: int
    size: int
    cache: str


class IoMem(int):
    """An ``__iomem`` address: a kernel virtual address inside an ioremap
    mapping that remembers its machine; ``cookie + offset`` stays an IoMem."""

    machine: PhysicalMemory

    def __new__(cls, value: int, machine: PhysicalMemory) -> IoMem:
        if not isinstance(machine, PhysicalMemory):
            raise TypeError(f"expected a Machine, got {type(machine).__name__}")
        obj = super().__new__(cls, u64("__iomem address", value))
        obj.machine = machine
        return obj

    def __add__(self, other: int) -> IoMem:
        if isinstance(other, bool) or not isinstance(other, int):
            return NotImplemented
        return IoMem(int(self) + other, self.machine)

    __radd__ = __add__

    def __sub__(self, other: int) -> IoMem | int:
        if isinstance(other, IoMem):
            return int(self) - int(other)
        if isinstance(other, bool) or not isinstance(other, int):
            return NotImplemented
        return IoMem(int(self) - other, self.machine)

    def __repr__(self) -> str:
        return f"IoMem({int(self):#x})"


_maps: weakref.WeakKeyDictionary[PhysicalMemory, dict[int, _Mapping]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def ioremap_cache_type(isa: str, wc: bool = False) -> str:
    """The memory type ioremap (``wc=False``) or ioremap_wc gives on ``isa``:
    x86 UC- / WC, AArch64 DEVICE_nGnRE / NORMAL_NC, RISC-V IO / NC."""
    info = isa_info(isa)
    if wc:
        return info.writecombine
    return "DEVICE_nGnRE" if "DEVICE_nGnRE" in cache_names(isa) else info.noncached


def _ioremap(machine: PhysicalMemory, phys_addr: int, size: int, wc: bool, what: str) -> IoMem:
    if not isinstance(machine, PhysicalMemory):
        raise TypeError(f"expected a Machine, got {type(machine).__name__}")
    phys_addr, size = u64("phys_addr", phys_addr), u64("size", size)
    if size == 0:
        raise InvalidArgumentError(f"{what}: size is zero", phys_addr)
    if phys_addr + size > 1 << 64:
        raise InvalidArgumentError(f"{what}: [{phys_addr:#x}, +{size:#x}) wraps", phys_addr)
    region = machine.region_at(phys_addr)
    if region is None or region.kind != "mmio" or phys_addr + size > region.end:
        raise IoremapError(f"{what}: [{phys_addr:#x}, {phys_addr + size:#x}) is not inside one MMIO region "
                           f"({region.kind if region else 'unmapped'}); ioremap maps device memory only",
                           phys_addr)
    # As the kernel: map whole pages, hand back the address of phys_addr inside them.
    first = phys_addr & ~(PAGE_SIZE - 1)
    length = (phys_addr + size - first + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    kernel = machine.kernel   # type: ignore[attr-defined]
    cache = ioremap_cache_type(machine.isa, wc)
    vma = kernel.mmap(length, prot="rw", align=PAGE_SIZE)
    try:
        remap_pfn_range(vma, vma.start, first >> PAGE_SHIFT, length,
                        PgProt.make(machine.isa, write=True, user=False, cache=cache))
    except BaseException:
        kernel.munmap(vma)
        raise
    with _lock:
        _maps.setdefault(machine, {})[vma.start] = _Mapping(vma.start, first, length, cache)
    return IoMem(vma.start + (phys_addr - first), machine)


def ioremap(machine: PhysicalMemory, phys_addr: int, size: int) -> IoMem:
    """Map device registers uncached into the kernel (x86 UC-, AArch64
    DEVICE_nGnRE, RISC-V IO); memory that is not MMIO raises IoremapError."""
    return _ioremap(machine, phys_addr, size, False, "ioremap")


def ioremap_wc(machine: PhysicalMemory, phys_addr: int, size: int) -> IoMem:
    """Map device memory write-combining (x86 WC, AArch64 NORMAL_NC, RISC-V NC),
    as a framebuffer driver maps its aperture."""
    return _ioremap(machine, phys_addr, size, True, "ioremap_wc")


def iounmap(addr: IoMem) -> None:
    """Undo an ioremap: ``addr`` is what it returned (or an address inside the same page)."""
    if not isinstance(addr, IoMem):
        raise IoremapError(f"iounmap: {addr!r} is not an __iomem address returned by ioremap",
                           addr if isinstance(addr, int) else 0)
    m = addr.machine
    base = int(addr) & ~(PAGE_SIZE - 1)
    with _lock:
        mp = _maps.get(m, {}).pop(base, None)
    if mp is None:
        raise IoremapError(f"iounmap: {int(addr):#x} is not the start of a live ioremap mapping", int(addr))
    if not m.closed:
        kernel = m.kernel   # type: ignore[attr-defined]
        vma = kernel.find_vma(mp.start)
        if vma is not None:
            kernel.munmap(vma)


def _target(addr: IoMem, what: str) -> IoMem:
    if type(addr) is not IoMem:
        if isinstance(addr, bool) or not isinstance(addr, int):
            raise TypeError(f"{what} takes an __iomem address, not {type(addr).__name__}")
        kind = "a port cookie from ioport_map (use ioread*/iowrite*)" if isinstance(addr, IoPort) else "a plain int"
        raise IoremapError(f"{what}: {int(addr):#x} is {kind}, not an __iomem address from ioremap", int(addr))
    return addr


# The register accessors are the hot path of a driver's register loop: each is
# the kernel address space's one-call access (AddressSpace.read32 & co.), after
# one type check; the IoMem (an int) is passed as it is.
def readb(addr: IoMem) -> int:
    if type(addr) is not IoMem:
        _target(addr, "readb")
    return addr.machine.kernel.read8(addr)   # type: ignore[attr-defined]


def readw(addr: IoMem) -> int:
    if type(addr) is not IoMem:
        _target(addr, "readw")
    return addr.machine.kernel.read16(addr)   # type: ignore[attr-defined]


def readl(addr: IoMem) -> int:
    if type(addr) is not IoMem:
        _target(addr, "readl")
    return addr.machine.kernel.read32(addr)   # type: ignore[attr-defined]


def readq(addr: IoMem) -> int:
    if type(addr) is not IoMem:
        _target(addr, "readq")
    return addr.machine.kernel.read64(addr)   # type: ignore[attr-defined]


def writeb(value: int, addr: IoMem) -> None:
    if type(addr) is not IoMem:
        _target(addr, "writeb")
    addr.machine.kernel.write8(addr, value)   # type: ignore[attr-defined]


def writew(value: int, addr: IoMem) -> None:
    if type(addr) is not IoMem:
        _target(addr, "writew")
    addr.machine.kernel.write16(addr, value)   # type: ignore[attr-defined]


def writel(value: int, addr: IoMem) -> None:
    if type(addr) is not IoMem:
        _target(addr, "writel")
    addr.machine.kernel.write32(addr, value)   # type: ignore[attr-defined]


def writeq(value: int, addr: IoMem) -> None:
    if type(addr) is not IoMem:
        _target(addr, "writeq")
    addr.machine.kernel.write64(addr, value)   # type: ignore[attr-defined]


_READ = {1: readb, 2: readw, 4: readl, 8: readq}
_WRITE = {1: writeb, 2: writew, 4: writel, 8: writeq}


def _read(addr: IoMem, size: int, what: str) -> int:
    return _READ[size](_target(addr, what))


def _write(value: int, addr: IoMem, size: int, what: str) -> None:
    _WRITE[size](value, _target(addr, what))


readb_relaxed, readw_relaxed, readl_relaxed, readq_relaxed = readb, readw, readl, readq
writeb_relaxed, writew_relaxed, writel_relaxed, writeq_relaxed = writeb, writew, writel, writeq


# ---- lib/iomap.c: one accessor family for MMIO and port cookies ----

class IoPort(int):
    """The ``__iomem`` cookie of ``ioport_map``: I/O port ``port`` of a machine
    (Linux encodes it as PIO_OFFSET + port); ``cookie + i`` is port ``port + i``."""

    machine: PhysicalMemory
    base: int
    count: int

    def __new__(cls, port: int, machine: PhysicalMemory, base: int, count: int) -> IoPort:
        if not isinstance(machine, PhysicalMemory):
            raise TypeError(f"expected a Machine, got {type(machine).__name__}")
        obj = super().__new__(cls, u64("port", port))
        obj.machine, obj.base, obj.count = machine, base, count
        return obj

    def __add__(self, other: int) -> IoPort:
        if isinstance(other, bool) or not isinstance(other, int):
            return NotImplemented
        return IoPort(int(self) + other, self.machine, self.base, self.count)

    __radd__ = __add__

    def __repr__(self) -> str:
        return f"IoPort({int(self):#x})"


def ioport_map(machine: PhysicalMemory, port: int, nr: int) -> IoPort:
    """A cookie for ports ``[port, port + nr)`` that ioread*/iowrite* reach."""
    if not isinstance(machine, PhysicalMemory):
        raise TypeError(f"expected a Machine, got {type(machine).__name__}")
    machine._ptr()
    port, nr = u64("port", port), u64("nr", nr)
    if nr == 0 or port + nr > 0x10000:
        raise IoremapError(f"ioport_map: ports {port:#x}+{nr} are not inside the 64 KiB port space", port)
    return IoPort(port, machine, port, nr)


def ioport_unmap(addr: IoPort) -> None:
    """Nothing to undo (as on x86); checks that ``addr`` is a port cookie."""
    if not isinstance(addr, IoPort):
        raise IoremapError(f"ioport_unmap: {addr!r} is not a cookie from ioport_map")


def _ioread(addr: IoMem | IoPort, size: int, what: str) -> int:
    if type(addr) is IoPort:
        _port_in_range(addr, size, what)
        return addr.machine.port_read(int(addr), size)
    return _read(addr, size, what)   # type: ignore[arg-type]


def _iowrite(value: int, addr: IoMem | IoPort, size: int, what: str) -> None:
    if type(addr) is IoPort:
        _port_in_range(addr, size, what)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{what}: value must be an int, not {type(value).__name__}")
        if not 0 <= value < 1 << (8 * size):
            raise InvalidArgumentError(f"{what}: value {value:#x} does not fit in {size} bytes", int(addr))
        addr.machine.port_write(int(addr), value, size)
        return
    _write(value, addr, size, what)   # type: ignore[arg-type]


def _port_in_range(addr: IoPort, size: int, what: str) -> None:
    if not (addr.base <= int(addr) and int(addr) + size <= addr.base + addr.count):
        raise IoremapError(f"{what}: port {int(addr):#x}+{size} is outside the ioport_map of "
                           f"{addr.base:#x}+{addr.count}", int(addr))


def ioread8(addr: IoMem | IoPort) -> int:
    return _ioread(addr, 1, "ioread8")


def ioread16(addr: IoMem | IoPort) -> int:
    return _ioread(addr, 2, "ioread16")


def ioread32(addr: IoMem | IoPort) -> int:
    return _ioread(addr, 4, "ioread32")


def iowrite8(value: int, addr: IoMem | IoPort) -> None:
    _iowrite(value, addr, 1, "iowrite8")


def iowrite16(value: int, addr: IoMem | IoPort) -> None:
    _iowrite(value, addr, 2, "iowrite16")


def iowrite32(value: int, addr: IoMem | IoPort) -> None:
    _iowrite(value, addr, 4, "iowrite32")
