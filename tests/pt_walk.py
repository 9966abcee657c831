"""An independent reference MMU for the tests: walks the raw page-table bytes that
``Machine.phys_read`` returns, using only the architecture manuals' bit positions.

Nothing here imports dmamap's decoder; the only dmamap call is ``phys_read``.

* x86-64 (Intel SDM vol. 3 ch. 4): 4-level paging, CR3 = ``AddressSpace.root``.
  P bit 0, R/W 1, U/S 2, PWT 3, PCD 4, A 5, D 6, PS 7 (PAT in a 4 KiB PTE), G 8,
  _PAGE_SPECIAL (software) 9, PAT in a large entry 12, XD/NX 63, address 12..51.
  Memory type = Linux PAT[4*PAT + 2*PCD + PWT].
* AArch64 (Arm ARM D8, VMSAv8-64 stage 1): 4 KiB granule, 39-bit VA, 3 levels
  (lookup starts at level 1), TTBR = ``AddressSpace.root``.  bits[1:0] 0b11 table
  (levels 1-2) / page (level 3), 0b01 block (levels 1-2), 0b01 at level 3 is
  invalid.  AttrIndx [4:2] through Linux's MAIR, AP [7:6] (bit 6 EL0, bit 7
  read-only), SH [9:8], AF 10, nG 11, PXN 53, UXN 54, software "special" 56,
  output address [47:12].  Hierarchical controls of table descriptors
  (PXNTable 59, UXNTable 60, APTable 62:61) are applied as the MMU would.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass
from typing import Any

PAGE = 4096

# ---- x86-64 ----
X86_P = 1 << 0
X86_RW = 1 << 1
X86_US = 1 << 2
X86_PWT = 1 << 3
X86_PCD = 1 << 4
X86_A = 1 << 5
X86_D = 1 << 6
X86_PS = 1 << 7
X86_PAT_4K = 1 << 7
X86_G = 1 << 8
X86_SPECIAL = 1 << 9
X86_PAT_LARGE = 1 << 12
X86_NX = 1 << 63
X86_ADDR = ((1 << 52) - 1) & ~(PAGE - 1)          # bits 51:12
#: Linux's PAT MSR layout, indexed by 4*PAT + 2*PCD + PWT.
X86_PAT_TABLE = ("WB", "WC", "UC-", "UC", "WB", "WP", "UC-", "WT")
X86_CACHEABLE = {"WB", "WP", "WT"}
X86_DEVICE = {"UC", "UC-"}

# ---- AArch64 ----
A64_VALID = 1 << 0
A64_TABLE = 1 << 1
A64_ATTR_SHIFT = 2
A64_AP_EL0 = 1 << 6
A64_AP_RO = 1 << 7
A64_SH_SHIFT = 8
A64_AF = 1 << 10
A64_NG = 1 << 11
A64_PXN = 1 << 53
A64_UXN = 1 << 54
A64_SPECIAL = 1 << 56
A64_PXN_TABLE = 1 << 59
A64_UXN_TABLE = 1 << 60
A64_AP_TABLE_NO_EL0 = 1 << 61
A64_AP_TABLE_RO = 1 << 62
A64_ADDR = ((1 << 48) - 1) & ~(PAGE - 1)          # bits 47:12
A64_RES0_OA = 0x3 << 48                          # bits 49:48 (no FEAT_LPA)
#: Linux's MAIR_EL1 bytes per AttrIndx; unprogrammed slots read 0x00.
A64_MAIR = {0: 0xFF, 1: 0xF0, 2: 0x44, 3: 0x00, 4: 0x04, 5: 0x00, 6: 0x00, 7: 0x00}
A64_ATTR_NAMES = ("NORMAL", "NORMAL_TAGGED", "NORMAL_NC", "DEVICE_nGnRnE", "DEVICE_nGnRE", "MAIR5", "MAIR6", "MAIR7")
A64_VA_BITS = 39


class WalkError(AssertionError):
    """The tables hold something a real MMU would refuse (reserved bits, bad encoding)."""


@dataclass(frozen=True)
class Leaf:
    """What the reference MMU makes of one virtual address."""

    va: int
    pa: int
    page_size: int
    entry: int          # raw leaf descriptor
    entry_pa: int       # physical address of the leaf descriptor
    level: int          # 0 = 4 KiB, 1 = 2 MiB, 2 = 1 GiB
    cache: str
    cacheable: bool
    device: bool
    writable: bool      # effective, all levels combined
    user: bool          # effective EL0 / CPL3 access
    executable: bool    # for the privilege the page is for (user pages: user exec)
    special: bool
    attr_index: int     # x86 PAT index or AArch64 AttrIndx

    @property
    def pfn(self) -> int:
        return self.pa >> 12


def read_entry(machine: Any, pa: int) -> int:
    """One little-endian 64-bit descriptor from emulated physical memory."""
    return int.from_bytes(machine.phys_read(pa, 8), "little")


def read_table(machine: Any, pa: int) -> list[int]:
    """All 512 descriptors of the table page at ``pa``."""
    return list(struct.unpack("<512Q", machine.phys_read(pa, PAGE)))


def _index(va: int, level: int) -> int:
    return (va >> (12 + 9 * level)) & 511


def _isa(machine: Any) -> str:
    isa = machine.isa
    if isa not in ("x86_64", "aarch64"):
        raise ValueError(f"unknown ISA {isa!r}")
    return str(isa)


def walk(machine: Any, root: int, va: int) -> Leaf | None:
    """Translate ``va`` through the tables at ``root``; None when not present."""
    if _isa(machine) == "x86_64":
        return _walk_x86(machine, root, va)
    return _walk_a64(machine, root, va)


def _walk_x86(machine: Any, root: int, va: int) -> Leaf | None:
    top = va >> 47
    if top not in (0, (1 << 17) - 1):
        raise WalkError(f"{va:#x} is not canonical")
    table = root & X86_ADDR
    writable, user, nx = True, True, False
    for level in (3, 2, 1, 0):
        slot = table + 8 * _index(va, level)
        e = read_entry(machine, slot)
        if not e & X86_P:
            return None
        writable &= bool(e & X86_RW)
        user &= bool(e & X86_US)
        nx |= bool(e & X86_NX)
        leaf = level == 0 or bool(e & X86_PS)
        if level == 3 and e & X86_PS:
            raise WalkError(f"PS set in a PML4 entry {e:#x} (reserved)")
        if not leaf:
            table = e & X86_ADDR
            continue
        size = 1 << (12 + 9 * level)
        if level == 0:
            pat = bool(e & X86_PAT_4K)
            base = e & X86_ADDR
        else:
            pat = bool(e & X86_PAT_LARGE)
            base = e & X86_ADDR & ~(size - 1)
            reserved = e & X86_ADDR & (size - 1) & ~X86_PAT_LARGE   # bits 20:13 or 29:13 must be 0
            if reserved:
                raise WalkError(f"reserved address bits {reserved:#x} set in a {size >> 20} MiB entry {e:#x}")
        idx = 4 * pat + 2 * bool(e & X86_PCD) + bool(e & X86_PWT)
        cache = X86_PAT_TABLE[idx]
        return Leaf(va=va, pa=base | (va & (size - 1)), page_size=size, entry=e, entry_pa=slot, level=level,
                    cache=cache, cacheable=cache in X86_CACHEABLE, device=cache in X86_DEVICE,
                    writable=writable, user=user, executable=not nx, special=bool(e & X86_SPECIAL),
                    attr_index=idx)
    raise AssertionError("unreachable")


def _walk_a64(machine: Any, root: int, va: int) -> Leaf | None:
    top = va >> A64_VA_BITS
    if top not in (0, (1 << (64 - A64_VA_BITS)) - 1):
        raise WalkError(f"{va:#x} is outside both TTBR0 and TTBR1 ranges of a 39-bit VA")
    table = root & A64_ADDR
    no_el0, read_only, pxn_t, uxn_t = False, False, False, False
    for level in (2, 1, 0):
        slot = table + 8 * _index(va, level)
        e = read_entry(machine, slot)
        if not e & A64_VALID:
            return None
        kind = e & 3
        if level == 0 and kind == 1:
            return None   # 0b01 at level 3 is reserved: translation fault
        if e & A64_RES0_OA:
            raise WalkError(f"RES0 output-address bits 49:48 set in {e:#x}")
        if level > 0 and kind == 3:   # table descriptor
            no_el0 |= bool(e & A64_AP_TABLE_NO_EL0)
            read_only |= bool(e & A64_AP_TABLE_RO)
            pxn_t |= bool(e & A64_PXN_TABLE)
            uxn_t |= bool(e & A64_UXN_TABLE)
            table = e & A64_ADDR
            continue
        size = 1 << (12 + 9 * level)
        base = e & A64_ADDR & ~(size - 1)
        if level > 0 and e & A64_ADDR & (size - 1):
            raise WalkError(f"RES0 bits below the block address set in {e:#x}")
        attr = (e >> A64_ATTR_SHIFT) & 7
        mair = A64_MAIR[attr]
        # MAIR byte: high nibble 0 -> Device; 0x44 -> Normal non-cacheable; else Normal cacheable.
        device = (mair & 0xF0) == 0
        cacheable = not device and mair != 0x44
        user = bool(e & A64_AP_EL0) and not no_el0
        uxn = bool(e & A64_UXN) or uxn_t
        pxn = bool(e & A64_PXN) or pxn_t
        return Leaf(va=va, pa=base | (va & (size - 1)), page_size=size, entry=e, entry_pa=slot, level=level,
                    cache=A64_ATTR_NAMES[attr], cacheable=cacheable, device=device,
                    writable=not (e & A64_AP_RO) and not read_only, user=user,
                    executable=not uxn if user else not pxn, special=bool(e & A64_SPECIAL), attr_index=attr)
    raise AssertionError("unreachable")


def table_pages(machine: Any, root: int) -> list[int]:
    """Physical addresses of every table page reachable from ``root`` (root first)."""
    isa = _isa(machine)
    levels = 4 if isa == "x86_64" else 3
    out: list[int] = []

    def visit(pa: int, level: int) -> None:
        out.append(pa)
        if level == 0:
            return
        for e in read_table(machine, pa):
            if isa == "x86_64":
                if e & X86_P and not e & X86_PS:
                    visit(e & X86_ADDR, level - 1)
            elif e & 3 == 3:
                visit(e & A64_ADDR, level - 1)

    visit(root & (X86_ADDR if isa == "x86_64" else A64_ADDR), levels - 1)
    return out


def snapshot(machine: Any, root: int) -> dict[int, bytes]:
    """Raw bytes of every table page reachable from ``root``, keyed by address."""
    return {pa: machine.phys_read(pa, PAGE) for pa in table_pages(machine, root)}


def leaves(machine: Any, root: int, lo: int, hi: int) -> dict[int, Leaf]:
    """Every present translation in [lo, hi), keyed by the mapped region's first VA in the range."""
    out: dict[int, Leaf] = {}
    va = lo
    while va < hi:
        leaf = walk(machine, root, va)
        if leaf is None:
            va += PAGE
            continue
        out[va] = leaf
        va = (va & ~(leaf.page_size - 1)) + leaf.page_size
    return out


