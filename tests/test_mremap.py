"""mremap (mm/mremap.c): growing in place, moving with the PTEs (move_ptes:
page references and mappings unchanged), shrinking as a partial munmap, and
vma_to_resize's refusal to grow a VM_DONTEXPAND / VM_PFNMAP VMA."""

from __future__ import annotations

import pytest

import dmamap
from dmamap import PAGE_SHIFT, PAGE_SIZE, VmOperations
from dmamap.errors import InvalidArgumentError, MmapError, OutOfMemoryError, SegmentationFault

P = PAGE_SIZE
RAM = 16 << 20


def test_grow_in_place_and_fault_in_the_new_part() -> None:
    with dmamap.Machine("x86", ram=RAM) as m:
        pages = m.alloc_pages(4)
        mm = m.new_address_space()
        vma = mm.mmap(2 * P)
        vma.set_fault_handler(lambda vmf: m.pfn_to_page(pages.pfn + vmf.pgoff))
        start = vma.start
        mm.read8(start)
        assert mm.mremap(vma, 4 * P) is vma and (vma.start, len(vma)) == (start, 4 * P)
        mm.read8(start + 3 * P)
        assert mm.translate(start + 3 * P).pa == (pages.pfn + 3) << PAGE_SHIFT


@pytest.mark.parametrize("platform", ["x86", "arm", "riscv"])
def test_move_keeps_pages_and_counts(platform: str) -> None:
    """No room after the VMA: it moves, PTEs and all; every page keeps its
    refcount and mapcount; the old range faults."""
    with dmamap.Machine(platform, ram=RAM) as m:
        pages = m.alloc_pages(3)
        mm = m.new_address_space()
        vma = mm.mmap(3 * P)
        blocker = mm.mmap(P, addr=vma.end + P)   # pins the range after it
        for i in range(3):
            dmamap.vm_insert_page(vma, vma.start + i * P, m.pfn_to_page(pages.pfn + i))
        mm.write(vma.start, b"abc")
        counts = [(m.pfn_to_page(pages.pfn + i).refcount, m.pfn_to_page(pages.pfn + i).mapcount) for i in range(3)]
        old = vma.start
        with pytest.raises(OutOfMemoryError):
            mm.mremap(vma, 8 * P, may_move=False)
        assert vma.start == old and mm.read(old, 3) == b"abc"
        mm.mremap(vma, 8 * P)
        assert vma.start != old and len(vma) == 8 * P and blocker.live
        assert mm.read(vma.start, 3) == b"abc"
        assert [mm.translate(vma.start + i * P).pa for i in range(3)] == [(pages.pfn + i) << PAGE_SHIFT
                                                                          for i in range(3)]
        assert [(m.pfn_to_page(pages.pfn + i).refcount, m.pfn_to_page(pages.pfn + i).mapcount)
                for i in range(3)] == counts
        with pytest.raises(SegmentationFault):
            mm.read8(old)
        mm.munmap(vma)
        assert all(m.pfn_to_page(pages.pfn + i).mapcount == 0 for i in range(3))


def test_pfnmap_may_not_grow_but_may_shrink() -> None:
    """vma_to_resize: growing a VM_DONTEXPAND / VM_PFNMAP VMA is -EFAULT (MmapError);
    shrinking unmaps the tail, as munmap."""
    with dmamap.Machine("arm", ram=RAM) as m:
        dev = m.add_device("d")
        buf = dmamap.dma_alloc_coherent(dev, 4 * P)
        mm = m.new_address_space()
        vma = mm.mmap(4 * P)
        dmamap.dma_mmap_coherent(dev, vma, *buf, strategy="prefault")
        with pytest.raises(MmapError):
            mm.mremap(vma, 5 * P)
        assert len(vma) == 4 * P and mm.count_present(vma.start, 4 * P) == 4
        mm.mremap(vma, 2 * P)
        assert len(vma) == 2 * P and len(mm.vmas) == 1
        with pytest.raises(SegmentationFault):
            mm.read8(vma.start + 2 * P)


def test_vm_ops_mremap_may_refuse() -> None:
    with dmamap.Machine("x86", ram=RAM) as m:
        mm = m.new_address_space()
        vma = mm.mmap(P)
        seen = []

        def no(v: dmamap.Vma) -> None:
            seen.append(v)
            raise InvalidArgumentError("fixed-size mapping", v.start)

        vma.vm_ops = VmOperations("fixed", mremap=no)
        with pytest.raises(InvalidArgumentError):
            mm.mremap(vma, 2 * P)
        assert seen == [vma] and len(vma) == P
