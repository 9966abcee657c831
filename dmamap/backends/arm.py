"""AArch64 SoC with a non-coherent DMA master: coherent buffers are RAM
remapped NORMAL_NC into the vmalloc area (the kernel pointer is not in the
direct map), user mappings must be NORMAL_NC too, and the CPU's write-back
data cache is not snooped by DMA.  Devices see RAM at bus address
``pa - 0x4000_0000``."""

from __future__ import annotations

from dmamap.backends import Backend
from dmamap.policy import CoherentMemory, PioMethod


class ArmBackend(Backend):
    name = "arm"
    isa = "aarch64"
    dma_coherent = False
    strict_memtype = False   # mismatched attributes are reported, as the architecture does not trap them
    pio = PioMethod.WINDOW
    coherent_memory = CoherentMemory.REMAP
    kernel_cache = "NORMAL_NC"
    user_cache = "NORMAL_NC"
    default_strategy = "prefault"
    dma_offset = 0x4000_0000
    description = "AArch64, non-coherent DMA, RAM remapped NORMAL_NC, write-back CPU cache"
