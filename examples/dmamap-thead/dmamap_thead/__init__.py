"""A third-party dmamap port of an ISA variant: T-Head C906/C910 (XTheadMae).

T-Head's early RISC-V cores predate Svpbmt and encode memory types in PTE
bits 63:59 instead (Linux arch/riscv/include/asm/pgtable-64.h, errata
CONFIG_ERRATA_THEAD_MAE):

    bit 63 SO (strong order), 62 C (cacheable), 61 B (bufferable),
    60 SH (shareable), 59 Sec (trustable)
    PMA = C|B|SH   (_PAGE_PMA_THEAD)      NC = B|SH (_PAGE_NOCACHE_THEAD)
    IO  = SO|SH    (_PAGE_IO_THEAD)

Everything else is Sv39, so the port is data: an :class:`IsaVariant` of
``riscv64`` registered with the core at import (no C compiler needed), a
page-table decoder for the conformance walker (:mod:`dmamap_thead.walker`,
from the same header), and a backend naming the variant as its ISA.
"""

from __future__ import annotations

from dmamap.backends import Backend
from dmamap.isa import IsaVariant, MemType, register_isa_variant

__all__ = ["THEAD_MAE", "TheadBackend"]

SO, C, B, SH, SEC = (1 << 63), (1 << 62), (1 << 61), (1 << 60), (1 << 59)

THEAD_MAE = register_isa_variant(IsaVariant(
    name="riscv64-thead",
    base="riscv64",
    mt_mask=SO | C | B | SH | SEC,
    types=(MemType("PMA", C | B | SH, cacheable=True),
           MemType("NC", B | SH),
           MemType("IO", SO | SH, device=True)),
    noncached="IO",          # pgprot_noncached: _PAGE_IO
    writecombine="NC",       # pgprot_writecombine: _PAGE_NOCACHE
    dmacoherent="IO",        # no arch pgprot_dmacoherent: the generic pgprot_noncached
    cached="PMA",
))

from dmamap_thead import walker  # noqa: E402, F401  (registers the conformance walker's decoder)


class TheadBackend(Backend):
    """A C906-class SoC (Allwinner D1 style): DMA does not snoop the caches, so
    coherent buffers are RAM remapped NC and user mappings are NC too."""

    name = "thead"
    isa = THEAD_MAE.name
    dma_coherent = False
    strict_memtype = False
    pio = "window"
    coherent_memory = "remap"
    kernel_cache = "NC"
    user_cache = "NC"
    default_strategy = "fault"
    description = "T-Head C906/C910 (Sv39 + XTheadMae memory types), non-coherent DMA, RAM remapped NC"

    def strategy_for(self, is_ram: bool) -> str:
        # Lazy faulting hands out page descriptors, which only RAM has.
        return "fault" if is_ram else "fault-pfn"
