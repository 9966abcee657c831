"""An independent page-table walker for the conformance suite.

It reads the raw descriptor bytes with :meth:`Machine.phys_read` from
:attr:`AddressSpace.root` and decodes them from the architecture manuals' bit
positions alone -- nothing here calls dmamap's own decoder, so a wrong
attribute cannot hide behind a matching wrong decode.

* **x86-64** (Intel SDM vol. 3 ch. 4): 4 levels, CR3 = root.  P 0, R/W 1,
  U/S 2, PWT 3, PCD 4, PS 7 (PAT in a 4 KiB PTE), ``_PAGE_SPECIAL`` 9, PAT in a
  2 MiB / 1 GiB entry 12, NX 63, address bits 51:12.  Memory type =
  Linux PAT[4*PAT + 2*PCD + PWT] with PAT = 0 WB, 1 WC, 2 UC-, 3 UC, 4 WB,
  5 WP, 6 UC-, 7 WT.
* **AArch64** (VMSAv8-64 stage 1): 4 KiB granule, 39-bit VA, lookup from
  level 1 (3 levels), TTBR = root.  bits[1:0] 0b11 table (levels 1-2) or page
  (level 3), 0b01 block (levels 1-2, 1 GiB / 2 MiB), 0b01 at level 3 invalid.
  AttrIndx [4:2] through Linux's MAIR: 0 NORMAL, 1 NORMAL_TAGGED,
  2 NORMAL_NC, 3 DEVICE_nGnRnE, 4 DEVICE_nGnRE (unprogrammed slots read as
  Device-nGnRnE).  AP[1] (bit 6) EL0 access, AP[2] (bit 7) read-only,
  software "special" bit 56, output address bits 47:12.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dmamap.machine import Machine

__all__ = ["RawEntry", "walk", "CACHEABLE", "DEVICE", "PAT_LAYOUT", "MAIR_LAYOUT"]

PAGE_SHIFT = 12

PAT_LAYOUT = ("WB", "WC", "UC-", "UC", "WB", "WP", "UC-", "WT")
MAIR_LAYOUT = ("NORMAL", "NORMAL_TAGGED", "NORMAL_NC", "DEVICE_nGnRnE", "DEVICE_nGnRE",
               "DEVICE_nGnRnE", "DEVICE_nGnRnE", "DEVICE_nGnRnE")

#: Memory types a CPU may cache (allocate lines for).
CACHEABLE = frozenset({"WB", "WP", "WT", "NORMAL", "NORMAL_TAGGED"})
#: Device / strongly uncached memory types.
DEVICE = frozenset({"UC", "UC-", "DEVICE_nGnRnE", "DEVICE_nGnRE"})

_X86_ADDR = ((1 << 52) - 1) & ~((1 << PAGE_SHIFT) - 1)
_A64_ADDR = ((1 << 48) - 1) & ~((1 << PAGE_SHIFT) - 1)


@dataclass(frozen=True)
class RawEntry:
    """The leaf descriptor that maps one virtual address, decoded independently."""

    va: int
    level: int          #: 0 = 4 KiB page, 1 = 2 MiB, 2 = 1 GiB
    entry: int          #: raw descriptor value
    entry_pa: int       #: physical address of the descriptor
    pa: int             #: physical address ``va`` translates to
    cache: str          #: memory type name (PAT / MAIR slot)
    special: bool
    user: bool
    writable: bool

    @property
    def page_size(self) -> int:
        return 1 << (PAGE_SHIFT + 9 * self.level)

    @property
    def pfn(self) -> int:
        return self.pa >> PAGE_SHIFT

    @property
    def cacheable(self) -> bool:
        return self.cache in CACHEABLE


def _entry(m: Machine, table: int, index: int) -> tuple[int, int]:
    pa = table + 8 * index
    return struct.unpack("<Q", m.phys_read(pa, 8))[0], pa


def _index(va: int, level: int) -> int:
    return (va >> (PAGE_SHIFT + 9 * level)) & 0x1FF


def _walk_x86(m: Machine, root: int, va: int) -> RawEntry | None:
    table = root & _X86_ADDR
    user = writable = True
    for level in (3, 2, 1, 0):
        e, epa = _entry(m, table, _index(va, level))
        if not e & 1:                                   # P
            return None
        user &= bool(e & (1 << 2))                      # U/S must be set at every level
        writable &= bool(e & (1 << 1))
        if level in (1, 2) and e & (1 << 7):            # PS: 2 MiB / 1 GiB page
            span = 1 << (PAGE_SHIFT + 9 * level)
            base = e & _X86_ADDR & ~(span - 1)
            pat = (e >> 12) & 1
            return _x86_leaf(va, level, e, epa, base + (va & (span - 1)), pat, user, writable)
        if level == 0:
            pat = (e >> 7) & 1
            return _x86_leaf(va, 0, e, epa, (e & _X86_ADDR) + (va & 0xFFF), pat, user, writable)
        table = e & _X86_ADDR
    return None   # pragma: no cover - the loop always returns


def _x86_leaf(va: int, level: int, e: int, epa: int, pa: int, pat: int, user: bool, writable: bool) -> RawEntry:
    pcd = (e >> 4) & 1
    pwt = (e >> 3) & 1
    return RawEntry(va=va, level=level, entry=e, entry_pa=epa, pa=pa, cache=PAT_LAYOUT[4 * pat + 2 * pcd + pwt],
                    special=bool(e & (1 << 9)), user=user, writable=writable)


def _walk_a64(m: Machine, root: int, va: int) -> RawEntry | None:
    table = root & _A64_ADDR
    for level in (2, 1, 0):
        e, epa = _entry(m, table, _index(va, level))
        kind = e & 3
        if not kind & 1:
            return None
        if level > 0 and kind == 3:                     # table descriptor
            table = e & _A64_ADDR
            continue
        if level == 0 and kind != 3:                    # 0b01 at level 3 is reserved: invalid
            return None
        span = 1 << (PAGE_SHIFT + 9 * level)
        base = e & _A64_ADDR & ~(span - 1)
        return RawEntry(va=va, level=level, entry=e, entry_pa=epa, pa=base + (va & (span - 1)),
                        cache=MAIR_LAYOUT[(e >> 2) & 7], special=bool(e & (1 << 56)),
                        user=bool(e & (1 << 6)), writable=not e & (1 << 7))
    return None   # pragma: no cover


def walk(machine: Machine, root: int, va: int) -> RawEntry | None:
    """Translate ``va`` through the page tables at ``root`` (CR3 / TTBR) of
    ``machine``'s physical memory; None when no valid leaf maps it."""
    if machine.isa == "x86_64":
        return _walk_x86(machine, root, va)
    if machine.isa == "aarch64":
        return _walk_a64(machine, root, va)
    raise ValueError(f"no walker for ISA {machine.isa!r}")

