"""mm.fork() as fork(2)'s dup_mmap / copy_page_range: VM_DONTCOPY left out,
VM_WIPEONFORK empty, PFN maps copied with their memtype reservation
(track_pfn_copy), private RAM copy-on-write in both, vm_ops.open on each copy."""

from __future__ import annotations

import pytest

import dmamap
from dmamap import PAGE_SHIFT, PAGE_SIZE, VmFlags, VmOperations
from dmamap.errors import DmaFreeError, SegmentationFault

P = PAGE_SIZE
RAM = 16 << 20


@pytest.mark.parametrize("platform", ["x86", "arm", "sram", "riscv"])
def test_fork_copies_coherent_mapping(platform: str) -> None:
    """The child sees the same coherent buffer through its copy (same PTEs, same
    attribute); the buffer counts as mapped until both copies go."""
    with dmamap.Machine(platform, ram=RAM) as m:
        dev = m.add_device("d")
        buf = dmamap.dma_alloc_coherent(dev, 2 * P)
        mm = m.new_address_space()
        vma = mm.mmap(2 * P)
        dmamap.dma_mmap_coherent(dev, vma, *buf, strategy="prefault")
        child = mm.fork()
        (cv,) = child.vmas
        assert (cv.start, cv.end, cv.vm_flags, cv.vm_ops) == (vma.start, vma.end, vma.vm_flags, vma.vm_ops)
        assert child.translate(cv.start).pa == mm.translate(vma.start).pa
        assert child.translate(cv.start).cache == mm.translate(vma.start).cache
        dev.dma_write(buf.dma_handle, b"hi")
        assert child.read(cv.start, 2) == b"hi"
        mm.munmap(vma)
        with pytest.raises(DmaFreeError):
            dmamap.dma_free_coherent(dev, *buf[2:], *buf[:2])
        child.close()
        dmamap.dma_free_coherent(dev, *buf[2:], *buf[:2])


def test_fork_dontcopy_and_wipeonfork() -> None:
    with dmamap.Machine("x86", ram=RAM) as m:
        page = m.alloc_pages(1)
        mm = m.new_address_space()
        skip = mm.mmap(P, flags=VmFlags.VM_DONTCOPY)
        wipe = mm.mmap(P, flags=VmFlags.VM_WIPEONFORK)
        keep = mm.mmap(P)
        for v in (skip, wipe, keep):
            dmamap.vm_insert_page(v, v.start, page)
        child = mm.fork()
        assert [v.start for v in child.vmas] == [wipe.start, keep.start]
        assert child.count_present(wipe.start, P) == 0 and child.count_present(keep.start, P) == 1
        with pytest.raises(SegmentationFault):
            child.read8(skip.start)
        assert page.mapcount == 4   # three in the parent, one in the child


def test_fork_private_ram_is_copy_on_write_in_both() -> None:
    with dmamap.Machine("arm", ram=RAM) as m:
        pages = m.alloc_pages(1)
        mm = m.new_address_space()
        vma = mm.mmap(P, shared=False)
        vma.set_fault_handler(lambda vmf: pages)
        mm.write(vma.start, b"parent")   # a private write: an anonymous copy, writable
        anon = mm.translate(vma.start).pa
        child = mm.fork()
        (cv,) = child.vmas
        assert child.translate(cv.start).pa == anon and not mm.translate(vma.start).writable
        child.write(cv.start, b"child!")
        mm.write(vma.start + 6, b"?")
        assert mm.read(vma.start, 7) == b"parent?" and child.read(cv.start, 7)[:6] == b"child!"
        assert child.translate(cv.start).pa != anon


def test_fork_pfn_map_keeps_memtype_reservation() -> None:
    """track_pfn_copy: the child's copy holds the reservation after the parent's goes."""
    with dmamap.Machine("x86", ram=RAM) as m:
        dev = m.add_device("fb", bars=[2 * P])
        bar = dev.bar(0)[0]
        mm = m.new_address_space()
        vma = mm.mmap(2 * P)
        dmamap.mmio_map(vma, bar, 2 * P, cache="wc")
        child = mm.fork()
        mm.munmap(vma)
        assert m.memtype_lookup(bar) == "WC" and child.translate(child.vmas[0].start).cache == "WC"
        child.close()
        assert m.memtype_lookup(bar) is None


def test_fork_calls_open_and_copies_handlers() -> None:
    with dmamap.Machine("x86", ram=RAM) as m:
        pages = m.alloc_pages(2)
        opened: list[dmamap.Vma] = []
        mm = m.new_address_space()
        vma = mm.mmap(2 * P, offset=P)
        vma.vm_ops = VmOperations("drv", open=opened.append,
                                  fault=lambda vmf: m.pfn_to_page(pages.pfn + vmf.pgoff - 1))
        child = mm.fork()
        (cv,) = child.vmas
        assert opened == [cv] and cv.vm_pgoff == 1
        child.read8(cv.start + P)   # shared page mapping: refaults in the child
        assert child.translate(cv.start + P).pa == (pages.pfn + 1) << PAGE_SHIFT
