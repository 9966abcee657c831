"""An independent page-table walker: the reference MMU of the conformance
suite and of dmamap's own tests.

It reads the raw descriptor bytes with :meth:`Machine.phys_read` from
:attr:`AddressSpace.root` (CR3 / TTBR0 / satp) and decodes them from the
architecture manuals' bit positions alone: one decoder module per ISA
(:mod:`.x86_64`, :mod:`.aarch64`, :mod:`.riscv64`), none of which calls
dmamap's own decoder, so a wrong attribute cannot hide behind a matching wrong
decode.  An ISA variant brings its own decoder and registers it with
:func:`register_decoder`.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

__all__ = [
    "Leaf", "RawEntry", "WalkError", "Decoder", "register_decoder", "decoder_for", "walk", "read_entry",
    "read_table", "table_pages", "present_leaves", "snapshot", "leaves", "compare", "space_state",
    "ACCESS_COUNTERS", "CACHEABLE", "DEVICE", "PAT_LAYOUT", "MAIR_LAYOUT",
]

from dmamap.testing.pagetable import aarch64, riscv64, x86_64  # noqa: F401  (the decoders register themselves)
from dmamap.testing.pagetable.decoder import (
    PAGE,
    PAGE_SHIFT,
    Decoder,
    Leaf,
    RawEntry,
    WalkError,
    decoder_for,
    register_decoder,
)


def read_entry(machine: Any, pa: int) -> int:
    """One little-endian 64-bit descriptor from emulated physical memory."""
    return int.from_bytes(machine.phys_read(pa, 8), "little")


def read_table(machine: Any, pa: int) -> list[int]:
    """All 512 descriptors of the table page at ``pa``."""
    return list(struct.unpack("<512Q", machine.phys_read(pa, PAGE)))


def walk(machine: Any, root: int, va: int) -> Leaf | None:
    """Translate ``va`` through the page tables at ``root`` (CR3 / TTBR0 / satp)
    of ``machine``'s physical memory; None when no valid leaf maps it."""
    return decoder_for(machine).walk(lambda pa: read_entry(machine, pa), root, va)


def _is_kernel(machine: Any, root: int, kernel: bool | None) -> bool:
    if kernel is None:   # by default, the machine's kernel root is the only kernel one
        k = getattr(machine, "kernel", None)
        return k is not None and not machine.closed and root == k.root
    return kernel


def _root_span(dec: Decoder, kernel: bool) -> range:
    """Root indices to visit: all, or the user half of a user root (whose kernel
    half is the kernel's own tables, shared)."""
    if kernel or dec.user_entries >= 512:
        return range(512)
    return range(dec.user_entries)


def table_pages(machine: Any, root: int, *, kernel: bool | None = None) -> list[int]:
    """Physical addresses of every table page reachable from ``root`` (root first).
    A user root's shared kernel half is left out (``kernel``: whether ``root`` is a
    kernel root; by default, whether it is the machine's kernel root)."""
    dec = decoder_for(machine)
    kernel = _is_kernel(machine, root, kernel)
    out: list[int] = []

    def visit(pa: int, level: int, span: range) -> None:
        out.append(pa)
        if level == 0:
            return
        entries = read_table(machine, pa)
        for i in span:
            child = dec.child(entries[i], level)
            if child is not None:
                visit(child, level - 1, range(512))

    visit(dec.root_table(root), dec.levels - 1, _root_span(dec, kernel))
    return out


def present_leaves(machine: Any, root: int, *, kernel: bool | None = None) -> list[tuple[int, int, int]]:
    """``(va, size, raw entry)`` of every non-empty leaf slot reachable from ``root``,
    the user half only for a user root (``kernel`` as for :func:`table_pages`)."""
    dec = decoder_for(machine)
    kernel = _is_kernel(machine, root, kernel)
    out: list[tuple[int, int, int]] = []
    top = dec.levels - 1

    def visit(pa: int, level: int, base: int, span: range) -> None:
        entries = read_table(machine, pa)
        for i in span:
            e = entries[i]
            if not e:
                continue
            va = base + (i << (PAGE_SHIFT + 9 * level))
            if level == top and (i >= 256 and dec.split_root or kernel and not dec.split_root):
                va |= -1 << (PAGE_SHIFT + 9 * (top + 1)) & ((1 << 64) - 1)   # an upper-half VA
            child = dec.child(e, level) if level > 0 else None
            if child is not None:
                visit(child, level - 1, va, range(512))
            else:
                out.append((va, 1 << (PAGE_SHIFT + 9 * level), e))

    visit(dec.root_table(root), top, 0, _root_span(dec, kernel))
    return out


def snapshot(machine: Any, root: int, *, kernel: bool | None = None) -> dict[int, bytes]:
    """Raw bytes of every table page reachable from ``root``, keyed by address
    (``kernel`` as for :func:`table_pages`; a user root's shared kernel half reads as zeros)."""
    dec = decoder_for(machine)
    kernel = _is_kernel(machine, root, kernel)
    out = {pa: machine.phys_read(pa, PAGE) for pa in table_pages(machine, root, kernel=kernel)}
    top = dec.root_table(root)
    if not kernel and dec.user_entries < 512:   # a user root's kernel half is the kernel's state
        out[top] = out[top][:8 * dec.user_entries] + bytes(8 * (512 - dec.user_entries))
    return out


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


#: AddressSpace counters that a failing *access* legitimately moves (it did fault / miss the TLB).
ACCESS_COUNTERS = frozenset({"faults", "tlb_hits", "tlb_misses", "tlb_flushes",
                             # the per-kind fault and walk counters count attempts as "faults" does
                             "faults_page", "faults_pfn", "faults_huge", "faults_python", "page_walks"})


def space_state(mm: Any, *, access: bool = False) -> tuple[dict[int, bytes], dict[str, int], Any]:
    """Raw bytes of all of ``mm``'s table pages (walked from the root), its counters and the machine's,
    for "a failing call changes nothing".  With ``access=True`` the access/fault-attempt counters are left out.
    """
    counters = {k: v for k, v in dataclasses.asdict(mm.stats).items() if not (access and k in ACCESS_COUNTERS)}
    return snapshot(mm.machine, mm.root), counters, mm.machine.stats



PAT_LAYOUT: tuple[str, ...] = x86_64.PAT_LAYOUT
MAIR_LAYOUT: tuple[str, ...] = aarch64.MAIR_LAYOUT
#: Memory types a CPU may cache, on every built-in ISA.
CACHEABLE = frozenset().union(*(d.cacheable for d in (aarch64.AArch64(), riscv64.Sv39(), x86_64.X86_64())))
#: Device / strongly uncached memory types, on every built-in ISA.
DEVICE = frozenset().union(*(d.device for d in (aarch64.AArch64(), riscv64.Sv39(), x86_64.X86_64())))
