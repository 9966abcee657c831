"""The software TLB never serves a stale translation, and unmapping gives page-table pages back."""

from __future__ import annotations

import pytest

import dmamap
from dmamap import (
    PAGE_SIZE,
    AlignmentFault,
    NoFaultHandlerError,
    PgProt,
    ProtectionFault,
    SegmentationFault,
    change_protection,
    remap_pfn_range,
    zap_vma_ptes,
)
from dmamap.testing import pagetable

MiB = 1 << 20
GiB = 1 << 30
TLB_SIZE = 512     # entries; a VA and VA + TLB_SIZE pages share a slot


def cached_read(mm: dmamap.AddressSpace, va: int, n: int = 4) -> bytes:
    """Read ``va`` twice and prove the second read was served by the TLB."""
    first = mm.read(va, n)
    hits = mm.stats.tlb_hits
    assert mm.read(va, n) == first
    assert mm.stats.tlb_hits == hits + 1, "the translation is not in the TLB"
    return first


def filled_page(machine: dmamap.Machine, data: bytes) -> dmamap.Page:
    page = machine.alloc_pages()
    machine.phys_write(page.phys_addr, data)
    return page


def test_munmap_flushes_tlb(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """After munmap, reading the old address is SegmentationFault even though the TLB held it."""
    page = filled_page(machine, b"live")
    vma = mm.mmap(PAGE_SIZE)
    remap_pfn_range(vma, vma.start, page.pfn, PAGE_SIZE, vma.vm_page_prot)
    assert cached_read(mm, vma.start + 0) == b"live"
    flushes = mm.stats.tlb_flushes
    mm.munmap(vma)
    assert mm.stats.tlb_flushes > flushes
    with pytest.raises(SegmentationFault):
        mm.read(vma.start, 4)
    with pytest.raises(SegmentationFault):
        mm.write(vma.start, b"dead")
    assert machine.phys_read(page.phys_addr, 4) == b"live"


def test_munmap_of_large_vma_flushes_every_entry(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """A VMA larger than the TLB (2 MiB = 512 pages, mapped by one block) is flushed entirely."""
    vma = mm.mmap(4 * MiB, align=2 * MiB)
    remap_pfn_range(vma, vma.start, machine.ram_base >> 12, 4 * MiB, vma.vm_page_prot, large=True)
    vas = [vma.start + i * 37 * PAGE_SIZE for i in range(4 * MiB // (37 * PAGE_SIZE))]
    mm.touch_list(vas)
    hits = mm.stats.tlb_hits
    mm.touch_list(vas)
    assert mm.stats.tlb_hits == hits + len(vas)          # one read per address, all from the TLB
    mm.munmap(vma)
    for va in vas:
        with pytest.raises(SegmentationFault):
            mm.read(va, 1)


def test_remap_after_munmap_sees_new_pfn(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """Unmap and map the same VA to another page: reads see the new page, never the cached old one."""
    old, new = filled_page(machine, b"old!"), filled_page(machine, b"new!")
    vma = mm.mmap(PAGE_SIZE)
    start = vma.start
    remap_pfn_range(vma, start, old.pfn, PAGE_SIZE, vma.vm_page_prot)
    assert cached_read(mm, start) == b"old!"
    mm.munmap(vma)
    again = mm.mmap(PAGE_SIZE, addr=start)
    remap_pfn_range(again, start, new.pfn, PAGE_SIZE, again.vm_page_prot)
    assert mm.read(start, 4) == b"new!"


def test_zap_vma_ptes_flushes_tlb(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """zap_vma_ptes: the zapped page faults (no handler: NoFaultHandlerError) even though the TLB held it; the
    neighbours stay readable."""
    page = machine.alloc_pages(3)
    vma = mm.mmap(3 * PAGE_SIZE)
    remap_pfn_range(vma, vma.start, page.pfn, len(vma), vma.vm_page_prot)
    for i in range(3):
        cached_read(mm, vma.start + i * PAGE_SIZE)
    zap_vma_ptes(vma, vma.start + PAGE_SIZE, PAGE_SIZE)
    with pytest.raises(NoFaultHandlerError):
        mm.read(vma.start + PAGE_SIZE, 4)
    assert pagetable.walk(machine, mm.root, vma.start + PAGE_SIZE) is None
    mm.read(vma.start, 4)
    mm.read(vma.start + 2 * PAGE_SIZE, 4)


def test_zap_then_fault_maps_new_pfn(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """After zap_vma_ptes the next access runs the fault handler, which may map something else."""
    a, b = filled_page(machine, b"AAAA"), filled_page(machine, b"BBBB")
    vma = mm.mmap(PAGE_SIZE)
    remap_pfn_range(vma, vma.start, a.pfn, PAGE_SIZE, vma.vm_page_prot)
    assert cached_read(mm, vma.start) == b"AAAA"
    vma.set_fault_handler(lambda vmf: dmamap.vmf_insert_pfn(vmf.vma, vmf.address, b.pfn))
    zap_vma_ptes(vma, vma.start, PAGE_SIZE)
    assert mm.read(vma.start, 4) == b"BBBB"


def test_change_protection_flushes_tlb(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """A write-cached translation made read-only by change_protection refuses the next write; made writable
    again it accepts it."""
    page = machine.alloc_pages()
    vma = mm.mmap(PAGE_SIZE)
    remap_pfn_range(vma, vma.start, page.pfn, PAGE_SIZE, vma.vm_page_prot)
    mm.write(vma.start, b"w1")
    hits = mm.stats.tlb_hits
    mm.write(vma.start, b"w2")
    assert mm.stats.tlb_hits == hits + 1
    change_protection(vma, vma.start, PAGE_SIZE, PgProt.make(machine.isa, write=False))
    with pytest.raises(ProtectionFault):
        mm.write(vma.start, b"w3")
    assert mm.read(vma.start, 2) == b"w2"
    change_protection(vma, vma.start, PAGE_SIZE, PgProt.make(machine.isa, write=True))
    mm.write(vma.start, b"w4")
    assert machine.phys_read(page.phys_addr, 2) == b"w4"


def test_change_protection_to_none_flushes_tlb(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """PROT_NONE through change_protection stops reads that the TLB would have served."""
    vma = mm.mmap(PAGE_SIZE)
    remap_pfn_range(vma, vma.start, machine.alloc_pages().pfn, PAGE_SIZE, vma.vm_page_prot)
    cached_read(mm, vma.start)
    change_protection(vma, vma.start, PAGE_SIZE, PgProt.make(machine.isa, read=False))
    with pytest.raises(ProtectionFault):
        mm.read(vma.start, 1)


def test_change_protection_cache_attribute_flushes_tlb() -> None:
    """AArch64: turning a Normal page into Device memory takes effect at once: an unaligned access that the
    TLB's Normal entry allowed is now an AlignmentFault."""
    with dmamap.Machine("aarch64", ram=16 * MiB) as m:
        mm = m.new_address_space()
        vma = mm.mmap(PAGE_SIZE)
        remap_pfn_range(vma, vma.start, m.alloc_pages().pfn, PAGE_SIZE, vma.vm_page_prot)
        mm.read32(vma.start + 2)
        mm.read32(vma.start + 2)
        change_protection(vma, vma.start, PAGE_SIZE, dmamap.pgprot_noncached(vma.vm_page_prot))
        with pytest.raises(AlignmentFault):
            mm.read32(vma.start + 2)


def test_tlb_slot_aliases_stay_correct(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """Two pages that share a TLB slot evict each other but always read their own data, and unmapping one
    does not disturb the other."""
    a, b = filled_page(machine, b"slotA"), filled_page(machine, b"slotB")
    va = mm.mmap(PAGE_SIZE, addr=0x2000_0000)
    vb = mm.mmap(PAGE_SIZE, addr=0x2000_0000 + TLB_SIZE * PAGE_SIZE)
    remap_pfn_range(va, va.start, a.pfn, PAGE_SIZE, va.vm_page_prot)
    remap_pfn_range(vb, vb.start, b.pfn, PAGE_SIZE, vb.vm_page_prot)
    for _ in range(3):
        assert mm.read(va.start, 5) == b"slotA"
        assert mm.read(vb.start, 5) == b"slotB"
    mm.read(va.start, 5)
    mm.munmap(vb)
    assert cached_read(mm, va.start, 5) == b"slotA"
    with pytest.raises(SegmentationFault):
        mm.read(vb.start, 1)


def test_flush_tlb(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """flush_tlb() empties the TLB: the next access is a miss."""
    vma = mm.mmap(PAGE_SIZE)
    remap_pfn_range(vma, vma.start, machine.alloc_pages().pfn, PAGE_SIZE, vma.vm_page_prot)
    cached_read(mm, vma.start)
    st = mm.stats
    mm.flush_tlb()
    mm.read(vma.start, 1)
    after = mm.stats
    assert after.tlb_flushes == st.tlb_flushes + 1
    assert (after.tlb_hits, after.tlb_misses) == (st.tlb_hits, st.tlb_misses + 1)


# ---- table pages go back on unmap ----

def _baseline(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> tuple[int, int, int, dict[int, bytes]]:
    st = machine.stats
    return mm.stats.table_pages, st.table_pages, st.ram_pages_used, pagetable.snapshot(machine, mm.root)


def test_unmap_frees_table_pages(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """Mappings scattered over distant VAs need many table pages; unmapping them all returns every one, and
    the root is all zeros again."""
    base = _baseline(machine, mm)
    assert base[0] == 1
    isa_top = 1 << 47 if machine.isa == "x86_64" else 1 << 39
    addrs = [0x10_0000, 0x4000_0000, 0x8000_0000 + 2 * MiB, isa_top // 2, isa_top - 4 * GiB]
    vmas = []
    for i, a in enumerate(addrs):
        vma = mm.mmap(3 * PAGE_SIZE, addr=a)
        remap_pfn_range(vma, vma.start, (0x40_0000_0000 >> 12) + 16 * i, len(vma), vma.vm_page_prot)
        vmas.append(vma)
    grown = mm.stats.table_pages
    assert grown > 5 and len(pagetable.table_pages(machine, mm.root)) == grown
    assert machine.stats.table_pages == base[1] + grown - 1
    for vma in vmas:
        mm.munmap(vma)
    assert _baseline(machine, mm) == base
    assert set(pagetable.snapshot(machine, mm.root).values()) == {bytes(PAGE_SIZE)}


def test_unmap_large_and_faulted_frees_tables(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """1 GiB + 2 MiB blocks, inserted pages and faulted pages: munmap returns all tables and page references."""
    base = _baseline(machine, mm)
    big = mm.mmap(GiB + 2 * MiB, align=GiB)
    remap_pfn_range(big, big.start, 0x40_0000_0000 >> 12, len(big), big.vm_page_prot, large=True)
    run = machine.alloc_pages(8)
    lazy = mm.mmap(8 * PAGE_SIZE)
    lazy.set_builtin_fault("page", [(run.pfn, 8)])
    mm.touch(lazy.start, 8)
    assert run.mapcount == 1 and dmamap.Page(machine, run.pfn + 7).mapcount == 1
    mm.munmap(big)
    mm.munmap(lazy)
    assert dmamap.Page(machine, run.pfn + 7).mapcount == 0 and run.refcount == 1
    machine.free_pages(run, 8)
    assert _baseline(machine, mm) == base


def test_zap_whole_range_frees_tables(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """zap_vma_ptes of everything a VMA maps frees its now-empty tables while the VMA lives on."""
    base = _baseline(machine, mm)
    vma = mm.mmap(4 * MiB, addr=0x4000_0000)
    remap_pfn_range(vma, vma.start, 0x40_0000_0000 >> 12, len(vma), vma.vm_page_prot)
    assert mm.stats.table_pages > base[0]
    zap_vma_ptes(vma, vma.start, len(vma))
    assert vma.live
    assert _baseline(machine, mm) == base


def test_close_address_space_returns_everything(isa: str) -> None:
    """Closing an address space (user or the kernel's) returns all its table pages, root included."""
    with dmamap.Machine(isa, ram=16 * MiB) as m:
        st = m.stats
        mm = m.new_address_space()
        vma = mm.mmap(2 * PAGE_SIZE)
        remap_pfn_range(vma, vma.start, m.alloc_pages().pfn, len(vma), vma.vm_page_prot)
        mm.close()
        assert (m.stats.table_pages, m.stats.ram_pages_used) == (st.table_pages, st.ram_pages_used + 1)
        kernel_tables = m.kernel.stats.table_pages
        assert kernel_tables == st.table_pages
        m.kernel.close()
        assert m.stats.table_pages == 0
        assert m.stats.ram_pages_used == st.ram_pages_used + 1 - kernel_tables
