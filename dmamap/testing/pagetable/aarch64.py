"""AArch64 VMSAv8-64 stage 1 (Arm ARM D8), 4 KiB granule, 39-bit VA: 3 levels
(lookup starts at level 1), TTBR0 = ``AddressSpace.root`` (TTBR1 for the kernel).

bits[1:0] 0b11 table (levels 1-2) / page (level 3), 0b01 block (levels 1-2,
1 GiB / 2 MiB), 0b01 at level 3 invalid.  AttrIndx [4:2] through Linux's
MAIR_EL1: 0 NORMAL (0xff), 1 NORMAL_TAGGED (0xf0), 2 NORMAL_NC (0x44),
3 DEVICE_nGnRnE (0x00), 4 DEVICE_nGnRE (0x04), unprogrammed slots 0x00.  AP[1]
(bit 6) EL0 access, AP[2] (bit 7) read-only, SH [9:8], AF 10, nG 11, PXN 53,
UXN 54, Linux's software "special" bit 56, output address [47:12] with RES0
bits 49:48.  Table-descriptor controls (PXNTable 59, UXNTable 60, APTable
62:61) apply as the MMU applies them.
"""

from __future__ import annotations

from collections.abc import Callable

from dmamap.testing.pagetable.decoder import Leaf, WalkError, register_decoder

VALID = 1 << 0
AP_EL0 = 1 << 6
AP_RO = 1 << 7
PXN = 1 << 53
UXN = 1 << 54
SPECIAL = 1 << 56
PXN_TABLE = 1 << 59
UXN_TABLE = 1 << 60
AP_TABLE_NO_EL0 = 1 << 61
AP_TABLE_RO = 1 << 62
ADDR = ((1 << 48) - 1) & ~0xFFF          # bits 47:12
RES0_OA = 0x3 << 48                      # bits 49:48 (no FEAT_LPA)
VA_BITS = 39
#: Linux's MAIR_EL1 bytes per AttrIndx; unprogrammed slots read 0x00.
MAIR = (0xFF, 0xF0, 0x44, 0x00, 0x04, 0x00, 0x00, 0x00)
ATTR_NAMES = ("NORMAL", "NORMAL_TAGGED", "NORMAL_NC", "DEVICE_nGnRnE", "DEVICE_nGnRE", "MAIR5", "MAIR6", "MAIR7")
#: What each slot's MAIR byte means (unprogrammed slots are Device-nGnRnE).
MAIR_LAYOUT: tuple[str, ...] = ("NORMAL", "NORMAL_TAGGED", "NORMAL_NC", "DEVICE_nGnRnE", "DEVICE_nGnRE",
               "DEVICE_nGnRnE", "DEVICE_nGnRnE", "DEVICE_nGnRnE")


def _index(va: int, level: int) -> int:
    return (va >> (12 + 9 * level)) & 511


class AArch64:
    isa = "aarch64"
    levels = 3
    user_entries = 512       # the kernel has its own root (TTBR1)
    split_root = False
    cacheable = frozenset({"NORMAL", "NORMAL_TAGGED"})
    device = frozenset({"DEVICE_nGnRnE", "DEVICE_nGnRE", "MAIR5", "MAIR6", "MAIR7"})

    def root_table(self, root: int) -> int:
        return root & ADDR

    def child(self, e: int, level: int) -> int | None:
        return e & ADDR if level > 0 and e & 3 == 3 else None

    def walk(self, read: Callable[[int], int], root: int, va: int) -> Leaf | None:
        if va >> VA_BITS not in (0, (1 << (64 - VA_BITS)) - 1):
            raise WalkError(f"{va:#x} is outside both TTBR0 and TTBR1 ranges of a 39-bit VA")
        table = root & ADDR
        no_el0, read_only, pxn_t, uxn_t = False, False, False, False
        for level in (2, 1, 0):
            slot = table + 8 * _index(va, level)
            e = read(slot)
            if not e & VALID:
                return None
            kind = e & 3
            if level == 0 and kind == 1:
                return None   # 0b01 at level 3 is reserved: translation fault
            if e & RES0_OA:
                raise WalkError(f"RES0 output-address bits 49:48 set in {e:#x}")
            if level > 0 and kind == 3:   # table descriptor
                no_el0 |= bool(e & AP_TABLE_NO_EL0)
                read_only |= bool(e & AP_TABLE_RO)
                pxn_t |= bool(e & PXN_TABLE)
                uxn_t |= bool(e & UXN_TABLE)
                table = e & ADDR
                continue
            size = 1 << (12 + 9 * level)
            base = e & ADDR & ~(size - 1)
            if level > 0 and e & ADDR & (size - 1):
                raise WalkError(f"RES0 bits below the block address set in {e:#x}")
            attr = (e >> 2) & 7
            mair = MAIR[attr]
            # MAIR byte: high nibble 0 -> Device; 0x44 -> Normal non-cacheable; else Normal cacheable.
            device = (mair & 0xF0) == 0
            cacheable = not device and mair != 0x44
            user = bool(e & AP_EL0) and not no_el0
            uxn = bool(e & UXN) or uxn_t
            pxn = bool(e & PXN) or pxn_t
            return Leaf(va=va, pa=base | (va & (size - 1)), page_size=size, entry=e, entry_pa=slot, level=level,
                        cache=ATTR_NAMES[attr], cacheable=cacheable, device=device,
                        writable=not (e & AP_RO) and not read_only, user=user,
                        executable=not uxn if user else not pxn, special=bool(e & SPECIAL), attr_index=attr)
        raise AssertionError("unreachable")


register_decoder(AArch64())
