"""RISC-V SoC (Sv39 + Svpbmt, QEMU virt memory map) with non-coherent DMA
masters, as many RISC-V SoCs are: coherent buffers are RAM remapped NC into the
vmalloc area (the kernel pointer is not in the direct map), user mappings are
NC too, MMIO is IO, port I/O goes through the PCIe PIO window, and the CPU's
write-back data cache is not snooped by DMA.  Mismatched attributes are
reported, not trapped: Svpbmt leaves them to software."""

from __future__ import annotations

from dmamap.backends import Backend


class RiscvBackend(Backend):
    name = "riscv"
    isa = "riscv64"
    dma_coherent = False
    strict_memtype = False
    pio = "window"
    coherent_memory = "remap"
    kernel_cache = "NC"
    user_cache = "NC"
    default_strategy = "prefault"
    description = "RISC-V Sv39 + Svpbmt, non-coherent DMA, RAM remapped NC, write-back CPU cache"
