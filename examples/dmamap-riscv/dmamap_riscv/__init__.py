"""A third-party dmamap backend: a RISC-V-style SoC.

The SoC's DMA masters do not snoop the CPU caches, so coherent buffers are RAM
remapped uncached (as Linux does with Svpbmt ``NC``), user mappings must be
uncached too, and devices see RAM through a bus window at a different address
than the CPU does.

dmamap emulates two page-table formats, x86-64 and AArch64.  Sv39 and the
AArch64 39-bit format are the same shape (3 levels of 512 entries, 4 KiB
pages, 2 MiB and 1 GiB leaves), so this backend runs on the ``aarch64``
format, with ``NORMAL_NC`` standing in for Svpbmt ``NC``.
"""

from __future__ import annotations

from dmamap.backends import Backend
from dmamap.device import Device

__all__ = ["RiscvBackend"]

#: Devices see RAM (CPU physical 0x4000_0000...) at bus address 0x2000_0000...
BUS_OFFSET = 0x2000_0000


class RiscvBackend(Backend):
    name = "riscv"
    isa = "aarch64"
    dma_coherent = False          # DMA does not snoop: the emulator models a write-back CPU cache
    strict_memtype = False        # mismatched attributes are reported, not trapped
    pio = "window"                # port I/O through a memory-mapped window
    coherent_memory = "remap"     # RAM, remapped uncached for the kernel (cpu_addr is not in the direct map)
    kernel_cache = "NORMAL_NC"
    user_cache = "NORMAL_NC"
    default_strategy = "fault"    # lazy: map on first touch
    dma_offset = BUS_OFFSET
    description = "RISC-V-style SoC (Sv39-shaped tables), non-coherent DMA, bus offset 0x2000_0000"

    def strategy_for(self, is_ram: bool) -> str:
        # Lazy faulting hands out page descriptors, which only RAM has.
        return "fault" if is_ram else "fault-pfn"

    def phys_to_dma(self, dev: Device, pa: int) -> int:
        return pa - BUS_OFFSET

    def dma_to_phys(self, dev: Device, dma_addr: int) -> int:
        return dma_addr + BUS_OFFSET
