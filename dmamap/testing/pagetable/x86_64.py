"""x86-64 4-level paging (Intel SDM vol. 3 ch. 4), CR3 = ``AddressSpace.root``.

P 0, R/W 1, U/S 2, PWT 3, PCD 4, A 5, D 6, PS 7 (PAT in a 4 KiB PTE), G 8,
Linux's ``_PAGE_SPECIAL`` (software) 9, PAT in a 2 MiB / 1 GiB entry 12, XD/NX
63, address bits 51:12.  Memory type = Linux's PAT MSR layout indexed by
4*PAT + 2*PCD + PWT.  PML4 entries 256..511 map the (sign-extended) upper half.
"""

from __future__ import annotations

from collections.abc import Callable

from dmamap.testing.pagetable.decoder import Leaf, WalkError, register_decoder

P = 1 << 0
RW = 1 << 1
US = 1 << 2
PWT = 1 << 3
PCD = 1 << 4
PS = 1 << 7
PAT_4K = 1 << 7
SPECIAL = 1 << 9
PAT_LARGE = 1 << 12
NX = 1 << 63
ADDR = ((1 << 52) - 1) & ~0xFFF          # bits 51:12
#: Linux's PAT MSR layout, indexed by 4*PAT + 2*PCD + PWT.
PAT_LAYOUT: tuple[str, ...] = ("WB", "WC", "UC-", "UC", "WB", "WP", "UC-", "WT")


def _index(va: int, level: int) -> int:
    return (va >> (12 + 9 * level)) & 511


class X86_64:
    isa = "x86_64"
    levels = 4
    user_entries = 256
    split_root = True
    cacheable = frozenset({"WB", "WP", "WT"})
    device = frozenset({"UC", "UC-"})

    def root_table(self, root: int) -> int:
        return root & ADDR

    def child(self, e: int, level: int) -> int | None:
        if level == 0 or not e & P or (e & PS and level < 3):
            return None
        return e & ADDR

    def walk(self, read: Callable[[int], int], root: int, va: int) -> Leaf | None:
        if va >> 47 not in (0, (1 << 17) - 1):
            raise WalkError(f"{va:#x} is not canonical")
        table = root & ADDR
        writable, user, nx = True, True, False
        for level in (3, 2, 1, 0):
            slot = table + 8 * _index(va, level)
            e = read(slot)
            if not e & P:
                return None
            writable &= bool(e & RW)
            user &= bool(e & US)
            nx |= bool(e & NX)
            if level == 3 and e & PS:
                raise WalkError(f"PS set in a PML4 entry {e:#x} (reserved)")
            if level > 0 and not e & PS:
                table = e & ADDR
                continue
            size = 1 << (12 + 9 * level)
            if level == 0:
                pat = bool(e & PAT_4K)
                base = e & ADDR
            else:
                pat = bool(e & PAT_LARGE)
                base = e & ADDR & ~(size - 1)
                reserved = e & ADDR & (size - 1) & ~PAT_LARGE   # bits 20:13 or 29:13 must be 0
                if reserved:
                    raise WalkError(f"reserved address bits {reserved:#x} set in a {size >> 20} MiB entry {e:#x}")
            idx = 4 * pat + 2 * bool(e & PCD) + bool(e & PWT)
            cache = PAT_LAYOUT[idx]
            return Leaf(va=va, pa=base | (va & (size - 1)), page_size=size, entry=e, entry_pa=slot, level=level,
                        cache=cache, cacheable=cache in self.cacheable, device=cache in self.device,
                        writable=writable, user=user, executable=not nx, special=bool(e & SPECIAL),
                        attr_index=idx)
        raise AssertionError("unreachable")


register_decoder(X86_64())
