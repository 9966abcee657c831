"""The emulated machine: physical memory (:mod:`dmamap.physmem`), the kernel's
address space with its direct map, devices, and the platform backend that
decides the helpers' policy.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from dmamap._check import PAGE_SHIFT, PAGE_SIZE
from dmamap.device import BarSpec, Device, PortSpec, ReadFn, WriteFn
from dmamap.dma_debug import DmaDebugReport, machine_debug
from dmamap.errors import InvalidArgumentError
from dmamap.irq import IrqController
from dmamap.isa import ISAS
from dmamap.mm import AddressSpace, remap_pfn_range
from dmamap.pgprot import PgProt
from dmamap.physmem import IOWIN_SIZE, KernelAddress, MachineStats, Page, PhysicalMemory, Region
from dmamap.policy import PioMethod
from dmamap.registry import resolve_backend

if TYPE_CHECKING:
    from dmamap.backends import Backend

__all__ = ["Machine", "Page", "Region", "MachineStats", "KernelAddress", "ISAS", "IOWIN_SIZE", "resolve_machine",
           "open_machines"]

MiB = 1 << 20

_open_machines: weakref.WeakSet[Machine] = weakref.WeakSet()
_open_lock = threading.Lock()


class Machine(PhysicalMemory):
    """An emulated machine of one platform.

    ``arch`` is a backend (a name such as ``"x86"``, ``"arm"``, ``"sram"``,
    ``"riscv"`` or one from the ``dmamap.arch`` entry point group, or a
    :class:`~dmamap.backends.Backend` object) or a bare ISA (``"x86_64"``,
    ``"aarch64"``, ``"riscv64"`` or a registered variant) for a machine with no
    platform policy.
    """

    def __init__(self, arch: str | Backend = "x86", *, ram: int = 256 * MiB, sram: int | None = None,
                 dma_coherent: bool | None = None, cache_size: int = 32 * 1024, cache_ways: int = 4,
                 strict_memtype: bool | None = None) -> None:
        isa, backend = resolve_backend(arch)
        self.backend = backend
        self.irq = IrqController()   # interrupt lines (dmamap.irq)
        super().__init__(
            backend.name if backend else isa, isa, ram=ram,
            sram=(backend.default_sram if backend else 0) if sram is None else sram,
            dma_coherent=(backend.dma_coherent if backend else True) if dma_coherent is None else dma_coherent,
            cache_size=cache_size, cache_ways=cache_ways,
            strict_memtype=(backend.strict_memtype if backend else True) if strict_memtype is None
            else strict_memtype,
            io_window=backend is None or backend.pio == PioMethod.WINDOW)
        self.kernel = self.new_address_space(kernel=True)
        # The direct map: all of RAM at PAGE_OFFSET, write-back, with large pages.
        vma = self.kernel.mmap(self.ram_size, addr=self.page_offset, prot="rw", align=PAGE_SIZE)
        remap_pfn_range(vma, vma.start, self.ram_base >> PAGE_SHIFT, self.ram_size,
                        PgProt.make(isa, write=True, user=False), large=True, track=False)
        self._direct_map = vma
        with _open_lock:
            _open_machines.add(self)
        if backend is not None:
            backend.setup(self)

    def close(self) -> None:
        super().close()
        with _open_lock:
            _open_machines.discard(self)

    def __enter__(self) -> Machine:
        return self

    @property
    def dma_debug_mode(self) -> str:
        """``"raise"`` (DMA API misuse raises its DmaApiError subclass) or
        ``"record"`` (it is logged for :meth:`dma_debug_report` and the call goes on)."""
        return machine_debug(self).mode

    @dma_debug_mode.setter
    def dma_debug_mode(self, mode: str) -> None:
        machine_debug(self).set_mode(mode)

    def dma_debug_report(self, *, clear: bool = False) -> DmaDebugReport:
        """Every DMA API violation recorded so far (record mode), with counts per rule."""
        return machine_debug(self).report(clear=clear)

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<Machine {self.name} ({self.isa}) ram={self.ram_size >> 20} MiB{state}>"

    # ---- address spaces ----
    def new_address_space(self, *, kernel: bool = False) -> AddressSpace:
        """A fresh address space with an empty root table (a user one shares the kernel half, as Linux's)."""
        return AddressSpace(self, kernel=kernel)

    # ---- devices ----
    @property
    def devices(self) -> dict[str, Device]:
        """A snapshot of the attached devices, by name."""
        return self.bus.devices()

    def add_device(self, name: str, *, bars: Sequence[BarSpec] = (), ports: Sequence[PortSpec] = (),
                   read: ReadFn | None = None, write: WriteFn | None = None) -> Device:
        """Attach a device: ``bars`` are sizes or :class:`Bar` objects, ``ports``
        ``(base, count)`` pairs or :class:`PortRange` objects; ``read``/``write``
        are the default register callbacks (see :class:`dmamap.device.Device`)."""
        return Device(self, name, bars=bars, ports=ports, read=read, write=write)

    def remove_device(self, dev: Device | str) -> None:
        if not isinstance(dev, (str, Device)):
            raise TypeError(f"expected a Device or its name, not {type(dev).__name__}")
        d = self.bus.by_name(dev) if isinstance(dev, str) else dev
        if d is None or d.machine is not self:
            raise InvalidArgumentError(f"no device {dev!r} on this machine")
        d.remove()

    def info(self) -> dict[str, Any]:
        """Configuration and memory map, for ``dmamap info``."""
        return {
            "platform": self.name,
            "isa": self.isa,
            "page_table_levels": self.isa_info.levels,
            "va_bits": self.isa_info.va_bits,
            "dma_coherent": self.dma_coherent,
            "cache": f"{self.cache_size // 1024} KiB, {self.cache_ways}-way, 64-byte lines, write-back"
            if self.cache_size else "none modelled (DMA snoops)",
            "page_offset": self.page_offset,
            "memory_map": self.memory_map,
        }



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
