"""AArch64 SoC whose coherent DMA pool is on-bus SRAM: no page descriptors,
so user mappings are PFN inserts (lazily by default) or prefaulted, never
page-returning faults.  The SRAM is uncached; user mappings are NORMAL_NC."""

from __future__ import annotations

from dmamap.backends import Backend
from dmamap.policy import CoherentMemory, PioMethod


class SramBackend(Backend):
    name = "sram"
    isa = "aarch64"
    dma_coherent = False
    strict_memtype = False
    pio = PioMethod.WINDOW
    coherent_memory = CoherentMemory.SRAM
    kernel_cache = "NORMAL_NC"
    user_cache = "NORMAL_NC"
    default_strategy = "fault"
    default_sram = 16 << 20
    description = "AArch64, coherent pool in on-bus SRAM without page descriptors"
