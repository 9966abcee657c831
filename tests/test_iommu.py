"""The IOMMU platform: IOVAs through stage-1 tables in RAM (decoded by the
shared walker), scatter lists coalesced, coherent IOVAs, faults, IOTLB."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import dmamap as d
from dmamap.errors import IommuFaultError
from dmamap.iommu import iommu_of
from dmamap.testing import pagetable as pt


@pytest.fixture
def env() -> Iterator[tuple[d.Machine, d.Device]]:
    with d.Machine("iommu", ram=32 << 20) as m:
        yield m, m.add_device("nic", bars=[4096])


def _discontiguous_pages(m: d.Machine, n: int) -> list[d.Page]:
    out = []
    for _ in range(n):
        out.append(m.alloc_pages(1))
        m.alloc_pages(1)   # a hole: no two are physically adjacent
    return out


def test_37_discontiguous_pages_map_to_one_iova_range(env: tuple[d.Machine, d.Device]) -> None:
    m, dev = env
    pages = _discontiguous_pages(m, 37)
    assert all(b.pfn - a.pfn > 1 for a, b in zip(pages, pages[1:], strict=False))
    sgl = d.sg_init_table(37)
    for i, (s, p) in enumerate(zip(sgl, pages, strict=True)):
        d.sg_set_page(s, p, 4096, 0)
        m.kernel.write(m.page_address(p), i.to_bytes(2, "little") * 2048)
    n = d.dma_map_sg(dev, sgl, 37, d.DMA_BIDIRECTIONAL)
    assert n == 1 and d.sg_dma_len(sgl[0]) == 37 * 4096
    base = d.sg_dma_address(sgl[0])
    # exact across every page boundary
    for i in range(36):
        edge = base + (i + 1) * 4096
        assert dev.dma_read(edge - 2, 4) == i.to_bytes(2, "little") + (i + 1).to_bytes(2, "little")
    whole = dev.dma_read(base, 37 * 4096)
    assert whole == b"".join(i.to_bytes(2, "little") * 2048 for i in range(37))
    dev.dma_write(base + 4096 - 3, b"abcdef")   # a write straddling two discontiguous pages
    d.dma_sync_sg_for_cpu(dev, sgl, 37, d.DMA_BIDIRECTIONAL)
    assert m.kernel.read(m.page_address(pages[0]) + 4093, 3) == b"abc"
    assert m.kernel.read(m.page_address(pages[1]), 3) == b"def"
    # the tables decode with the shared walker, page by page
    dom = iommu_of(m).domain(dev)
    for i, p in enumerate(pages):
        leaf = pt.walk(m, dom.root, base + i * 4096)
        assert leaf is not None and leaf.pa == p.phys_addr and leaf.writable and leaf.page_size == 4096
    d.dma_unmap_sg(dev, sgl, 37, d.DMA_BIDIRECTIONAL)
    assert pt.walk(m, dom.root, base) is None
    with pytest.raises(IommuFaultError, match="translation fault"):
        dev.dma_read(base, 4)   # the IOTLB was invalidated too


def test_faults_are_reported_against_the_device(env: tuple[d.Machine, d.Device]) -> None:
    m, dev = env
    buf = d.kmalloc(m, 4096)
    m.kernel.write(buf, b"ro")
    h = d.dma_map_single(dev, buf, 4096, d.DMA_TO_DEVICE)
    assert not d.dma_mapping_error(dev, h)
    dom = iommu_of(m).domain(dev)
    leaf = pt.walk(m, dom.root, h)
    assert leaf is not None and not leaf.writable
    assert dev.dma_read(h, 2) == b"ro"
    with pytest.raises(IommuFaultError, match="permission fault") as ei:
        dev.dma_write(h, b"no")
    assert ei.value.addr == h
    with pytest.raises(IommuFaultError, match="translation"):
        dev.dma_read(h + 4096 - 1, 2)   # runs one byte into an unmapped page: nothing moves
    faults = iommu_of(m).faults
    assert [(f.device, f.iova, f.is_write) for f in faults] == [("nic", h, True), ("nic", h + 4096, False)]
    other = m.add_device("other")
    with pytest.raises(IommuFaultError):
        other.dma_read(h, 2)   # another device's domain does not map it
    d.dma_unmap_single(dev, h, 4096, d.DMA_TO_DEVICE)


def test_coherent_buffers_get_iovas(env: tuple[d.Machine, d.Device]) -> None:
    m, dev = env
    buf = d.dma_alloc_coherent(dev, 3 * 4096)
    pfn = d.dma_coherent_to_pfn(dev, buf.cpu_addr, buf.dma_handle)
    assert buf.dma_handle != pfn << 12
    m.kernel.write(buf.cpu_addr + 4096, b"coherent")
    assert dev.dma_read(buf.dma_handle + 4096, 8) == b"coherent"
    dom = iommu_of(m).domain(dev)
    assert pt.walk(m, dom.root, buf.dma_handle + 8192).pa == (pfn + 2) << 12  # type: ignore[union-attr]
    d.dma_free_coherent(dev, buf.size, buf.cpu_addr, buf.dma_handle)
    with pytest.raises(IommuFaultError):
        dev.dma_read(buf.dma_handle, 1)


def test_iova_space_reused_after_unmap(env: tuple[d.Machine, d.Device]) -> None:
    m, dev = env
    buf = d.kmalloc(m, 8192)
    seen = set()
    for _ in range(50):
        h = d.dma_map_single(dev, buf, 8192, d.DMA_FROM_DEVICE)
        d.dma_mapping_error(dev, h)
        seen.add(h)
        d.dma_unmap_single(dev, h, 8192, d.DMA_FROM_DEVICE)
    assert len(seen) <= 2
    assert iommu_of(m).iotlb_invalidations >= 100


def test_noncontiguous_allocation_is_scattered_pages_behind_one_iova(env: tuple[d.Machine, d.Device]) -> None:
    m, dev = env
    for _ in range(3):   # interleave other allocations so the pages cannot all be neighbours
        m.alloc_pages(1)
    sgt = d.dma_alloc_noncontiguous(dev, 5 * 4096 - 100, d.DMA_BIDIRECTIONAL)
    assert sgt.orig_nents == 5 and sgt.nents == 1 and sgt.sgl[0].dma_length == 5 * 4096 - 100
    kva = d.dma_vmap_noncontiguous(dev, 5 * 4096 - 100, sgt)
    mm = m.new_address_space()
    vma = mm.mmap(5 * 4096)
    d.dma_mmap_noncontiguous(dev, vma, 5 * 4096 - 100, sgt)
    d.dma_sync_sgtable_for_device(dev, sgt, d.DMA_BIDIRECTIONAL)
    dev.dma_write(sgt.dma_address + 4096 - 2, b"span")   # across two pages of the IOVA range
    d.dma_sync_sgtable_for_cpu(dev, sgt, d.DMA_BIDIRECTIONAL)
    assert m.kernel.read(kva + 4096 - 2, 4) == b"span"
    assert mm.read(vma.start + 4096 - 2, 4) == b"span"
    assert m.kernel.read(m.page_address(sgt.sgl[1].page), 2) == b"an"
    used = m.stats.ram_pages_used
    d.dma_vunmap_noncontiguous(dev, kva)
    mm.munmap(vma)
    d.dma_free_noncontiguous(dev, 5 * 4096 - 100, sgt, d.DMA_BIDIRECTIONAL)
    assert m.stats.ram_pages_used < used - 4
    mm.close()


def test_forced_removal_gives_the_domain_back(env: tuple[d.Machine, d.Device]) -> None:
    m, dev = env
    base = m.stats.ram_pages_used
    buf = d.kmalloc(m, 4096)
    h = d.dma_map_single(dev, buf, 4096, d.DMA_TO_DEVICE)
    assert not d.dma_mapping_error(dev, h)
    assert m.stats.ram_pages_used > base + 1   # the buffer and the domain's tables
    dev.remove(force=True)
    assert dev.id not in iommu_of(m).domains
    d.kfree(m, buf)
    assert m.stats.ram_pages_used == base
