"""Backend policies as string enums.

A backend's ``coherent_memory`` and ``pio`` are :class:`CoherentMemory` and
:class:`PioMethod` members; being ``StrEnum``s they compare equal to their
strings, so third-party backends that set plain ``"ram"`` or ``"window"``
keep working.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["CoherentMemory", "PioMethod", "RAM_BACKED"]


class CoherentMemory(StrEnum):
    """What ``dma_alloc_coherent`` hands out on a platform."""

    RAM = "ram"          # direct-mapped RAM
    REMAP = "remap"      # RAM remapped uncached (kernel alias outside the direct map)
    SRAM = "sram"        # on-bus SRAM, no page descriptor

    @property
    def description(self) -> str:
        return _MEMORY_TEXT[self]

    @property
    def has_page_descriptors(self) -> bool:
        return self is not CoherentMemory.SRAM


class PioMethod(StrEnum):
    """How port I/O reaches devices."""

    TRAP = "trap"        # x86 port space, trapped accesses
    WINDOW = "window"    # a memory-mapped I/O window

    @property
    def description(self) -> str:
        return _PIO_TEXT[self]


_MEMORY_TEXT = {CoherentMemory.RAM: "direct-mapped RAM", CoherentMemory.REMAP: "RAM remapped uncached",
                CoherentMemory.SRAM: "on-bus SRAM, no page descriptor"}
_PIO_TEXT = {PioMethod.TRAP: "trapped port space", PioMethod.WINDOW: "memory-mapped I/O window"}

#: Coherent memory kinds allocated from the page allocator.
RAM_BACKED = frozenset({CoherentMemory.RAM, CoherentMemory.REMAP})
