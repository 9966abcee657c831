"""Non-coherent and non-contiguous allocations: cacheable memory that is
correct only with the right syncs, checked like streaming mappings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import dmamap as d
from dmamap.errors import BadPageError, DmaCpuOwnershipError, DmaDeviceOwnershipError, DmaFreeError, DmaLeakError

PLATFORMS = ("x86", "arm", "sram", "riscv", "iommu")


@pytest.fixture(params=PLATFORMS)
def env(request: pytest.FixtureRequest) -> Iterator[tuple[d.Machine, d.Device]]:
    with d.Machine(request.param, ram=16 << 20) as m:
        yield m, m.add_device("cam", bars=[4096])


def test_noncoherent_round_trip(env: tuple[d.Machine, d.Device]) -> None:
    m, dev = env
    buf = d.dma_alloc_noncoherent(dev, 8192, d.DMA_BIDIRECTIONAL)
    assert m.virt_addr_valid(buf.cpu_addr)
    m.kernel.write(buf.cpu_addr, b"cmd")                       # the CPU owns a fresh buffer
    with pytest.raises(DmaDeviceOwnershipError):
        dev.dma_read(buf.dma_handle, 3)
    d.dma_sync_single_for_device(dev, buf.dma_handle, buf.size, d.DMA_BIDIRECTIONAL)
    assert dev.dma_read(buf.dma_handle, 3) == b"cmd"
    with pytest.raises(DmaCpuOwnershipError):
        m.kernel.read(buf.cpu_addr, 3)
    dev.dma_write(buf.dma_handle + 4096, b"image")
    d.dma_sync_single_for_cpu(dev, buf.dma_handle, buf.size, d.DMA_BIDIRECTIONAL)
    assert m.kernel.read(buf.cpu_addr + 4096, 5) == b"image"
    d.dma_free_noncoherent(dev, buf.size, buf.cpu_addr, buf.dma_handle, d.DMA_BIDIRECTIONAL)
    with pytest.raises(d.DmaDoubleUnmapError):
        d.dma_free_noncoherent(dev, buf.size, buf.cpu_addr, buf.dma_handle, d.DMA_BIDIRECTIONAL)


def test_noncoherent_missing_sync_is_stale_on_noncoherent_machines(env: tuple[d.Machine, d.Device]) -> None:
    m, dev = env
    m.dma_debug_mode = "record"
    buf = d.dma_alloc_noncoherent(dev, 4096, d.DMA_TO_DEVICE)
    m.kernel.write(buf.cpu_addr, b"new")
    seen = dev.dma_read(buf.dma_handle, 3)     # no dma_sync_single_for_device
    assert seen == (b"new" if m.dma_coherent else bytes(3))
    assert [e.error for e in m.dma_debug_report().events] == [DmaDeviceOwnershipError]
    d.dma_free_noncoherent(dev, 4096, buf.cpu_addr, buf.dma_handle, d.DMA_TO_DEVICE)


def test_pages_and_user_mapping(env: tuple[d.Machine, d.Device]) -> None:
    m, dev = env
    mm = m.new_address_space()
    page, h = d.dma_alloc_pages(dev, 2 * 4096, d.DMA_FROM_DEVICE)
    vma = mm.mmap(2 * 4096)
    d.dma_mmap_pages(dev, vma, 2 * 4096, page)
    d.dma_sync_single_for_device(dev, h, 8192, d.DMA_FROM_DEVICE)
    dev.dma_write(h, b"frame")
    with pytest.raises(DmaCpuOwnershipError):   # user accesses are checked too
        mm.read(vma.start, 5)
    d.dma_sync_single_for_cpu(dev, h, 8192, d.DMA_FROM_DEVICE)
    assert mm.read(vma.start, 5) == b"frame"                  # user view, cacheable, after the sync
    with pytest.raises(DmaFreeError):
        d.dma_free_pages(dev, 8192, m.alloc_pages(1), h, d.DMA_FROM_DEVICE)
    mm.munmap(vma)
    d.dma_free_pages(dev, 8192, page, h, d.DMA_FROM_DEVICE)
    mm.close()


def test_noncontiguous_vmap_mmap_and_sync(env: tuple[d.Machine, d.Device]) -> None:
    m, dev = env
    mm = m.new_address_space()
    sgt = d.dma_alloc_noncontiguous(dev, 3 * 4096, d.DMA_FROM_DEVICE)
    assert sgt.nents == 1 and sgt.orig_nents == (3 if m.name == "iommu" else 1)   # pages one by one behind an IOMMU
    kva = d.dma_vmap_noncontiguous(dev, 3 * 4096, sgt)
    assert not m.virt_addr_valid(kva)
    vma = mm.mmap(3 * 4096)
    d.dma_mmap_noncontiguous(dev, vma, 3 * 4096, sgt)
    d.dma_sync_sgtable_for_device(dev, sgt, d.DMA_FROM_DEVICE)
    dev.dma_write(sgt.dma_address + 8192, b"tile")
    with pytest.raises(DmaCpuOwnershipError):
        m.kernel.read(kva + 8192, 4)
    d.dma_sync_sgtable_for_cpu(dev, sgt, d.DMA_FROM_DEVICE)
    assert m.kernel.read(kva + 8192, 4) == b"tile"
    assert mm.read(vma.start + 8192, 4) == b"tile"
    with pytest.raises(DmaFreeError, match="vmapped"):
        d.dma_free_noncontiguous(dev, 3 * 4096, sgt, d.DMA_FROM_DEVICE)
    d.dma_vunmap_noncontiguous(dev, kva)
    mm.munmap(vma)
    d.dma_free_noncontiguous(dev, 3 * 4096, sgt, d.DMA_FROM_DEVICE)
    with pytest.raises(DmaFreeError):
        d.dma_vmap_noncontiguous(dev, 4096, sgt)
    mm.close()


def test_leak_and_get_sgtable(env: tuple[d.Machine, d.Device]) -> None:
    m, dev = env
    buf = d.dma_alloc_coherent(dev, 4096)
    if m.backend.coherent_memory == "sram":
        with pytest.raises(BadPageError):
            d.dma_get_sgtable(dev, buf.cpu_addr, buf.dma_handle, 4096)
    else:
        (sg,) = d.dma_get_sgtable(dev, buf.cpu_addr, buf.dma_handle, 4096)
        assert sg.page == d.dma_coherent_to_page(dev, buf.cpu_addr, buf.dma_handle)
        assert sg.length == 4096 and sg.dma_address == buf.dma_handle
    d.dma_free_coherent(dev, 4096, buf.cpu_addr, buf.dma_handle)
    d.dma_alloc_noncoherent(dev, 4096, d.DMA_TO_DEVICE)
    with pytest.raises(DmaLeakError, match="noncoherent"):
        dev.remove()
