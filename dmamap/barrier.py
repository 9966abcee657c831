"""Memory barriers and the write-combining buffer.

With :func:`set_write_combining`, CPU stores through write-combining mappings
(x86 PAT WC, arm NORMAL_NC, which is also what arm's coherent DMA buffers use)
gather in a small per-CPU buffer of 64-byte lines, merging, and reach memory
only at a barrier (:func:`wmb`, :func:`mb`, :func:`dma_wmb`), after an uncached
access (UC, Device, MMIO, ports: the access itself is not ordered after them),
or when a line is evicted.  So a doorbell rung through an uncached register
right after the CPU wrote a descriptor, without ``wmb()``, lets the device read
the old descriptor.  Cacheable accesses neither gather nor drain."""

from __future__ import annotations

from typing import NamedTuple

from dmamap._binding import phys
from dmamap.errors import InvalidArgumentError
from dmamap.physmem import PhysicalMemory

__all__ = ["set_write_combining", "wmb", "mb", "dma_wmb", "WcbStats", "wcb_stats"]


class WcbStats(NamedTuple):
    """Drains (barriers and uncached accesses that found work or not), stores
    merged into a line already buffered, lines evicted for new ones."""

    drains: int
    merges: int
    evictions: int


def _machine(machine: PhysicalMemory) -> PhysicalMemory:
    if not isinstance(machine, PhysicalMemory):
        raise TypeError(f"expected a Machine, got {type(machine).__name__}")
    return machine


def set_write_combining(machine: PhysicalMemory, entries: int = 4) -> None:
    """Give the CPU a write-combining buffer of ``entries`` lines (0: none, the
    default, where WC stores reach memory at once).  Pending stores are drained first."""
    if isinstance(entries, bool) or not isinstance(entries, int):
        raise TypeError(f"entries must be an int, not {type(entries).__name__}")
    if not 0 <= entries <= 16:
        raise InvalidArgumentError(f"write-combining buffer of {entries} lines: 0 (off) to 16")
    phys.machine_set_wcb(_machine(machine)._ptr(), entries)


def wmb(machine: PhysicalMemory) -> None:
    """Write barrier: every buffered WC store reaches memory before anything after it."""
    phys.wcb_drain(_machine(machine)._ptr())


def mb(machine: PhysicalMemory) -> None:
    """Full barrier (for the model's purposes, as wmb: loads are never buffered)."""
    phys.wcb_drain(_machine(machine)._ptr())


def dma_wmb(machine: PhysicalMemory) -> None:
    """Orders CPU writes to DMA memory before a later write that lets the device look."""
    phys.wcb_drain(_machine(machine)._ptr())


def wcb_stats(machine: PhysicalMemory) -> WcbStats:
    return WcbStats(*phys.wcb_stats(_machine(machine)._ptr()))
