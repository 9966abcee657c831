"""Devices: MMIO BARs and I/O-port ranges whose register accesses call Python
callbacks, and a DMA engine that reads and writes memory (never the CPU cache)."""

from __future__ import annotations

import mmap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dmamap import irq
from dmamap._binding import in_buffer, out_buffer, phys
from dmamap._check import PAGE_SIZE, u64
from dmamap.dma_debug import DmaDebug, machine_debug
from dmamap.errors import (
    DmaLeakError,
    InvalidArgumentError,
    IrqError,
    MachineClosedError,
    OutOfMemoryError,
    PhysicalAddressError,
)
from dmamap.physmem import PhysicalMemory

if TYPE_CHECKING:
    from dmamap.machine import Machine

ReadFn = Callable[[int, int], int]
WriteFn = Callable[[int, int, int], None]

__all__ = ["Device", "Bar", "PortRange"]


@dataclass
class Bar:
    """One MMIO BAR: ``size`` bytes, optional callbacks ``read(offset, size)`` and
    ``write(offset, size, value)``; without them it is a plain register file."""

    size: int
    read: ReadFn | None = None
    write: WriteFn | None = None
    base: int = 0
    regs: bytearray = field(default_factory=bytearray, repr=False)


@dataclass
class PortRange:
    """``count`` I/O ports from ``base``, with optional callbacks like :class:`Bar`."""

    base: int
    count: int
    read: ReadFn | None = None
    write: WriteFn | None = None
    regs: bytearray = field(default_factory=bytearray, repr=False)


BarSpec = int | Bar
PortSpec = tuple[int, int] | PortRange


def _pow2_at_least(n: int) -> int:
    p = PAGE_SIZE
    while p < n:
        p <<= 1
    return p


