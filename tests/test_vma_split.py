"""VMA lifecycle (issue 11): partial munmap splitting VMAs as mm/mmap.c
__split_vma / do_vmi_munmap do, with vm_pgoff, fault handlers, memtype
reservations and the mapping's lifetime carried over to the pieces."""

from __future__ import annotations

import pytest

import dmamap
from dmamap import PAGE_SHIFT, PAGE_SIZE, VmFault
from dmamap.errors import AddressRangeError, DmaFreeError, InvalidArgumentError, SegmentationFault

P = PAGE_SIZE
RAM = 16 << 20
PLATFORMS = ("x86", "arm", "sram", "riscv")


def _fill(dev: dmamap.Device, handle: int, pages: int) -> None:
    for i in range(pages):
        dev.dma_write(handle + i * P, bytes([i + 1]) * 4)


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("strategy", ["prefault", "fault"])
def test_partial_munmap_splits(platform: str, strategy: str) -> None:
    """munmap of the middle of a mapping leaves two VMAs: the head as it was, the
    tail with vm_pgoff moved on, both still mapping the right pages; the hole
    is a SegmentationFault."""
    with dmamap.Machine(platform, ram=RAM) as m:
        dev = m.add_device("d")
        buf = dmamap.dma_alloc_coherent(dev, 8 * P)
        _fill(dev, buf.dma_handle, 8)
        mm = m.new_address_space()
        vma = mm.mmap(8 * P, offset=0)
        dmamap.dma_mmap_coherent(dev, vma, *buf, strategy=strategy)
        start = vma.start
        mm.munmap(vma, start + 2 * P, 3 * P)
        head, tail = mm.vmas
        assert (head.start, head.end, tail.start, tail.end) == (start, start + 2 * P, start + 5 * P, start + 8 * P)
        assert head is vma and tail.vm_pgoff == 5 and tail.vm_flags == head.vm_flags
        assert tail.vm_page_prot == head.vm_page_prot
        assert [mm.read8(start + i * P) for i in (0, 1, 5, 6, 7)] == [1, 2, 6, 7, 8]
        for i in (2, 3, 4):
            with pytest.raises(SegmentationFault):
                mm.read8(start + i * P)
        assert mm.count_present(start + 2 * P, 3 * P) == 0


@pytest.mark.parametrize("platform", PLATFORMS)
def test_buffer_stays_mapped_while_a_piece_remains(platform: str) -> None:
    """dma_free_coherent is refused while any piece of its mapping remains."""
    with dmamap.Machine(platform, ram=RAM) as m:
        dev = m.add_device("d")
        buf = dmamap.dma_alloc_coherent(dev, 4 * P)
        mm = m.new_address_space()
        vma = mm.mmap(4 * P)
        dmamap.dma_mmap_coherent(dev, vma, *buf)
        mm.munmap(vma, vma.start, 2 * P)   # the head goes: vma is now the tail piece
        assert not vma.live and len(mm.vmas) == 1 and vma.mapping_live
        with pytest.raises(DmaFreeError):
            dmamap.dma_free_coherent(dev, *buf[2:], *buf[:2])
        for v in mm.vmas:
            mm.munmap(v)
        dmamap.dma_free_coherent(dev, *buf[2:], *buf[:2])


def test_split_keeps_python_fault_handler_and_pgoff() -> None:
    with dmamap.Machine("x86", ram=RAM) as m:
        pages = m.alloc_pages(8)
        mm = m.new_address_space()
        vma = mm.mmap(4 * P, offset=2 * P)
        seen: list[int] = []

        def fault(vmf: VmFault) -> dmamap.Page:
            seen.append(vmf.pgoff)
            return m.pfn_to_page(pages.pfn + vmf.pgoff)

        vma.set_fault_handler(fault)
        tail = mm.split_vma(vma, vma.start + 3 * P)
        assert tail.vm_pgoff == 5 and vma.end == tail.start
        mm.read8(tail.start)
        mm.read8(vma.start + P)
        assert seen == [5, 3]
        assert mm.translate(tail.start).pa == (pages.pfn + 5) << PAGE_SHIFT


def test_x86_reservation_lives_until_last_piece_goes() -> None:
    """Each piece of a split PFN map holds the memtype reservation (track_pfn_copy)."""
    with dmamap.Machine("x86", ram=RAM) as m:
        dev = m.add_device("fb", bars=[4 * P])
        bar = dev.bar(0)[0]
        mm = m.new_address_space()
        vma = mm.mmap(4 * P)
        dmamap.mmio_map(vma, bar, 4 * P, cache="wc")
        mm.munmap(vma, vma.start + P, P)
        assert len(mm.vmas) == 2 and m.memtype_lookup(bar) == "WC"
        mm.munmap(mm.vmas[0])
        assert m.memtype_lookup(bar) == "WC"
        mm.munmap(mm.vmas[0])
        assert m.memtype_lookup(bar) is None


def test_sg_ring_partially_unmapped() -> None:
    """A scatter-gather receive ring: its second half unmapped, the first still
    reads what the device wrote, the freed half faults."""
    with dmamap.Machine("arm", ram=RAM) as m:
        dev = m.add_device("nic")
        sg = dmamap.dma_alloc_coherent_sg(dev, 16 * PAGE_SIZE, max_chunk_pages=3, seed=7)
        handles = [e.dma_handle + (i << PAGE_SHIFT) for e in sg for i in range(e.nr_pages)]
        mm = m.new_address_space()
        vma = mm.mmap(16 * P)
        dmamap.dma_mmap_coherent_sg(dev, vma, sg, strategy="fault")
        mm.munmap(vma, vma.start + 8 * P, 8 * P)
        for i, h in enumerate(handles):
            dev.dma_write(h, bytes([0x40 + i]))
        assert [mm.read8(vma.start + i * P) for i in range(8)] == [0x40 + i for i in range(8)]
        with pytest.raises(SegmentationFault):
            mm.read8(vma.start + 8 * P)


def test_bad_partial_munmap_changes_nothing() -> None:
    with dmamap.Machine("x86", ram=RAM) as m:
        mm = m.new_address_space()
        vma = mm.mmap(4 * P)
        for addr, length, exc in ((vma.start + 1, P, InvalidArgumentError), (vma.start, 0, InvalidArgumentError),
                                  (vma.start + 3 * P, 2 * P, AddressRangeError),
                                  (vma.start - P, P, AddressRangeError)):
            with pytest.raises(exc):
                mm.munmap(vma, addr, length)
        assert mm.vmas == [vma] and len(vma) == 4 * P
        with pytest.raises(InvalidArgumentError):
            mm.split_vma(vma, vma.start)
        mm.munmap(vma, vma.start, 4 * P)   # the whole VMA, no split
        assert mm.vmas == []