def compare(mm: Any, va: int) -> Leaf | None:
    """Walk ``va`` independently and assert ``mm.translate`` agrees field by field."""
    ref = walk(mm.machine, mm.root, va)
    got = mm.translate(va)
    if ref is None:
        assert got is None, f"{va:#x}: dmamap translates to {got} but the reference MMU faults"
        return None
    assert got is not None, f"{va:#x}: reference MMU maps {ref} but dmamap.translate says not present"
    mine = (ref.pa, ref.page_size, ref.entry, ref.entry_pa, ref.cache, ref.cacheable, ref.device, ref.writable,
            ref.user, ref.executable, ref.special)
    theirs = (got.pa, got.page_size, got.entry, got.entry_pa, got.cache, got.cacheable, got.device, got.writable,
              got.user, got.executable, got.special)
    assert mine == theirs, f"{va:#x}: reference {mine} != dmamap {theirs}"
    return ref


# ---- state snapshots for "a failing call changes nothing" ----

#: AddressSpace counters that a failing *access* legitimately moves (it did fault / miss the TLB).
ACCESS_COUNTERS = frozenset({"faults", "tlb_hits", "tlb_misses", "tlb_flushes",
                             # the per-kind fault and walk counters count attempts as "faults" does
                             "faults_page", "faults_pfn", "faults_huge", "faults_python", "page_walks"})


def space_state(mm: Any, *, access: bool = False) -> tuple[dict[int, bytes], dict[str, int], Any]:
    """Raw bytes of all of ``mm``'s table pages (walked from the root), its counters and the machine's.

    With ``access=True`` the access/fault-attempt counters are left out.
    """
    counters = {k: v for k, v in dataclasses.asdict(mm.stats).items() if not (access and k in ACCESS_COUNTERS)}
    return snapshot(mm.machine, mm.root), counters, mm.machine.stats