class Device:
    """A device on the machine's bus.

    ``bars`` are sizes or :class:`Bar` objects; ``ports`` are ``(base, count)``
    pairs or :class:`PortRange` objects.  ``read``/``write`` are the default
    callbacks for every range that has none of its own.  Each register access
    calls exactly one callback, at the access's width.
    """

    def __init__(self, machine: Machine, name: str, *, bars: Sequence[BarSpec] = (),
                 ports: Sequence[PortSpec] = (), read: ReadFn | None = None, write: WriteFn | None = None,
                 irqs: Sequence[int] = ()) -> None:
        if not isinstance(machine, PhysicalMemory):
            raise TypeError(f"expected a Machine, got {type(machine).__name__}")
        if not isinstance(name, str):
            raise TypeError(f"device name must be a str, not {type(name).__name__}")
        if not name:
            raise InvalidArgumentError(f"device name must be a non-empty str, not {name!r}")
        machine._ptr()
        self.machine = machine
        self.name = name
        self.bars: list[Bar] = []
        self.ports: list[PortRange] = []
        self.removed = False
        self.dma_debug: DmaDebug = DmaDebug(self)
        #: Bus addresses the device can drive (dma_set_mask / dma_set_coherent_mask); all 64 bits by default.
        self.dma_mask: int = (1 << 64) - 1
        self.coherent_dma_mask: int = (1 << 64) - 1
        self.irqs: tuple[int, ...] = tuple(irq.check_irq(n) for n in irqs)
        bar_objs = [b if isinstance(b, Bar) else Bar(u64("bar size", b)) for b in bars]
        port_objs = [p if isinstance(p, PortRange) else PortRange(*p) for p in ports]
        ranges: list[Bar | PortRange] = [*bar_objs, *port_objs]
        for cb in (read, write, *(c for o in ranges for c in (o.read, o.write))):
            if cb is not None and not callable(cb):
                raise TypeError(f"device callbacks must be callable, not {type(cb).__name__}")
        for b in bar_objs:
            u64("bar size", b.size)
        for p in port_objs:
            u64("port base", p.base)
            u64("port count", p.count)
        for b in bar_objs:
            if b.size <= 0 or b.size > 1 << 32:
                raise InvalidArgumentError(f"BAR size {b.size:#x} must be between 1 byte and 4 GiB")
        for p in port_objs:
            if not (0 <= p.base and p.count > 0 and p.base + p.count <= 0x10000):
                raise InvalidArgumentError(f"ports {p.base:#x}+{p.count} outside the 64 KiB port space", p.base)
        self.id = machine.bus.reserve(name)
        # Everything below is given back if any step is refused: a refused add
        # leaves the MMIO window, the memory map and the port space as they were.
        placed: list[tuple[int, int]] = []
        claimed = False
        try:
            for i, b in enumerate(bar_objs):
                span = _pow2_at_least(b.size)
                try:
                    base = machine.mmio_window.alloc(span, align=span)
                except OutOfMemoryError:
                    raise InvalidArgumentError(f"MMIO window exhausted placing BAR{i} of {name!r} "
                                               f"({span:#x} bytes)") from None
                placed.append((base, span))
                machine._add_region(3, base, span, 0, owner=self.id, bar=i)
                placed[-1] = (base, -span)   # the region exists too
            machine.port_space.claim([(p.base, p.count) for p in port_objs], self, name)
            claimed = True
            for b, (base, _) in zip(bar_objs, placed, strict=True):
                b.read, b.write = b.read or read, b.write or write
                b.base = base
                if b.read is None:
                    # a plain register file, up to 4 GiB: anonymous memory the host
                    # commits only where registers are written
                    b.regs = mmap.mmap(-1, _pow2_at_least(b.size) + 8)  # type: ignore[assignment]
                self.bars.append(b)
            for p in port_objs:
                p.read, p.write = p.read or read, p.write or write
                if p.read is None:
                    p.regs = bytearray(p.count + 8)
                self.ports.append(p)
            machine.bus.attach(self)
        except BaseException:
            self.bars, self.ports = [], []
            if claimed:
                machine.port_space.release(self)
            for base, span in placed:
                if span < 0:
                    machine._remove_region(base)
                machine.mmio_window.free(base, abs(span))
            raise

    def bar(self, i: int = 0) -> tuple[int, int]:
        """(physical base, size) of BAR ``i``."""
        if isinstance(i, bool) or not isinstance(i, int):
            raise TypeError(f"BAR index must be an int, not {type(i).__name__}")
        if not 0 <= i < len(self.bars):
            raise InvalidArgumentError(f"device {self.name!r} has no BAR{i} (it has {len(self.bars)})")
        b = self.bars[i]
        return b.base, b.size

    def raise_irq(self, line: int | None = None) -> None:
        """Raise interrupt ``line`` (one of the device's ``irqs``; default its
        first): the handlers requested on it run now, on this thread (see
        :mod:`dmamap.irq` for the context they run in)."""
        self._check()
        if not self.irqs:
            raise IrqError(f"device {self.name!r} has no interrupt line (create it with irqs=[...])")
        n = self.irqs[0] if line is None else irq.check_irq(line)
        if n not in self.irqs:
            raise IrqError(f"device {self.name!r} is not wired to irq {n} (its lines: {list(self.irqs)})")
        irq.generic_handle_irq(self.machine, n)

    def _check(self) -> None:
        self.machine._ptr()   # a closed machine's devices are all removed: say why
        if self.removed:
            raise InvalidArgumentError(f"device {self.name!r} was removed")

    # ---- register dispatch (called from the C core) ----
    def _mmio(self, bar: int, offset: int, size: int, is_write: bool, value: int) -> int | None:
        b = self.bars[bar]
        if offset + size > b.size:
            return None
        return _dispatch(b.read, b.write, b.regs, offset, size, is_write, value)

    def _pio(self, port: int, size: int, is_write: bool, value: int) -> int | None:
        for p in self.ports:
            if p.base <= port and port + size <= p.base + p.count:
                return _dispatch(p.read, p.write, p.regs, port - p.base, size, is_write, value)
        return None

    # ---- DMA engine ----
    def dma_read(self, dma_addr: int, n: int) -> bytes:
        """The device reads ``n`` bytes of memory at bus address ``dma_addr``
        (translated page by page: bus-contiguous need not be physically contiguous)."""
        self._check()
        n = u64("n", n)
        runs = self._bus_runs(dma_addr, n, False)
        if not n:
            return b""
        for pa, ln in runs:
            self.machine._check_phys_span(pa, ln)
        self.dma_debug.check_device_access(runs, False)
        buf = out_buffer(n)
        cbuf = in_buffer("buffer", buf)[0]
        done = 0
        for pa, ln in runs:
            phys.dma_rw(self.machine._ptr(), pa, cbuf + done, ln, False)
            done += ln
        return bytes(buf)

    def dma_write(self, dma_addr: int, data: bytes | bytearray | memoryview) -> None:
        """The device writes ``data`` to memory at bus address ``dma_addr``."""
        self._check()
        cdata, n = in_buffer("data", data)
        runs = self._bus_runs(dma_addr, n, True)
        if not n:
            return
        for pa, ln in runs:
            self.machine._check_phys_span(pa, ln)
        self.dma_debug.check_device_access(runs, True)
        done = 0
        for pa, ln in runs:
            phys.dma_rw(self.machine._ptr(), pa, cdata + done, ln, True)
            done += ln

    def _bus_runs(self, dma_addr: int, n: int, is_write: bool) -> list[tuple[int, int]]:
        """The physically contiguous (pa, length) runs behind bus bytes
        [dma_addr, dma_addr+n): every page is translated (an IOMMU or a backend's
        own dma_to_phys may scatter them), then runs are coalesced."""
        dma_addr = u64("dma_addr", dma_addr)
        be = self.machine.backend
        if be is not None and hasattr(be, "dma_runs"):   # an IOMMU: translates and faults itself
            if not n:
                return []
            runs: list[tuple[int, int]] = be.dma_runs(self, dma_addr, n, is_write)
        elif be is None or getattr(type(be).dma_to_phys, "linear", False):
            runs = [(self._bus_to_phys(dma_addr), n)]
        else:
            if dma_addr + n > 1 << 64 or n > 1 << 40:
                raise PhysicalAddressError(f"bus range {dma_addr:#x}+{n:#x} is larger than any memory", dma_addr)
            runs = []
            addr, left = dma_addr, n
            while True:
                take = min(PAGE_SIZE - (addr & (PAGE_SIZE - 1)), left)
                pa = self._bus_to_phys(addr)
                if runs and runs[-1][0] + runs[-1][1] == pa:
                    runs[-1] = (runs[-1][0], runs[-1][1] + take)
                else:
                    runs.append((pa, take))
                addr += take
                left -= take
                if left <= 0:
                    break
        for pa, _ln in runs:
            if not 0 <= pa < 1 << 64:
                raise InvalidArgumentError(f"bus address {dma_addr:#x} translates outside physical memory",
                                           dma_addr)
        return runs

    def _bus_to_phys(self, dma_addr: int) -> int:
        dma_addr = u64("dma_addr", dma_addr)
        be = self.machine.backend
        pa = be.dma_to_phys(self, dma_addr) if be else dma_addr
        if not 0 <= pa < 1 << 64:
            raise InvalidArgumentError(f"bus address {dma_addr:#x} translates outside physical memory", dma_addr)
        return pa

    # ---- lifetime ----
    def remove(self, *, force: bool = False) -> None:
        """Detach the device; refuses (DmaLeakError) while DMA buffers are still
        allocated or mapped, unless ``force``.  Its BARs' MMIO space, its ports
        and its name are given back."""
        if self.machine.closed:
            if self.removed:
                return
            raise MachineClosedError(f"machine {self.machine.name} is closed")
        with self.dma_debug.lock:   # no allocation may slip in between the check and the detach
            if self.removed:
                return
            leaks = self.dma_debug.outstanding()
            if leaks and not force:
                msg = f"device {self.name!r} removed with DMA buffers still allocated or mapped: " + "; ".join(leaks)
                if machine_debug(self.machine).mode == "raise":
                    raise DmaLeakError(msg, 0)
                machine_debug(self.machine).violation(self, DmaLeakError, msg, 0)
            self._detach()

    def _closing(self) -> None:
        with self.dma_debug.lock:
            self._detach()

    def _detach(self) -> None:
        if self.removed:
            return
        self.removed = True
        m = self.machine
        self.dma_debug.drop_all_streams()
        hook = getattr(m.backend, "device_removed", None)
        if hook is not None and not m.closed:
            hook(self)   # e.g. an IOMMU gives the device's domain back
        m.bus.detach(self)
        m.port_space.release(self)
        for b in self.bars:
            span = _pow2_at_least(b.size)
            m._remove_region(b.base)
            m.mmio_window.free(b.base, span)

    def __repr__(self) -> str:
        bars = [hex(b.base) for b in self.bars]
        return f"<Device {self.name!r} bars={bars} ports={[hex(p.base) for p in self.ports]}>"


def _dispatch(read: ReadFn | None, write: WriteFn | None, regs: bytearray, offset: int, size: int,
              is_write: bool, value: int) -> int | None:
    if is_write:
        if write is not None:
            write(offset, size, value)
        elif read is None:
            regs[offset:offset + size] = value.to_bytes(size, "little")
        return 0
    if read is not None:
        r: Any = read(offset, size)
        if isinstance(r, bool) or not isinstance(r, int):
            raise InvalidArgumentError(f"device read callback returned {r!r}, not an int")
        return r
    return int.from_bytes(regs[offset:offset + size], "little")
