"""RISC-V Sv39 with Svpbmt (privileged spec: "Sv39: Page-Based 39-bit
Virtual-Memory System", "Svpbmt"), ``AddressSpace.root`` = satp.

satp: MODE 63:60 (8 = Sv39), ASID 59:44, root PPN 43:0.  A VA's bits 63:39
equal bit 38.  PTE: V 0, R 1, W 2, X 3, U 4, G 5, A 6, D 7, RSW 9:8 (Linux's
``_PAGE_SPECIAL`` is bit 8), PPN 53:10, reserved 60:54, PBMT 62:61 (0 PMA,
1 NC, 2 IO, 3 reserved), N 63 (Svnapot, unused here: reserved).  V with
R = W = X = 0 points to the next level (A, D, U and PBMT reserved there; at
the last level it is a page fault); W without R is reserved; a superpage leaf
with PPN bits below its size set is misaligned.  Root entries 256..511 map the
upper half.  A variant with other memory-type bits subclasses :class:`Sv39`.
"""

from __future__ import annotations

from collections.abc import Callable

from dmamap.testing.pagetable.decoder import Leaf, WalkError, register_decoder

V, R, W, X, U, G, A, D = (1 << i for i in range(8))
SPECIAL = 1 << 8
PPN_SHIFT = 10
PPN_MASK = (1 << 44) - 1
SATP_SV39 = 8


def _index(va: int, level: int) -> int:
    return (va >> (12 + 9 * level)) & 511


class Sv39:
    isa = "riscv64"
    levels = 3
    user_entries = 256
    split_root = True
    #: the memory-type bits of a leaf, and what each value means: (name, cacheable, device)
    mt_mask = 3 << 61
    memtypes = {0: ("PMA", True, False), 1 << 61: ("NC", False, False), 2 << 61: ("IO", False, True)}
    #: bits a leaf must leave 0: 60:54, and N (Svnapot) which is not in use
    reserved = (0x7F << 54) | (1 << 63)

    @property
    def cacheable(self) -> frozenset[str]:
        return frozenset(n for n, c, _ in self.memtypes.values() if c)

    @property
    def device(self) -> frozenset[str]:
        return frozenset(n for n, _, d in self.memtypes.values() if d)

    def root_table(self, root: int) -> int:
        if root >> 60 != SATP_SV39:
            raise WalkError(f"satp {root:#x} does not select Sv39 (MODE 8)")
        return (root & PPN_MASK) << 12

    def child(self, e: int, level: int) -> int | None:
        if level == 0 or e & (V | R | W | X) != V:
            return None
        return ((e >> PPN_SHIFT) & PPN_MASK) << 12

    def walk(self, read: Callable[[int], int], root: int, va: int) -> Leaf | None:
        top = va >> 38
        if top not in (0, (1 << 26) - 1):
            raise WalkError(f"{va:#x} is not a canonical Sv39 address (bits 63:39 must equal bit 38)")
        table = self.root_table(root)
        for level in (2, 1, 0):
            slot = table + 8 * _index(va, level)
            e = read(slot)
            if not e & V:
                return None
            if e & W and not e & R:
                raise WalkError(f"W without R (reserved) in {e:#x}")
            if not e & (R | X):   # a pointer to the next level
                if level == 0:
                    return None   # no next level: page fault
                if e & (A | D | U) or e & (self.reserved | self.mt_mask):
                    raise WalkError(f"reserved bits set in the non-leaf PTE {e:#x}")
                table = ((e >> PPN_SHIFT) & PPN_MASK) << 12
                continue
            if e & self.reserved:
                raise WalkError(f"reserved bits {e & self.reserved:#x} set in the leaf {e:#x}")
            mt = self.memtypes.get(e & self.mt_mask)
            if mt is None:
                raise WalkError(f"reserved memory-type encoding {e & self.mt_mask:#x} in {e:#x}")
            size = 1 << (12 + 9 * level)
            ppn = (e >> PPN_SHIFT) & PPN_MASK
            if ppn & ((1 << (9 * level)) - 1):
                raise WalkError(f"misaligned {size >> 20} MiB superpage {e:#x}")
            name, cacheable, device = mt
            return Leaf(va=va, pa=(ppn << 12) | (va & (size - 1)), page_size=size, entry=e, entry_pa=slot,
                        level=level, cache=name, cacheable=cacheable, device=device, writable=bool(e & W),
                        user=bool(e & U), executable=bool(e & X), special=bool(e & SPECIAL),
                        attr_index=(e & self.mt_mask) >> (self.mt_mask & -self.mt_mask).bit_length() - 1)
        raise AssertionError("unreachable")


register_decoder(Sv39())
