"""dma_alloc_wc / dma_mmap_wc / dma_mmap_attrs (DMA_ATTR_WRITE_COMBINE) and
dma_mmap_pages, following kernel/dma/mapping.c (dma_pgprot, dma_mmap_pages)."""

from __future__ import annotations

import pytest

import dmamap
from dmamap import PAGE_SIZE

#: user memory type of dma_mmap_wc: a coherent device keeps the VMA's (x86 WB,
#: as dma_pgprot returns prot unchanged); elsewhere pgprot_writecombine.
WC_USER = {"x86": "WB", "arm": "NORMAL_NC", "sram": "NORMAL_NC", "riscv": "NC"}


def test_dma_mmap_wc_user_attribute_matches_the_kernel_alias(m: dmamap.Machine, plat: str) -> None:
    dev = m.add_device("fb")
    mm = m.new_address_space()
    buf = dmamap.dma_alloc_wc(dev, 3 * PAGE_SIZE)
    vma = mm.mmap(3 * PAGE_SIZE)
    dmamap.dma_mmap_wc(dev, vma, *buf, strategy="prefault")
    t = mm.translate(vma.start + PAGE_SIZE)
    assert t.cache == WC_USER[plat]
    assert t.cache == m.kernel.translate(int(buf.cpu_addr)).cache   # one memory type, no alias
    assert m.attribute_reports == []
    mm.write32(vma.start + PAGE_SIZE, 0xF00D)
    assert m.kernel.read32(buf.cpu_addr + PAGE_SIZE) == 0xF00D
    assert dev.dma_read(buf.dma_handle + PAGE_SIZE, 4) == (0xF00D).to_bytes(4, "little")   # seen by the device
    dmamap.dma_munmap_coherent(vma)
    dmamap.dma_free_wc(dev, *buf[2:], *buf[:2])  # (size, cpu_addr, dma_handle)


def test_dma_mmap_attrs_without_wc_is_dma_mmap_coherent(m: dmamap.Machine) -> None:
    dev = m.add_device("d")
    mm = m.new_address_space()
    buf = dmamap.dma_alloc_attrs(dev, PAGE_SIZE, 0)
    a, b = mm.mmap(PAGE_SIZE), mm.mmap(PAGE_SIZE)
    dmamap.dma_mmap_attrs(dev, a, *buf, 0, strategy="prefault")
    dmamap.dma_mmap_coherent(dev, b, *buf, strategy="prefault")
    assert mm.translate(a.start).cache == mm.translate(b.start).cache
    with pytest.raises(dmamap.InvalidArgumentError):
        dmamap.dma_mmap_attrs(dev, mm.mmap(PAGE_SIZE), *buf, 1 << 30)   # unknown attribute bit
    with pytest.raises(dmamap.InvalidArgumentError):
        dmamap.dma_alloc_attrs(dev, PAGE_SIZE, 1 << 40)
    dmamap.dma_munmap_coherent(a)
    dmamap.dma_munmap_coherent(b)
    dmamap.dma_free_attrs(dev, PAGE_SIZE, buf.cpu_addr, buf.dma_handle, 0)


def test_dma_mmap_wc_refusals_change_nothing(m: dmamap.Machine) -> None:
    dev = m.add_device("d")
    mm = m.new_address_space()
    buf = dmamap.dma_alloc_wc(dev, PAGE_SIZE)
    big = mm.mmap(2 * PAGE_SIZE)
    prot = big.vm_page_prot
    with pytest.raises(dmamap.InvalidArgumentError):
        dmamap.dma_mmap_wc(dev, big, *buf)   # VMA larger than the buffer (-ENXIO)
    assert big.vm_page_prot == prot and mm.count_present(big.start, len(big)) == 0
    with pytest.raises(dmamap.DmaFreeError):
        dmamap.dma_mmap_wc(dev, mm.mmap(PAGE_SIZE), buf.cpu_addr + PAGE_SIZE, buf.dma_handle, PAGE_SIZE)
    dmamap.dma_free_wc(dev, PAGE_SIZE, buf.cpu_addr, buf.dma_handle)
    with pytest.raises(dmamap.DmaFreeError):
        dmamap.dma_free_wc(dev, PAGE_SIZE, buf.cpu_addr, buf.dma_handle)


def test_dma_mmap_pages(m: dmamap.Machine) -> None:
    dev = m.add_device("d")
    mm = m.new_address_space()
    page = m.alloc_pages(4, dma=True)
    vma = mm.mmap(4 * PAGE_SIZE)
    dmamap.dma_mmap_pages(dev, vma, 4 * PAGE_SIZE - 100, page)   # size rounds up to 4 pages
    assert mm.translate(vma.start + 3 * PAGE_SIZE).pa == page.phys_addr + 3 * PAGE_SIZE
    assert vma.pfnmap
    big = mm.mmap(5 * PAGE_SIZE)
    with pytest.raises(dmamap.InvalidArgumentError, match="ENXIO"):
        dmamap.dma_mmap_pages(dev, big, 4 * PAGE_SIZE, page)
    with pytest.raises(TypeError):
        dmamap.dma_mmap_pages(dev, big, 4 * PAGE_SIZE, page.pfn)  # type: ignore[arg-type]
    with pytest.raises(dmamap.InvalidArgumentError):
        dmamap.dma_mmap_pages(dev, big, 0, page)
    assert mm.count_present(big.start, len(big)) == 0 and not big.pfnmap
