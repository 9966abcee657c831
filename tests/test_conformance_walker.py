"""The suite's independent page-table walker (dmamap.testing.pagetable): it
must decode what was asked for, in both entry sizes, from raw memory."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

import dmamap
from dmamap import PAGE_SIZE, PgProt
from dmamap.testing.pagetable import walk

MiB = 1 << 20
CACHES = {
    "x86_64": ("WB", "WC", "UC-", "UC", "WP", "WT"),
    "aarch64": ("NORMAL", "NORMAL_TAGGED", "NORMAL_NC", "DEVICE_nGnRnE", "DEVICE_nGnRE"),
}


@pytest.fixture(params=sorted(CACHES))
def bare(request: pytest.FixtureRequest) -> Iterator[dmamap.Machine]:
    m = dmamap.Machine(request.param, ram=64 * MiB)
    try:
        yield m
    finally:
        m.close()


def _map(m: dmamap.Machine, mm: dmamap.AddressSpace, pfn: int, npages: int, cache: str,
         large: bool) -> dmamap.Vma:
    vma = mm.mmap(npages * PAGE_SIZE)
    dmamap.remap_pfn_range(vma, vma.start, pfn, npages * PAGE_SIZE, PgProt.make(m.isa, write=True, cache=cache),
                           large=large)
    return vma


def test_cache_types_4k_and_2m(bare: dmamap.Machine) -> None:
    m = bare
    mm = m.new_address_space()
    ram_pfn = m.ram_base >> 12
    for i, cache in enumerate(CACHES[m.isa]):
        pfn = ram_pfn + 1024 + 1024 * i                   # 4 MiB apart, 2 MiB-aligned
        small = _map(m, mm, pfn, 1, cache, large=False)
        big = _map(m, mm, pfn + 512, 512, cache, large=True)
        e = walk(m, mm.root, small.start + 123)
        assert e is not None and e.level == 0 and e.cache == cache and e.pa == (pfn << 12) + 123
        assert e.special and e.user and e.writable
        b = walk(m, mm.root, big.start + 0x12345)
        assert b is not None and b.level == 1 and b.page_size == 2 * MiB, b
        assert b.cache == cache and b.pa == ((pfn + 512) << 12) + 0x12345
        raw_small = struct.unpack("<Q", m.phys_read(e.entry_pa, 8))[0]
        assert raw_small == e.entry
        if m.isa == "x86_64":   # the PAT bit moves: bit 7 in a 4 KiB PTE, bit 12 in a 2 MiB entry
            pat = cache in ("WP", "WT")
            assert bool(e.entry & (1 << 7)) == pat
            assert b.entry & (1 << 7)                         # PS
            assert bool(b.entry & (1 << 12)) == pat


def test_agrees_with_the_core_and_sees_raw_changes(bare: dmamap.Machine) -> None:
    m = bare
    mm = m.new_address_space()
    page = m.alloc_pages(4)
    vma = mm.mmap(4 * PAGE_SIZE)
    vma.vm_flags_set(dmamap.VmFlags.VM_MIXEDMAP)
    for i in range(4):
        dmamap.vm_insert_page(vma, vma.start + i * PAGE_SIZE, dmamap.Page(m, page.pfn + i))
    for i in range(4):
        va = vma.start + i * PAGE_SIZE + 8
        e, x = walk(m, mm.root, va), mm.translate(va)
        assert e is not None and x is not None
        assert (e.pa, e.cache, e.special, e.user, e.writable, e.entry, e.entry_pa) == \
            (x.pa, x.cache, x.special, x.user, x.writable, x.entry, x.entry_pa)
        assert not e.special                                   # a page descriptor's PTE
    e = walk(m, mm.root, vma.start)
    assert e is not None
    # Corrupt the leaf in raw memory: AArch64 0b01 at level 3 is invalid, x86 P=0 is not present.
    bad = e.entry & ~0b10 if m.isa == "aarch64" else e.entry & ~1
    m.phys_write(e.entry_pa, struct.pack("<Q", bad))
    assert walk(m, mm.root, vma.start) is None
    assert walk(m, mm.root, vma.end + 16 * PAGE_SIZE) is None   # nothing mapped there


def test_kernel_direct_map(bare: dmamap.Machine) -> None:
    m = bare
    kaddr = m.page_offset + 5 * MiB + 0x10
    e = walk(m, m.kernel.root, kaddr)
    assert e is not None and e.pa == m.ram_base + 5 * MiB + 0x10
    assert e.cache == ("WB" if m.isa == "x86_64" else "NORMAL") and not e.user and e.level >= 1
