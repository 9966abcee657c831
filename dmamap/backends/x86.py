"""x86-64 PC: DMA snoops the caches; coherent memory is direct-mapped RAM,
mapped write-back everywhere; PAT refuses conflicting memory types; port I/O
is a separate, trapped address space."""

from __future__ import annotations

from dmamap.backends import Backend
from dmamap.policy import CoherentMemory, PioMethod


class X86Backend(Backend):
    name = "x86"
    isa = "x86_64"
    dma_coherent = True
    strict_memtype = True
    pio = PioMethod.TRAP
    coherent_memory = CoherentMemory.RAM
    kernel_cache = "WB"
    user_cache = "WB"
    default_strategy = "prefault"
    description = "x86-64, coherent DMA, direct-mapped RAM, PAT memtype tracking"
