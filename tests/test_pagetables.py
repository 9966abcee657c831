"""Page tables in emulated RAM, checked against the manuals' bit positions.

Every check decodes raw descriptors read with ``Machine.phys_read`` through the
independent walker in ``dmamap.testing.pagetable`` and compares with ``AddressSpace.translate``.
"""

from __future__ import annotations

import random

import pytest

import dmamap
from dmamap import (
    PAGE_SIZE,
    PgProt,
    change_protection,
    pgprot_cached,
    pgprot_dmacoherent,
    pgprot_noncached,
    pgprot_writecombine,
    remap_pfn_range,
    vm_insert_page,
    zap_vma_ptes,
)
from dmamap.testing import pagetable

MiB = 1 << 20
GiB = 1 << 30
# Physical addresses far above RAM: PTEs may point anywhere in the 48-bit space.
FAR_PA = 0x40_0000_0000


def bit(e: int, n: int) -> int:
    return (e >> n) & 1


def field(e: int, hi: int, lo: int) -> int:
    return (e >> lo) & ((1 << (hi - lo + 1)) - 1)


def table_path(machine: dmamap.Machine, root: int, va: int) -> list[int]:
    """The raw table (non-leaf) descriptors on the way to ``va``'s leaf."""
    out = []
    table = root
    levels = (3, 2, 1) if machine.isa == "x86_64" else (2, 1)
    for level in levels:
        e = pagetable.read_entry(machine, table + 8 * ((va >> (12 + 9 * level)) & 511))
        if machine.isa == "x86_64":
            if not bit(e, 0) or bit(e, 7):
                break
            table = e & pagetable.x86_64.ADDR
        else:
            if field(e, 1, 0) != 3:
                break
            table = e & pagetable.aarch64.ADDR
        out.append(e)
    return out


