"""DMA masks and swiotlb bounce buffers: a 32-bit device on an 8 GiB machine."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import dmamap as d
from dmamap.errors import InvalidArgumentError
from dmamap.swiotlb import IO_TLB_SIZE, swiotlb_init, swiotlb_of

GiB = 1 << 30


@pytest.fixture(params=["x86", "arm"])
def env(request: pytest.FixtureRequest) -> Iterator[tuple[d.Machine, d.Device]]:
    with d.Machine(request.param, ram=8 * GiB) as m:
        dev = m.add_device("old-nic", bars=[4096])
        assert d.dma_set_mask_and_coherent(dev, d.DMA_BIT_MASK(32)) == 0
        yield m, dev


def _high(m: d.Machine, size: int) -> d.KernelAddress:
    """A kmalloc buffer above 4 GiB of bus space (fill low memory first)."""
    fill = []
    while True:
        buf = d.kmalloc(m, size)
        if m.backend.phys_to_dma(None, m.virt_to_phys(buf)) > 0xFFFFFFFF:  # type: ignore[arg-type]
            break
        d.kfree(m, buf)
        fill.append(m.alloc_pages(1 << 14))   # 64 MiB of low memory taken
    for p in fill:
        m.free_pages(p, 1 << 14)
    assert m.backend.phys_to_dma(None, m.virt_to_phys(buf)) > 0xFFFFFFFF  # type: ignore[arg-type]
    return buf


def test_streaming_maps_bounce_with_stats(env: tuple[d.Machine, d.Device]) -> None:
    m, dev = env
    tx = _high(m, 3000)
    m.kernel.write(tx, b"T" * 3000)
    h = d.dma_map_single(dev, tx, 3000, d.DMA_TO_DEVICE)
    assert not d.dma_mapping_error(dev, h)
    assert h + 3000 - 1 <= 0xFFFFFFFF
    assert dev.dma_read(h, 3000) == b"T" * 3000          # copied on map
    st = swiotlb_of(m).stats
    assert st.maps == 1 and st.bytes_to_device == 3000 and st.slots_used == 2
    d.dma_unmap_single(dev, h, 3000, d.DMA_TO_DEVICE)
    assert st.slots_used == 0 and st.bytes_to_cpu == 0   # TO_DEVICE: nothing copied back

    rx = _high(m, 4096)
    h = d.dma_map_single(dev, rx, 4096, d.DMA_FROM_DEVICE)
    assert not d.dma_mapping_error(dev, h)
    dev.dma_write(h, b"reply")
    assert m.dma_debug_mode == "raise"
    d.dma_sync_single_for_cpu(dev, h, 4096, d.DMA_FROM_DEVICE)   # copied back here
    assert m.kernel.read(rx, 5) == b"reply"
    m.kernel.write(rx + 100, b"cpu")
    d.dma_sync_single_for_device(dev, h, 4096, d.DMA_FROM_DEVICE)   # FROM_DEVICE: not copied in
    assert dev.dma_read(h + 100, 3) == bytes(3)
    dev.dma_write(h + 8, b"more")
    d.dma_unmap_single(dev, h, 4096, d.DMA_FROM_DEVICE)               # copied back on unmap
    assert m.kernel.read(rx + 8, 4) == b"more"
    assert st.maps == 2 and st.bytes_to_cpu == 2 * 4096


def test_bidirectional_sync_copies_both_ways(env: tuple[d.Machine, d.Device]) -> None:
    m, dev = env
    buf = _high(m, 1024)
    h = d.dma_map_single(dev, buf, 1024, d.DMA_BIDIRECTIONAL)
    assert not d.dma_mapping_error(dev, h)
    d.dma_sync_single_for_cpu(dev, h, 1024, d.DMA_BIDIRECTIONAL)
    m.kernel.write(buf, b"ping")
    d.dma_sync_single_for_device(dev, h, 1024, d.DMA_BIDIRECTIONAL)
    assert dev.dma_read(h, 4) == b"ping"
    dev.dma_write(h, b"pong")
    d.dma_unmap_single(dev, h, 1024, d.DMA_BIDIRECTIONAL)
    assert m.kernel.read(buf, 4) == b"pong"


def test_low_memory_is_not_bounced_and_coherent_is_below_the_mask(env: tuple[d.Machine, d.Device]) -> None:
    m, dev = env
    low = d.kmalloc(m, 256)
    h = d.dma_map_single(dev, low, 256, d.DMA_TO_DEVICE)
    assert not d.dma_mapping_error(dev, h)
    assert swiotlb_of(m).stats.maps == 0
    d.dma_unmap_single(dev, h, 256, d.DMA_TO_DEVICE)
    big = m.alloc_pages(1 << 20)   # the allocator's next-fit hint now points above 4 GiB
    m.free_pages(big, 1 << 20)
    probe = m.alloc_pages(16)
    assert probe.phys_addr > 0xFFFFFFFF + m.backend.dma_offset   # without a mask, memory comes from up there
    m.free_pages(probe, 16)
    big = m.alloc_pages(1 << 20)
    m.free_pages(big, 1 << 20)
    bufs = [d.dma_alloc_coherent(dev, 64 << 10) for _ in range(4)]
    assert all(b.dma_handle + b.size - 1 <= 0xFFFFFFFF for b in bufs)
    other = m.add_device("new-nic")
    hi = d.dma_alloc_coherent(other, 4096)   # a 64-bit device takes what comes
    for b in bufs:
        d.dma_free_coherent(dev, b.size, b.cpu_addr, b.dma_handle)
    d.dma_free_coherent(other, hi.size, hi.cpu_addr, hi.dma_handle)


def test_pool_exhaustion_is_a_mapping_error(env: tuple[d.Machine, d.Device]) -> None:
    m, dev = env
    swiotlb_init(m, 16 * IO_TLB_SIZE)
    with pytest.raises(InvalidArgumentError, match="already"):
        swiotlb_init(m, 4096)
    buf = _high(m, 64 << 10)
    hs = []
    for i in range(8):
        h = d.dma_map_single(dev, buf + i * 4096, 4096, d.DMA_TO_DEVICE)
        assert not d.dma_mapping_error(dev, h)
        hs.append(h)
    h = d.dma_map_single(dev, buf + 9 * 4096, 4096, d.DMA_TO_DEVICE)
    assert d.dma_mapping_error(dev, h)
    pool = swiotlb_of(m)
    assert pool.stats.full == 1 and "swiotlb buffer is full" in pool.last_error
    sgl = d.sg_init_table(2)
    d.sg_set_buf(sgl[0], d.KernelAddress(buf + 10 * 4096, m), 4096)
    d.sg_set_buf(sgl[1], d.KernelAddress(buf + 11 * 4096, m), 4096)
    assert d.dma_map_sg(dev, sgl, 2, d.DMA_TO_DEVICE) == 0
    assert not dev.dma_debug.streams.keys() - set(hs)
    for h in hs:
        d.dma_unmap_single(dev, h, 4096, d.DMA_TO_DEVICE)
    assert pool.stats.slots_used == 0 and pool.stats.slots_high_water == 16


def test_mask_validation(env: tuple[d.Machine, d.Device]) -> None:
    _, dev = env
    with pytest.raises(InvalidArgumentError, match="24 bits"):
        d.dma_set_mask(dev, 0xFFFF)
    with pytest.raises(InvalidArgumentError):
        d.DMA_BIT_MASK(0)
    assert d.DMA_BIT_MASK(64) == (1 << 64) - 1
    assert d.dma_set_coherent_mask(dev, d.DMA_BIT_MASK(40)) == 0 and dev.coherent_dma_mask == (1 << 40) - 1
    assert d.dma_get_mask(dev) == 0xFFFFFFFF
