"""DMA-API debugging (Linux's kernel/dma/debug.c, CONFIG_DMA_API_DEBUG): each
device's record of the coherent buffers it allocated, so a free of something
never allocated, a wrong size or handle, a double free, a use after free, a
free while mapped and a removal with buffers outstanding are all named.

For streaming mappings it also tracks who owns each buffer (KMSAN-style): the
device from the map or a sync for the device until a sync for the CPU or the
unmap.  The C core refuses cacheable CPU accesses to device-owned ranges;
device DMA is checked here.  Per machine, ``dma_debug_mode`` is ``"raise"``
(each violation raises its own DmaApiError subclass) or ``"record"`` (the call
goes ahead, as a real driver's would, and :func:`dma_debug_report` lists it)."""

from __future__ import annotations

import itertools
import threading
import weakref
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dmamap._binding import phys
from dmamap._check import hex_repr, u64
from dmamap.errors import (
    DmaApiError,
    DmaCpuOwnershipError,
    DmaDeviceOwnershipError,
    DmaDoubleFreeError,
    DmaFreeError,
    DmaUseAfterFreeError,
    InvalidArgumentError,
)
from dmamap.mm import Vma
from dmamap.physmem import PhysicalMemory

if TYPE_CHECKING:
    from dmamap.device import Device

__all__ = ["DmaDebug", "DmaRecord", "StreamMapping", "DmaDebugEvent", "DmaDebugReport", "MachineDmaDebug",
           "machine_debug", "DEBUG_MODES"]

#: The two ways a machine reports DMA API misuse.
DEBUG_MODES = ("raise", "record")
_DIR_NAMES = {0: "DMA_BIDIRECTIONAL", 1: "DMA_TO_DEVICE", 2: "DMA_FROM_DEVICE", 3: "DMA_NONE"}


def dir_name(direction: int) -> str:
    return _DIR_NAMES.get(direction, str(direction))


@dataclass(frozen=True)
class DmaDebugEvent:
    """One recorded violation: the rule (the error class's), its class, the
    device, the address and the full message."""

    rule: str
    error: type[DmaApiError]
    device: str
    addr: int
    message: str

    __repr__ = hex_repr("addr")


@dataclass
class DmaDebugReport:
    """What a machine recorded: every event, and counts per rule."""

    events: list[DmaDebugEvent]

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(e.rule for e in self.events))

    def __len__(self) -> int:
        return len(self.events)

    def __bool__(self) -> bool:
        return bool(self.events)

    def by_error(self, cls: type[DmaApiError]) -> list[DmaDebugEvent]:
        return [e for e in self.events if issubclass(e.error, cls)]

    def summary(self) -> str:
        if not self.events:
            return "DMA-API debug: no violations"
        lines = [f"DMA-API debug: {len(self.events)} violation(s)"]
        for rule, n in sorted(self.counts.items()):
            lines.append(f"  {n:5d}  {rule}")
        for e in self.events:
            lines.append(f"  [{e.device}] {e.error.__name__} at {e.addr:#x}: {e.message}")
        return "\n".join(lines)