def test_4k_remap_matches_walker_and_manual_bits(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """A 4 KiB remap of RAM: every byte offset the reference MMU resolves equals translate(), and the raw PTE
    carries present/valid, user, writable, non-exec, special and the right output address."""
    npages = 40
    vma = mm.mmap(npages * PAGE_SIZE)
    page = machine.alloc_pages(npages)
    remap_pfn_range(vma, vma.start, page.pfn, len(vma), vma.vm_page_prot)
    rng = random.Random(1)
    for i in range(npages):
        for off in (0, PAGE_SIZE - 1, rng.randrange(PAGE_SIZE)):
            leaf = pagetable.compare(mm, vma.start + i * PAGE_SIZE + off)
            assert leaf is not None
            assert leaf.page_size == PAGE_SIZE
            assert leaf.pa == page.phys_addr + i * PAGE_SIZE + off
            assert leaf.user and leaf.writable and not leaf.executable and leaf.special and leaf.cacheable
    e = pagetable.walk(machine, mm.root, vma.start).entry  # type: ignore[union-attr]
    if machine.isa == "x86_64":
        assert bit(e, 0) and bit(e, 1) and bit(e, 2)             # P, RW, US
        assert bit(e, 9) and bit(e, 63)                           # _PAGE_SPECIAL, NX
        assert (bit(e, 7), bit(e, 4), bit(e, 3)) == (0, 0, 0)     # PAT index 0: WB
        assert field(e, 51, 12) == page.pfn
    else:
        assert field(e, 1, 0) == 0b11                             # page descriptor
        assert field(e, 4, 2) == 0                                # MAIR slot 0: NORMAL
        assert field(e, 7, 6) == 0b01                             # EL0 access, read/write
        assert field(e, 9, 8) == 0b11                             # inner shareable
        assert bit(e, 10) and bit(e, 11)                          # AF, nG
        assert bit(e, 53) and bit(e, 54) and bit(e, 56)           # PXN, UXN, special
        assert field(e, 47, 12) == page.pfn
    # the addresses just outside the VMA are not mapped
    assert pagetable.compare(mm, vma.start - PAGE_SIZE) is None
    assert pagetable.compare(mm, vma.end) is None


@pytest.mark.parametrize("prot", ["r", "rw", "rx", "rwx"])
def test_permission_bits(machine: dmamap.Machine, mm: dmamap.AddressSpace, prot: str) -> None:
    """vm_page_prot of a shared mapping encodes R/W/X exactly as the manuals place the bits."""
    vma = mm.mmap(2 * PAGE_SIZE, prot=prot)
    remap_pfn_range(vma, vma.start, FAR_PA >> 12, len(vma), vma.vm_page_prot)
    leaf = pagetable.compare(mm, vma.start)
    assert leaf is not None
    e = leaf.entry
    w, x = "w" in prot, "x" in prot
    assert (leaf.writable, leaf.executable, leaf.user) == (w, x, True)
    if machine.isa == "x86_64":
        assert (bit(e, 0), bit(e, 1), bit(e, 2), bit(e, 63)) == (1, int(w), 1, int(not x))
    else:
        assert (bit(e, 6), bit(e, 7)) == (1, int(not w))
        assert (bit(e, 53), bit(e, 54)) == (1, int(not x))      # user pages are never EL1-executable


def test_prot_none_is_not_present(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """PROT_NONE leaves a non-zero but invalid entry: neither MMU translates it."""
    vma = mm.mmap(PAGE_SIZE, prot="")
    remap_pfn_range(vma, vma.start, FAR_PA >> 12, PAGE_SIZE, vma.vm_page_prot)
    assert pagetable.compare(mm, vma.start) is None
    path = table_path(machine, mm.root, vma.start)
    last_table = path[-1] & (pagetable.x86_64.ADDR if machine.isa == "x86_64" else pagetable.aarch64.ADDR)
    raw = pagetable.read_entry(machine, last_table + 8 * ((vma.start >> 12) & 511))
    assert raw != 0 and bit(raw, 0) == 0


@pytest.mark.parametrize("large", [False, True])
def test_x86_pat_bit_position(large: bool) -> None:
    """x86-64: each Linux PAT type lands on PWT/PCD and on PAT bit 7 (4 KiB PTE) or bit 12 (2 MiB entry),
    and the reference decoding 4*PAT+2*PCD+PWT gives the type back."""
    expect = {"WB": 0, "WC": 1, "UC-": 2, "UC": 3, "WP": 5, "WT": 7}
    with dmamap.Machine("x86_64", ram=16 * MiB) as m:
        mm = m.new_address_space()
        span = 2 * MiB if large else PAGE_SIZE
        for i, (cache, idx) in enumerate(expect.items()):
            vma = mm.mmap(span, align=span)
            pa = FAR_PA + i * 2 * MiB
            remap_pfn_range(vma, vma.start, pa >> 12, span, PgProt.make("x86_64", write=True, cache=cache),
                            large=large)
            leaf = pagetable.compare(mm, vma.start + span - 8)
            assert leaf is not None and leaf.cache == cache and leaf.attr_index == idx
            assert leaf.page_size == span
            e = leaf.entry
            pat_bit = 12 if large else 7
            assert (bit(e, pat_bit), bit(e, 4), bit(e, 3)) == (idx >> 2, (idx >> 1) & 1, idx & 1)
            if large:
                assert bit(e, 7) == 1                             # PS
                assert field(e, 51, 21) << 21 == pa               # bit 12 is PAT, not address
            else:
                assert field(e, 51, 12) << 12 == pa


@pytest.mark.parametrize("large", [False, True])
def test_aarch64_attrindx(large: bool) -> None:
    """AArch64: every Linux MAIR slot lands in AttrIndx[4:2] of pages and blocks."""
    expect = {"NORMAL": 0, "NORMAL_TAGGED": 1, "NORMAL_NC": 2, "DEVICE_nGnRnE": 3, "DEVICE_nGnRE": 4}
    with dmamap.Machine("aarch64", ram=16 * MiB) as m:
        mm = m.new_address_space()
        span = 2 * MiB if large else PAGE_SIZE
        for i, (cache, idx) in enumerate(expect.items()):
            vma = mm.mmap(span, align=span)
            pa = FAR_PA + i * 2 * MiB
            remap_pfn_range(vma, vma.start, pa >> 12, span, PgProt.make("aarch64", write=True, cache=cache),
                            large=large)
            leaf = pagetable.compare(mm, vma.start + span - 16)
            assert leaf is not None and leaf.cache == cache and leaf.page_size == span
            e = leaf.entry
            assert field(e, 4, 2) == idx
            assert field(e, 1, 0) == (0b01 if large else 0b11)    # block vs page descriptor
            assert field(e, 47, 21 if large else 12) << (21 if large else 12) == pa


def test_pgprot_helpers_raw_bits(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """pgprot_noncached / writecombine / dmacoherent / cached give the raw bits Linux uses on each ISA, both in
    the PgProt value and in the PTE written to memory."""
    base = PgProt.make(machine.isa, write=True)
    if machine.isa == "x86_64":
        # (PAT, PCD, PWT): UC- = index 2, WC = index 1, x86 dmacoherent falls back to noncached.
        want = {pgprot_noncached: (0, 1, 0), pgprot_writecombine: (0, 0, 1), pgprot_dmacoherent: (0, 1, 0),
                pgprot_cached: (0, 0, 0)}
    else:
        want = {pgprot_noncached: 3, pgprot_writecombine: 2, pgprot_dmacoherent: 2, pgprot_cached: 0}
    for i, (helper, bits) in enumerate(want.items()):
        prot = helper(base.with_cache("UC" if machine.isa == "x86_64" else "DEVICE_nGnRE"))
        vma = mm.mmap(PAGE_SIZE)
        remap_pfn_range(vma, vma.start, (FAR_PA >> 12) + i, PAGE_SIZE, prot)
        leaf = pagetable.compare(mm, vma.start)
        assert leaf is not None
        for raw in (int(prot), leaf.entry):
            if machine.isa == "x86_64":
                assert (bit(raw, 7), bit(raw, 4), bit(raw, 3)) == bits, helper.__name__
            else:
                assert field(raw, 4, 2) == bits, helper.__name__
    if machine.isa == "aarch64":
        nc = pagetable.walk(machine, mm.root, mm.vmas[0].start)
        assert nc is not None and nc.device and not nc.cacheable          # Device-nGnRnE
        wc = pagetable.walk(machine, mm.root, mm.vmas[1].start)
        assert wc is not None and not wc.device and not wc.cacheable      # Normal non-cacheable


def test_large_pages_1g_2m_4k(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """remap_pfn_range(large=True) over 1 GiB + 2 MiB + 3 pages uses one 1 GiB entry, one 2 MiB entry and
    three 4 KiB entries, in the manuals' formats, and every sampled address translates identically."""
    size = GiB + 2 * MiB + 3 * PAGE_SIZE
    vma = mm.mmap(size, align=GiB)
    tables_before = mm.stats.table_pages
    remap_pfn_range(vma, vma.start, FAR_PA >> 12, size, PgProt.make(machine.isa, write=True), large=True)
    st = mm.stats
    assert st.ptes_written == 5
    # x86: PDPT + PD + PT below the root; AArch64: L2 + L3 below the L1 root
    assert st.table_pages - tables_before == (3 if machine.isa == "x86_64" else 2)
    assert len(pagetable.table_pages(machine, mm.root)) == st.table_pages
    expect = [(0, GiB, 2), (GiB, 2 * MiB, 1), (GiB + 2 * MiB, PAGE_SIZE, 0), (GiB + 2 * MiB + 2 * PAGE_SIZE,
                                                                             PAGE_SIZE, 0)]
    for off, page_size, level in expect:
        leaf = pagetable.compare(mm, vma.start + off)
        assert leaf is not None and (leaf.page_size, leaf.level) == (page_size, level)
        assert leaf.pa == FAR_PA + off
        e = leaf.entry
        if machine.isa == "x86_64":
            assert bit(e, 7) == int(level > 0)                    # PS
        else:
            assert field(e, 1, 0) == (0b01 if level else 0b11)
        for t in table_path(machine, mm.root, vma.start + off):
            if machine.isa == "x86_64":
                assert bit(t, 0) and bit(t, 1) and bit(t, 2) and not bit(t, 7) and not bit(t, 63)
            else:
                assert field(t, 1, 0) == 0b11 and field(t, 62, 59) == 0   # no APTable/XNTable limits
    rng = random.Random(7)
    for _ in range(300):
        off = rng.randrange(size)
        leaf = pagetable.compare(mm, vma.start + off)
        assert leaf is not None and leaf.pa == FAR_PA + off
    assert pagetable.compare(mm, vma.end) is None


def test_large_falls_back_when_pa_misaligned(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """A 2 MiB-aligned VA with a PA that is only 4 KiB-aligned gets 4 KiB PTEs only."""
    vma = mm.mmap(2 * MiB, align=2 * MiB)
    remap_pfn_range(vma, vma.start, (FAR_PA >> 12) + 1, 2 * MiB, vma.vm_page_prot, large=True)
    assert mm.stats.ptes_written == 512
    for off in (0, MiB, 2 * MiB - PAGE_SIZE):
        leaf = pagetable.compare(mm, vma.start + off)
        assert leaf is not None and leaf.page_size == PAGE_SIZE and leaf.pa == FAR_PA + PAGE_SIZE + off


def test_zap_inside_block_splits_it(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """Zapping one page of a 2 MiB entry splits it into 512 PTEs with the same attributes, minus one."""
    vma = mm.mmap(2 * MiB, align=2 * MiB)
    prot = pgprot_writecombine(vma.vm_page_prot)
    remap_pfn_range(vma, vma.start, FAR_PA >> 12, 2 * MiB, prot, large=True)
    block = pagetable.walk(machine, mm.root, vma.start)
    assert block is not None and block.page_size == 2 * MiB
    hole = vma.start + 5 * PAGE_SIZE
    zap_vma_ptes(vma, hole, PAGE_SIZE)
    assert pagetable.compare(mm, hole) is None
    for i in range(512):
        va = vma.start + i * PAGE_SIZE
        if va == hole:
            continue
        leaf = pagetable.compare(mm, va + 8)
        assert leaf is not None and leaf.page_size == PAGE_SIZE and leaf.pa == FAR_PA + i * PAGE_SIZE + 8
        assert (leaf.cache, leaf.writable, leaf.user, leaf.special) == (block.cache, block.writable, block.user,
                                                                        block.special)
    assert mm.count_present(vma.start, 2 * MiB) == 511


def test_change_protection_inside_block(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """change_protection on part of a 2 MiB entry rewrites only that part, in raw bits."""
    vma = mm.mmap(2 * MiB, align=2 * MiB)
    remap_pfn_range(vma, vma.start, FAR_PA >> 12, 2 * MiB, vma.vm_page_prot, large=True)
    ro = PgProt.make(machine.isa, write=False)
    change_protection(vma, vma.start + MiB, PAGE_SIZE, ro)
    changed = pagetable.compare(mm, vma.start + MiB)
    kept = pagetable.compare(mm, vma.start + MiB + PAGE_SIZE)
    assert changed is not None and kept is not None
    assert not changed.writable and kept.writable
    assert changed.special and changed.pa == FAR_PA + MiB
    if machine.isa == "x86_64":
        assert bit(changed.entry, 1) == 0 and bit(kept.entry, 1) == 1
    else:
        assert bit(changed.entry, 7) == 1 and bit(kept.entry, 7) == 0


def test_kernel_direct_map(machine: dmamap.Machine) -> None:
    """The kernel's direct map: all of RAM at PAGE_OFFSET, kernel-only, global, write-back, in large pages."""
    k = machine.kernel
    for off in range(0, machine.ram_size, 2 * MiB):
        leaf = pagetable.compare(k, machine.page_offset + off + 0x88)
        assert leaf is not None
        assert leaf.pa == machine.ram_base + off + 0x88
        assert leaf.page_size == 2 * MiB and leaf.cacheable and leaf.writable
        assert not leaf.user and not leaf.executable
        if machine.isa == "x86_64":
            assert bit(leaf.entry, 2) == 0 and bit(leaf.entry, 8) == 1      # supervisor, global
        else:
            assert field(leaf.entry, 7, 6) == 0 and bit(leaf.entry, 11) == 0  # EL1 only, global
    assert pagetable.compare(k, machine.page_offset + machine.ram_size) is None


def test_many_addresses_mixed_space(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """A space mixing remaps, inserted pages, faulted pages and large entries agrees with the reference MMU at
    2000 random addresses, mapped or not."""
    isa = machine.isa
    a = mm.mmap(16 * PAGE_SIZE, prot="rwx")
    remap_pfn_range(a, a.start, FAR_PA >> 12, len(a), pgprot_noncached(a.vm_page_prot))
    b = mm.mmap(8 * PAGE_SIZE, prot="r")
    pages = [machine.alloc_pages() for _ in range(4)]
    for i, p in enumerate(pages):
        vm_insert_page(b, b.start + 2 * i * PAGE_SIZE, p)
    c = mm.mmap(32 * PAGE_SIZE)
    run = machine.alloc_pages(32)
    c.set_builtin_fault("page", [(run.pfn, 32)])
    mm.touch(c.start, 16, PAGE_SIZE * 2)
    d = mm.mmap(4 * MiB, align=2 * MiB)
    remap_pfn_range(d, d.start, (FAR_PA + 2 * GiB) >> 12, 4 * MiB, PgProt.make(isa, write=True), large=True)
    lo, hi = a.start - 4 * PAGE_SIZE, d.end + 4 * PAGE_SIZE
    rng = random.Random(42)
    present = 0
    for _ in range(2000):
        if rng.random() < 0.5:
            vma = rng.choice([a, b, c, d])
            va = rng.randrange(vma.start, vma.end)
        else:
            va = rng.randrange(lo, hi)
        present += pagetable.compare(mm, va) is not None
    assert present > 500
    assert pagetable.walk(machine, mm.root, b.start + PAGE_SIZE) is None            # hole between inserted pages
    ins = pagetable.walk(machine, mm.root, b.start + 2 * PAGE_SIZE)
    assert ins is not None and ins.pfn == pages[1].pfn and not ins.special and not ins.writable
    flt = pagetable.walk(machine, mm.root, c.start + 2 * PAGE_SIZE)
    assert flt is not None and flt.pfn == run.pfn + 2 and not flt.special
    assert pagetable.walk(machine, mm.root, c.start + PAGE_SIZE) is None             # not touched yet


def test_aarch64_kernel_uses_upper_range() -> None:
    """AArch64 kernel addresses (TTBR1 range, top 25 bits set) index the tables by VA bits 38:12 only."""
    with dmamap.Machine("aarch64", ram=16 * MiB) as m:
        va = m.page_offset + 3 * MiB + 0x10
        assert va >> 39 == (1 << 25) - 1
        leaf = pagetable.compare(m.kernel, va)
        assert leaf is not None and leaf.pa == m.ram_base + 3 * MiB + 0x10
