"""riscv64 (Sv39 + Svpbmt) from the manual's bit positions, the kernel half
user roots share (x86-64, RISC-V), ISA variants registered from data, and the
x86 physical layout inside 39 address bits."""

from __future__ import annotations

import pytest

import dmamap
from dmamap import PAGE_SIZE, InvalidArgumentError, remap_pfn_range
from dmamap.isa import IsaVariant, MemType, isa_info, register_isa_variant
from dmamap.testing import pagetable

GiB = 1 << 30
MiB = 1 << 20


def test_sv39_leaf_bits_and_satp() -> None:
    with dmamap.Machine("riscv64", ram=16 * MiB) as m:
        mm = m.new_address_space()
        assert mm.root >> 60 == 8                                   # satp MODE = Sv39
        vma = mm.mmap(PAGE_SIZE)
        page = m.alloc_pages()
        remap_pfn_range(vma, vma.start, page.pfn, PAGE_SIZE, dmamap.pgprot_writecombine(vma.vm_page_prot))
        leaf = pagetable.compare(mm, vma.start)
        assert leaf is not None
        e = leaf.entry
        assert e & 0xFF == 0b1101_0111                               # D A - U - W R V
        assert (e >> 10) & ((1 << 44) - 1) == page.pfn               # PPN 53:10
        assert (e >> 61) & 3 == 1 and leaf.cache == "NC"             # Svpbmt NC
        assert e & (1 << 8) and leaf.special                         # _PAGE_SPECIAL
        assert not e & (0x7F << 54)                                  # reserved bits clear


def test_svpbmt_kernel_choices_follow_linux() -> None:
    p = dmamap.PgProt.make("riscv64", write=True)
    assert p.cache == "PMA"
    assert dmamap.pgprot_noncached(p).cache == "IO"
    assert dmamap.pgprot_writecombine(p).cache == "NC"
    assert dmamap.pgprot_dmacoherent(p).cache == "IO"               # generic fallback: pgprot_noncached
    assert int(dmamap.pgprot_noncached(p)) >> 61 == 2


def test_reserved_memory_type_and_bits_are_refused() -> None:
    with dmamap.Machine("riscv64", ram=16 * MiB) as m:
        mm = m.new_address_space()
        vma = mm.mmap(PAGE_SIZE)
        pfn = m.alloc_pages().pfn
        base = int(vma.vm_page_prot) & ~(3 << 61)
        for bad in (base | (3 << 61), base | (1 << 54), base | (1 << 63)):
            with pytest.raises(InvalidArgumentError):
                dmamap.vmf_insert_pfn_prot(vma, vma.start, pfn, bad)
        assert pagetable.walk(m, mm.root, vma.start) is None


def test_sv39_superpages() -> None:
    with dmamap.Machine("riscv64", ram=2 * GiB) as m:
        mm = m.new_address_space()
        vma = mm.mmap(GiB + 2 * MiB + PAGE_SIZE, addr=GiB, align=GiB)
        remap_pfn_range(vma, vma.start, m.ram_base >> 12, len(vma), vma.vm_page_prot, large=True)
        sizes = [pagetable.compare(mm, va).page_size for va in (GiB, 2 * GiB, 2 * GiB + 2 * MiB)]  # type: ignore[union-attr]
        assert sizes == [GiB, 2 * MiB, PAGE_SIZE]


@pytest.mark.parametrize(("isa", "direct_index"), [("x86_64", 273), ("riscv64", None)])
def test_user_roots_share_the_kernel_half(isa: str, direct_index: int | None) -> None:
    with dmamap.Machine(isa, ram=16 * MiB) as m:
        dec = pagetable.decoder_for(m)
        user = m.new_address_space()
        uroot, kroot = dec.root_table(user.root), dec.root_table(m.kernel.root)
        half = dec.user_entries
        assert half == 256
        index = direct_index if direct_index is not None else (m.page_offset >> 30) & 511
        assert pagetable.read_entry(m, uroot + 8 * index) == pagetable.read_entry(m, kroot + 8 * index) != 0
        # a kernel address reaches the same PA through the user root, kernel-only
        kaddr = m.page_address(m.alloc_pages())
        via_user, via_kernel = pagetable.walk(m, user.root, kaddr), pagetable.walk(m, m.kernel.root, kaddr)
        assert via_user is not None and via_kernel is not None
        assert via_user.pa == via_kernel.pa and not via_user.user
        # a kernel mapping made after the user root exists reaches it (vmalloc: a new top-level entry)
        kvma = m.kernel.mmap(PAGE_SIZE, prot="rw")
        remap_pfn_range(kvma, kvma.start, m.alloc_pages().pfn, PAGE_SIZE,
                        dmamap.PgProt.make(isa, write=True, user=False))
        later = pagetable.walk(m, user.root, kvma.start)
        assert later is not None and later == pagetable.walk(m, m.kernel.root, kvma.start)
        # the user space neither counts nor frees the shared tables
        assert user.stats.table_pages == 1
        user.close()
        assert pagetable.walk(m, m.kernel.root, kaddr) is not None
        m.kernel.munmap(kvma)
        other = m.new_address_space()
        assert pagetable.walk(m, other.root, kvma.start) is None


def test_x86_physical_map_fits_39_bits() -> None:
    layout = isa_info("x86_64").layout
    tops = [layout.ram_max, layout.sram_base + layout.sram_max, layout.mmio_base + layout.mmio_size,
            layout.iowin_base + 0x10000]
    assert max(tops) <= 1 << 39
    assert layout.ram_base + layout.ram_max <= layout.sram_base <= layout.mmio_base
    with pytest.raises(InvalidArgumentError, match="192 GiB"):
        dmamap.Machine("x86", ram=layout.ram_max + PAGE_SIZE)


def test_isa_table_comes_from_the_core() -> None:
    assert dmamap.machine.ISAS["x86_64"] == 1 and dmamap.machine.ISAS["aarch64"] == 2
    rv = isa_info("riscv64")
    assert (rv.id, rv.levels, rv.va_bits, rv.cache_names) == (3, 3, 39, ("PMA", "NC", "IO"))
    assert not isa_info("x86_64").faulting_store_partial and isa_info("aarch64").faulting_store_partial


def test_variant_registration_validates() -> None:
    ok = dict(name="rv-test-variant", base="riscv64", mt_mask=3 << 61,
              types=(MemType("C", 0, cacheable=True), MemType("U", 2 << 61, device=True)),
              noncached="U", writecombine="U", dmacoherent="U", cached="C")
    for bad in ({"mt_mask": 1 << 40}, {"base": "x86_64"}, {"cached": "U"}, {"name": ""},
                {"types": (MemType("C", 0, cacheable=True), MemType("D", 0))}):
        with pytest.raises((InvalidArgumentError, TypeError)):
            register_isa_variant(IsaVariant(**{**ok, **bad}))   # type: ignore[arg-type]
    v = register_isa_variant(IsaVariant(**ok))   # type: ignore[arg-type]
    assert register_isa_variant(IsaVariant(**ok)) == v                 # idempotent   # type: ignore[arg-type]
    assert v.base == "riscv64" and v.cache_names == ("C", "U") and v.id >= 64
    with pytest.raises(InvalidArgumentError):
        register_isa_variant(IsaVariant(**{**ok, "cached": "C", "noncached": "C"}))   # type: ignore[arg-type]
