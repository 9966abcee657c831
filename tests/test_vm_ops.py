"""VmOperations (struct vm_operations_struct, issue 11): open/close follow
splits (mm/mmap.c __split_vma calls ->open on the new piece, remove_vma ->close
on each piece that goes), may_split can refuse, fault installs the handler; the
helpers install one standard object per memory kind."""

from __future__ import annotations

import pytest

import dmamap
from dmamap import PAGE_SHIFT, PAGE_SIZE, Vma, VmFault, VmOperations
from dmamap.dma import COHERENT_SG_VM_OPS, COHERENT_VM_OPS, MMIO_VM_OPS, PIO_VM_OPS
from dmamap.errors import DmaFreeError, InvalidArgumentError

P = PAGE_SIZE
RAM = 16 << 20


class Counted:
    """A driver object that counts the VMAs mapping it, as refcounting drivers do."""

    def __init__(self) -> None:
        self.maps = 1
        self.events: list[tuple[str, int, int]] = []

    def open(self, vma: Vma) -> None:
        self.maps += 1
        self.events.append(("open", vma.start, vma.end))

    def close(self, vma: Vma) -> None:
        self.maps -= 1
        self.events.append(("close", vma.start, vma.end))


def test_open_close_follow_splits_and_unmaps() -> None:
    with dmamap.Machine("x86", ram=RAM) as m:
        obj = Counted()
        ops = VmOperations("counted", open=obj.open, close=obj.close)
        mm = m.new_address_space()
        vma = mm.mmap(4 * P)
        vma.vm_ops = ops
        s = vma.start
        mm.munmap(vma, s + P, P)   # two splits, one piece goes
        assert obj.events == [("open", s + P, s + 4 * P), ("open", s + 2 * P, s + 4 * P),
                              ("close", s + P, s + 2 * P)]
        assert obj.maps == 2 and [v.vm_ops for v in mm.vmas] == [ops, ops]
        mm.close()   # exit_mmap closes every piece left
        assert obj.maps == 0


def test_may_split_refuses_with_nothing_changed() -> None:
    with dmamap.Machine("arm", ram=RAM) as m:
        closes: list[Vma] = []

        def no_split(vma: Vma, addr: int) -> None:
            raise InvalidArgumentError(f"this mapping cannot be split at {addr:#x}", addr)

        mm = m.new_address_space()
        vma = mm.mmap(4 * P)
        vma.vm_ops = VmOperations("whole", may_split=no_split, close=closes.append)
        with pytest.raises(InvalidArgumentError):
            mm.munmap(vma, vma.start + P, P)
        assert mm.vmas == [vma] and len(vma) == 4 * P and closes == []
        mm.munmap(vma)   # the whole VMA needs no split
        assert closes == [vma]


def test_vm_ops_fault_installs_the_handler() -> None:
    with dmamap.Machine("x86", ram=RAM) as m:
        pages = m.alloc_pages(2)
        mm = m.new_address_space()
        vma = mm.mmap(2 * P)
        vma.vm_ops = VmOperations("pages", fault=lambda vmf: m.pfn_to_page(pages.pfn + vmf.pgoff))
        assert mm.translate(vma.start) is None
        mm.read8(vma.start + P)
        assert mm.translate(vma.start + P).pa == (pages.pfn + 1) << PAGE_SHIFT
        with pytest.raises(TypeError):
            vma.vm_ops = object()   # type: ignore[assignment]


def test_helpers_install_one_object_per_kind() -> None:
    with dmamap.Machine("arm", ram=RAM) as m:
        dev = m.add_device("d", bars=[P], ports=[(0x3F8, 8)])
        buf = dmamap.dma_alloc_coherent(dev, 2 * P)
        sg = dmamap.dma_alloc_coherent_sg(dev, 4 * PAGE_SIZE, max_chunk_pages=2, seed=1)
        mm = m.new_address_space()
        a, b, c, d = mm.mmap(2 * P), mm.mmap(4 * P), mm.mmap(P), mm.mmap(P)
        dmamap.dma_mmap_coherent(dev, a, *buf)
        dmamap.dma_mmap_coherent_sg(dev, b, sg)
        dmamap.mmio_map(c, dev.bar(0)[0], P)
        dmamap.pio_map(d, 0x3F8, 8)
        assert (a.vm_ops, b.vm_ops, c.vm_ops, d.vm_ops) == (COHERENT_VM_OPS, COHERENT_SG_VM_OPS, MMIO_VM_OPS,
                                                            PIO_VM_OPS)


@pytest.mark.parametrize("platform", ["x86", "arm", "sram", "riscv"])
def test_coherent_buffer_mapped_until_last_piece_closes(platform: str) -> None:
    """The coherent kind's open/close count the pieces: dma_free_coherent is refused
    (the documented choice) while any piece maps the buffer, allowed after."""
    with dmamap.Machine(platform, ram=RAM) as m:
        dev = m.add_device("d")
        buf = dmamap.dma_alloc_coherent(dev, 4 * P)
        mm = m.new_address_space()
        vma = mm.mmap(4 * P)
        dmamap.dma_mmap_coherent(dev, vma, *buf)
        mm.munmap(vma, vma.start + P, 2 * P)
        head, tail = mm.vmas
        mm.munmap(head)
        with pytest.raises(DmaFreeError):
            dmamap.dma_free_coherent(dev, *buf[2:], *buf[:2])
        mm.munmap(tail)
        dmamap.dma_free_coherent(dev, *buf[2:], *buf[:2])


def test_fault_handler_vmf_type() -> None:
    """A VmOperations fault gets the same VmFault as set_fault_handler."""
    with dmamap.Machine("x86", ram=RAM) as m:
        page = m.alloc_pages(1)
        got: list[VmFault] = []
        mm = m.new_address_space()
        vma = mm.mmap(P, offset=3 * P)

        def fault(vmf: VmFault) -> dmamap.Page:
            got.append(vmf)
            return page

        vma.vm_ops = VmOperations("one", fault=fault)
        mm.read8(vma.start)
        assert got[0].vma is vma and got[0].pgoff == 3 and not got[0].write
