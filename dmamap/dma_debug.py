"""DMA-API debugging (Linux's kernel/dma/debug.c, CONFIG_DMA_API_DEBUG): each
device's record of the coherent buffers it allocated, so a free of something
never allocated, a wrong size or handle, a double free, a use after free, a
free while mapped and a removal with buffers outstanding are all named."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dmamap._check import u64
from dmamap.errors import DmaDoubleFreeError, DmaFreeError, DmaUseAfterFreeError
from dmamap.mm import Vma

if TYPE_CHECKING:
    from dmamap.device import Device

__all__ = ["DmaDebug", "DmaRecord"]


@dataclass
class DmaRecord:
    """One live coherent allocation: what the backend returned, and the user
    VMAs that map it."""

    alloc: Any
    size: int
    dma_handle: int
    vmas: set[Vma] = field(default_factory=set)

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
        self.lock = threading.RLock()

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

    def track(self, recs: list[DmaRecord], vma: Vma) -> Callable[[], None]:
        """Record that ``vma`` maps ``recs``; returns the callback that forgets it."""
        with self.lock:
            for r in recs:
                r.vmas.add(vma)

        def untrack() -> None:
            with self.lock:
                for r in recs:
                    r.vmas.discard(vma)

        return untrack

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
        return out