class MachineDmaDebug:
    """A machine's DMA-API debug state: the mode, the recorded events and the
    streaming mappings by ownership tag (to name the device of a logged CPU access)."""

    def __init__(self, machine: PhysicalMemory) -> None:
        self._machine = weakref.ref(machine)
        self.mode = "raise"
        self.events: list[DmaDebugEvent] = []
        self.by_tag: dict[int, StreamMapping] = {}
        self.lock = threading.Lock()

    def set_mode(self, mode: str) -> None:
        if mode not in DEBUG_MODES:
            raise InvalidArgumentError(f"dma_debug_mode must be one of {', '.join(DEBUG_MODES)}, not {mode!r}")
        m = self._machine()
        if m is not None:
            phys.dma_own_set_record(m._ptr(), mode == "record")
        self.mode = mode

    def violation(self, dev: Device | None, cls: type[DmaApiError], message: str, addr: int) -> None:
        """Raise ``cls`` (raise mode) or record it (record mode) and return."""
        name = dev.name if dev is not None else "?"
        if self.mode == "raise":
            raise cls(message, addr)
        self._drain_core()   # keep the core's logged CPU accesses in order with this event
        with self.lock:
            self.events.append(DmaDebugEvent(cls.rule, cls, name, addr, message))

    def _drain_core(self) -> None:
        m = self._machine()
        if m is None or m.closed:
            return
        logged, dropped = phys.dma_own_drain(m._ptr())
        with self.lock:
            for pa, start, size, tag, is_write in logged:
                sm = self.by_tag.get(tag)
                dev = sm.dev.name if sm is not None else "?"
                what = "write" if is_write else "read"
                msg = (f"CPU {what} of {pa:#x} inside streaming DMA buffer {start:#x}+{size:#x} the device "
                       f"owns (missing dma_sync_*_for_cpu or use before dma_unmap_*)")
                self.events.append(DmaDebugEvent(DmaCpuOwnershipError.rule, DmaCpuOwnershipError, dev, pa, msg))
            if dropped:
                self.events.append(DmaDebugEvent(DmaCpuOwnershipError.rule, DmaCpuOwnershipError, "?", 0,
                                                 f"{dropped} more CPU accesses to device-owned buffers "
                                                 f"did not fit the core's log"))

    def report(self, *, clear: bool = False) -> DmaDebugReport:
        self._drain_core()
        with self.lock:
            out = DmaDebugReport(list(self.events))
            if clear:
                self.events.clear()
        return out


_machines: weakref.WeakKeyDictionary[PhysicalMemory, MachineDmaDebug] = weakref.WeakKeyDictionary()
_machines_lock = threading.Lock()
_tags = itertools.count(1)


def machine_debug(machine: PhysicalMemory) -> MachineDmaDebug:
    """The DMA-API debug state of ``machine`` (created on first use)."""
    with _machines_lock:
        st = _machines.get(machine)
        if st is None:
            st = _machines[machine] = MachineDmaDebug(machine)
        return st


