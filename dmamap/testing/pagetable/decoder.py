"""The decoder interface of the reference walker: what one ISA's page-table
format module provides, the leaf it returns, and the registry of decoders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["PAGE_SHIFT", "PAGE", "WalkError", "Leaf", "RawEntry", "Decoder", "register_decoder", "decoder_for"]

PAGE_SHIFT = 12
PAGE = 1 << PAGE_SHIFT


class WalkError(AssertionError):
    """The tables hold something a real MMU would refuse (reserved bits, bad encoding)."""


@dataclass(frozen=True)
class Leaf:
    """What the reference MMU makes of one virtual address."""

    va: int
    pa: int             #: physical address ``va`` translates to
    page_size: int
    entry: int          #: raw leaf descriptor
    entry_pa: int       #: physical address of the leaf descriptor
    level: int          #: 0 = 4 KiB page, 1 = 2 MiB, 2 = 1 GiB
    cache: str          #: memory type name (PAT entry, MAIR slot, Svpbmt type...)
    cacheable: bool
    device: bool
    writable: bool      #: effective, all levels combined
    user: bool          #: effective EL0 / CPL3 / U-mode access
    executable: bool    #: for the privilege the page is for (user pages: user exec)
    special: bool       #: Linux's software _PAGE_SPECIAL bit
    attr_index: int     #: x86 PAT index, AArch64 AttrIndx, RISC-V memory-type field value

    @property
    def pfn(self) -> int:
        return self.pa >> PAGE_SHIFT


#: The name the conformance suite has always used for a walked leaf.
RawEntry = Leaf


class Decoder(Protocol):
    """One ISA's page-table format, decoded from its manual."""

    isa: str
    levels: int
    #: root-table entries [user_entries, 512) belong to the kernel half (the whole root when 512)
    user_entries: int
    #: one root maps both halves: entries 256..511 are sign-extended (upper) VAs
    split_root: bool

    @property
    def cacheable(self) -> frozenset[str]:
        """Memory types a CPU may cache."""

    @property
    def device(self) -> frozenset[str]:
        """Device / strongly-ordered uncached memory types."""

    def root_table(self, root: int) -> int:
        """Physical address of the root table named by the root register value."""

    def child(self, e: int, level: int) -> int | None:
        """The next-level table a table descriptor points to; None for a leaf or invalid entry."""

    def walk(self, read: Any, root: int, va: int) -> Leaf | None:
        """Translate ``va``; ``read(pa)`` returns the 64-bit descriptor at ``pa``."""


_DECODERS: dict[str, Decoder] = {}


def register_decoder(decoder: Decoder) -> None:
    """Make ``decoder`` the walker of machines whose ``isa`` is ``decoder.isa``."""
    _DECODERS[decoder.isa] = decoder


def decoder_for(machine: Any) -> Decoder:
    isa = machine.isa
    if isa not in _DECODERS:
        raise ValueError(f"no page-table decoder for ISA {isa!r}; known: {', '.join(_DECODERS)} "
                         f"(a variant registers one with dmamap.testing.pagetable.register_decoder)")
    return _DECODERS[isa]
