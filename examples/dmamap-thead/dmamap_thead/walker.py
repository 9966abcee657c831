"""The conformance walker's decoder for XTheadMae: Sv39 with memory types in
bits 63:59 (SO, C, B, SH, Sec) instead of Svpbmt's 62:61, per Linux's
``_PAGE_*_THEAD`` definitions; bits 58:54 stay reserved."""

from __future__ import annotations

from dmamap.testing.pagetable import register_decoder
from dmamap.testing.pagetable.riscv64 import Sv39

SO, C, B, SH, SEC = (1 << 63), (1 << 62), (1 << 61), (1 << 60), (1 << 59)


class XTheadMae(Sv39):
    isa = "riscv64-thead"
    mt_mask = SO | C | B | SH | SEC
    memtypes = {C | B | SH: ("PMA", True, False), B | SH: ("NC", False, False), SO | SH: ("IO", False, True)}
    reserved = 0x1F << 54


register_decoder(XTheadMae())