def _subtract(runs: list[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    out = []
    for a, b in runs:
        if b <= lo or a >= hi:
            out.append((a, b))
            continue
        if a < lo:
            out.append((a, lo))
        if b > hi:
            out.append((hi, b))
    return out


def _add(runs: list[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for a, b in sorted([*runs, (lo, hi)]):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


@dataclass(eq=False)
class StreamMapping:
    """One live streaming mapping (a dma_map_single/page, or one entry of a
    dma_map_sg): its bus range, the physical runs behind it (in bus order),
    direction, and which bytes the device owns (physical intervals)."""

    dev: Device
    kind: str
    dma_addr: int
    size: int
    direction: int
    runs: list[tuple[int, int]]            # (pa, length) in bus order
    sg_nents: int = 0                      # nents passed to dma_map_sg (0: not an sg entry)
    checked: bool = False                  # dma_mapping_error() was called on it
    tag: int = field(default_factory=lambda: next(_tags))
    owned: list[tuple[int, int]] = field(default_factory=list)   # device-owned [pa, end) intervals
    extra: dict[str, Any] = field(default_factory=dict)           # what the backend keeps (bounce slots, IOVAs)

    def phys_of(self, offset: int, length: int) -> list[tuple[int, int]]:
        """The (pa, length) pieces of bus bytes [dma_addr+offset, +length)."""
        return slice_runs(self.runs, offset, length)

    def _set_owned(self, new: list[tuple[int, int]]) -> None:
        m = self.dev.machine
        if m.closed:
            self.owned = new
            return
        for a, b in self.owned:
            phys.dma_own_remove(m._ptr(), a, b - a)
        self.owned = []
        for a, b in new:
            phys.dma_own_add(m._ptr(), a, b - a, self.tag)
            self.owned.append((a, b))

    def give_to_device(self, offset: int, length: int) -> None:
        new = list(self.owned)
        for pa, n in self.phys_of(offset, length):
            new = _add(new, pa, pa + n)
        self._set_owned(new)

    def give_to_cpu(self, offset: int, length: int) -> None:
        new = list(self.owned)
        for pa, n in self.phys_of(offset, length):
            new = _subtract(new, pa, pa + n)
        self._set_owned(new)

    def cpu_owned_overlap(self, pa: int, n: int) -> int | None:
        """The first byte of [pa, pa+n) inside this mapping the device does not own."""
        for rpa, rn in self.runs:
            lo, hi = max(pa, rpa), min(pa + n, rpa + rn)
            if lo >= hi:
                continue
            cur = lo
            for a, b in self.owned:
                if a <= cur < b:
                    cur = b
            if cur < hi:
                return cur
        return None


def slice_runs(runs: list[tuple[int, int]], skip: int, length: int) -> list[tuple[int, int]]:
    """The ``(start, count)`` pieces of units [skip, skip + length) of a list of
    ``(start, count)`` runs laid end to end (pages of a chunk list, bytes of a mapping)."""
    out: list[tuple[int, int]] = []
    for start, n in runs:
        if length <= 0:
            break
        if skip >= n:
            skip -= n
            continue
        take = min(n - skip, length)
        out.append((start + skip, take))
        length -= take
        skip = 0
    return out


@dataclass
class DmaRecord:
    """One live coherent allocation: what the backend returned, and the user
    VMAs that map it."""

    alloc: Any
    size: int
    dma_handle: int
    vmas: set[Vma] = field(default_factory=set)
    #: The allocation as a C chunk array, made on first use by the mmap helpers' prefault.
    cchunks: Any = field(default=None, repr=False, compare=False)

    def mapped(self) -> list[Vma]:
        return [v for v in list(self.vmas) if v.live]


class DmaDebug:
    """Per-device bookkeeping; every read and change holds :attr:`lock`.

    ``live`` maps cpu_addr -> record, ``freed`` cpu_addr -> (size, handle) of
    buffers freed since (a later use of them is a use after free).
    """

    def __init__(self, dev: Device) -> None:
        self.dev = dev
        self.live: dict[int, DmaRecord] = {}
        self.freed: dict[int, tuple[int, int]] = {}
        self.streams: dict[int, StreamMapping] = {}
        self.unmapped: dict[int, tuple[int, int]] = {}   # dma_addr -> (size, direction) of past unmaps
        self.lock = threading.RLock()

    # ---- streaming mappings ----
    def add_stream(self, sm: StreamMapping) -> None:
        md = machine_debug(self.dev.machine)
        with self.lock:
            self.streams[sm.dma_addr] = sm
            self.unmapped.pop(sm.dma_addr, None)
            with md.lock:
                md.by_tag[sm.tag] = sm
        sm.give_to_device(0, sm.size)

    def drop_stream(self, sm: StreamMapping) -> None:
        with self.lock:
            if self.streams.get(sm.dma_addr) is sm:
                del self.streams[sm.dma_addr]
            self.unmapped[sm.dma_addr] = (sm.size, sm.direction)
        sm._set_owned([])

    def find_stream(self, dma_addr: int, size: int) -> StreamMapping | None:
        """The live mapping whose bus range contains [dma_addr, dma_addr+size)."""
        with self.lock:
            sm = self.streams.get(dma_addr)
            if sm is not None:
                return sm
            for sm in self.streams.values():
                if sm.dma_addr <= dma_addr < sm.dma_addr + sm.size:
                    return sm
        return None

    def check_device_access(self, runs: list[tuple[int, int]], is_write: bool) -> None:
        """The device is about to read or write the physical ``runs``: every
        streaming mapping they touch must be device-owned there, and a write may
        not land in a DMA_TO_DEVICE mapping."""
        with self.lock:
            streams = list(self.streams.values())
        if not streams:
            return
        md = machine_debug(self.dev.machine)
        what = "write" if is_write else "read"
        for pa, n in runs:
            for sm in streams:
                at = sm.cpu_owned_overlap(pa, n)
                if at is not None:
                    md.violation(self.dev, DmaDeviceOwnershipError,
                                 f"device {self.dev.name!r} DMA {what} at {at:#x} inside streaming buffer "
                                 f"{sm.dma_addr:#x}+{sm.size:#x} ({sm.kind}, {dir_name(sm.direction)}) the CPU owns "
                                 f"(missing dma_sync_*_for_device)", at)
                elif is_write and sm.direction == 1 and any(
                        max(pa, a) < min(pa + n, a + ln) for a, ln in sm.runs):
                    md.violation(self.dev, DmaDeviceOwnershipError,
                                 f"device {self.dev.name!r} DMA write at {pa:#x} into streaming buffer "
                                 f"{sm.dma_addr:#x}+{sm.size:#x} mapped DMA_TO_DEVICE (read-only for the device)",
                                 pa)

    def drop_all_streams(self) -> None:
        """Forget every streaming mapping (device gone): the CPU may touch the memory again."""
        with self.lock:
            streams = list(self.streams.values())
            self.streams.clear()
        for sm in streams:
            sm._set_owned([])

    def add(self, alloc: Any, size: int, dma_handle: int) -> DmaRecord:
        rec = DmaRecord(alloc, size, dma_handle)
        with self.lock:
            self.live[int(alloc.cpu_addr)] = rec
            self.freed.pop(int(alloc.cpu_addr), None)
        return rec

    def remove(self, cpu_addr: int) -> None:
        with self.lock:
            rec = self.live.pop(int(cpu_addr))
            self.freed[int(cpu_addr)] = (rec.size, rec.dma_handle)

    def lookup(self, what: str, cpu_addr: int, dma_handle: int, size: int | None) -> DmaRecord:
        """The live record of ``cpu_addr``; the specific DMA-debug error otherwise."""
        cpu_addr, dma_handle = u64("cpu_addr", cpu_addr), u64("dma_handle", dma_handle)
        if size is not None:
            size = u64("size", size)
        with self.lock:
            rec = self.live.get(cpu_addr)
            was_freed = cpu_addr in self.freed
        if rec is None:
            if was_freed:
                cls = DmaDoubleFreeError if what.startswith("dma_free_coherent") else DmaUseAfterFreeError
                raise cls(f"{what}: buffer at cpu_addr {cpu_addr:#x} of device {self.dev.name!r} was "
                          f"already freed", cpu_addr)
            raise DmaFreeError(f"{what}: device {self.dev.name!r} never allocated a coherent buffer at "
                               f"cpu_addr {cpu_addr:#x}", cpu_addr)
        if dma_handle != rec.dma_handle:
            raise DmaFreeError(f"{what}: wrong dma_handle {dma_handle:#x} for cpu_addr {cpu_addr:#x} "
                               f"(allocated with {rec.dma_handle:#x})", cpu_addr)
        if size is not None and size != rec.size:
            raise DmaFreeError(f"{what}: wrong size {size:#x} for cpu_addr {cpu_addr:#x} "
                               f"(allocated {rec.size:#x})", cpu_addr)
        return rec

    def track(self, recs: list[DmaRecord], vma: Vma) -> None:
        """Record that ``vma`` maps ``recs`` (the VMA's close forgets it)."""
        with self.lock:
            for r in recs:
                r.vmas.add(vma)

    def forget(self, addrs: list[int], freed_before: dict[int, tuple[int, int]]) -> None:
        """Buffers the caller never saw leave no trace in the freed-buffer history."""
        with self.lock:
            for a in addrs:
                if a in freed_before:
                    self.freed[a] = freed_before[a]
                else:
                    self.freed.pop(a, None)

    def outstanding(self) -> list[str]:
        """One line per buffer still allocated (and how many VMAs map it)."""
        with self.lock:
            items = list(self.live.items())
        out = []
        for cpu, rec in items:
            mapped = rec.mapped()
            state = f"mapped by {len(mapped)} VMA(s)" if mapped else "allocated"
            out.append(f"{rec.size:#x} bytes at cpu_addr {cpu:#x} {state}")
        with self.lock:
            streams = list(self.streams.values())
        for sm in streams:
            out.append(f"streaming mapping ({sm.kind}) of {sm.size:#x} bytes at dma_addr {sm.dma_addr:#x}, "
                       f"{dir_name(sm.direction)}, never unmapped")
        return out
