"""The streaming DMA API: per-direction cache maintenance (stale data on a
non-coherent machine without the right sync) and the DMA-API-debug checks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import dmamap as d
from dmamap.backends import Backend
from dmamap.errors import (
    DmaCpuOwnershipError,
    DmaDeviceOwnershipError,
    DmaDoubleUnmapError,
    DmaLeakError,
    DmaMappingErrorUncheckedError,
    DmaSyncError,
    DmaUnmapError,
    InvalidArgumentError,
    IommuFaultError,
)

RAM = 16 << 20
PLATFORMS = ("x86", "arm", "sram", "riscv", "iommu")


@pytest.fixture(params=PLATFORMS)
def env(request: pytest.FixtureRequest) -> Iterator[tuple[d.Machine, d.Device]]:
    with d.Machine(request.param, ram=RAM) as m:
        yield m, m.add_device("nic", bars=[4096])


def _noncoherent(m: d.Machine) -> bool:
    return not m.dma_coherent


def test_tx_map_cleans_so_the_device_reads_what_the_cpu_wrote(env: tuple[d.Machine, d.Device]) -> None:
    m, dev = env
    buf = d.kmalloc(m, 300)
    m.kernel.write(buf, b"frame" * 60)
    h = d.dma_map_single(dev, buf, 300, d.DMA_TO_DEVICE)
    assert not d.dma_mapping_error(dev, h)
    assert dev.dma_read(h, 300) == b"frame" * 60
    d.dma_unmap_single(dev, h, 300, d.DMA_TO_DEVICE)
    d.kfree(m, buf)


def test_tx_without_map_is_stale_on_noncoherent(env: tuple[d.Machine, d.Device]) -> None:
    m, dev = env
    buf = d.kmalloc(m, 64)
    m.kernel.write(buf, b"A" * 64)
    if m.name == "iommu":   # unmapped memory has no bus address at all
        with pytest.raises(InvalidArgumentError, match="no IOVA"):
            m.backend.phys_to_dma(dev, m.virt_to_phys(buf))
        with pytest.raises(IommuFaultError):
            dev.dma_read(m.virt_to_phys(buf), 64)
        return
    raw = m.backend.phys_to_dma(dev, m.virt_to_phys(buf))
    seen = dev.dma_read(raw, 64)
    assert seen == (bytes(64) if _noncoherent(m) else b"A" * 64)


def test_rx_needs_sync_for_cpu(env: tuple[d.Machine, d.Device]) -> None:
    m, dev = env
    rx = d.kmalloc(m, 4096)
    m.kernel.read(rx, 128)   # lines cached before the map, as a reused buffer's would be
    h = d.dma_map_single(dev, rx, 4096, d.DMA_FROM_DEVICE)
    assert not d.dma_mapping_error(dev, h)
    dev.dma_write(h + 16, b"packet-data")
    with pytest.raises(DmaCpuOwnershipError) as ei:
        m.kernel.read(rx + 16, 11)
    assert ei.value.addr == m.virt_to_phys(rx) + 16
    m.dma_debug_mode = "record"   # the access goes ahead: what a real driver would see
    stale = m.kernel.read(rx + 16, 11)
    assert stale == (bytes(11) if _noncoherent(m) else b"packet-data")
    d.dma_sync_single_for_cpu(dev, h, 64, d.DMA_FROM_DEVICE)
    assert m.kernel.read(rx + 16, 11) == b"packet-data"
    d.dma_sync_single_for_device(dev, h, 64, d.DMA_FROM_DEVICE)
    dev.dma_write(h, b"second")
    d.dma_unmap_single(dev, h, 4096, d.DMA_FROM_DEVICE)
    assert m.kernel.read(rx, 6) == b"second"
    rep = m.dma_debug_report()
    assert [e.error for e in rep.events] == [DmaCpuOwnershipError]


def test_partial_sync_for_cpu_keeps_neighbours(env: tuple[d.Machine, d.Device]) -> None:
    """dcache_inval_poc cleans partial lines at the edges: CPU bytes sharing a
    line with the synced range survive."""
    m, dev = env
    buf = d.kmalloc(m, 4096)
    h = d.dma_map_single(dev, buf, 256, d.DMA_BIDIRECTIONAL)
    d.dma_mapping_error(dev, h)
    # bytes 256.. are outside the mapping: the CPU may write them freely
    m.kernel.write(buf + 256, b"keep")
    dev.dma_write(h, b"D" * 256)
    d.dma_unmap_single(dev, h, 256, d.DMA_BIDIRECTIONAL)
    assert m.kernel.read(buf, 256) == b"D" * 256
    assert m.kernel.read(buf + 256, 4) == b"keep"


def test_wrong_direction_leaves_stale_data_on_noncoherent(env: tuple[d.Machine, d.Device]) -> None:
    m, dev = env
    m.dma_debug_mode = "record"
    rx = d.kmalloc(m, 4096)
    m.kernel.read(rx, 64)
    h = d.dma_map_single(dev, rx, 4096, d.DMA_FROM_DEVICE)
    d.dma_mapping_error(dev, h)
    dev.dma_write(h, b"new!")
    d.dma_sync_single_for_cpu(dev, h, 4096, d.DMA_TO_DEVICE)   # wrong: TO_DEVICE does not invalidate
    assert m.kernel.read(rx, 4) == (bytes(4) if _noncoherent(m) else b"new!")
    rules = [e.error for e in m.dma_debug_report().events]
    assert rules == [DmaSyncError]


def test_debug_rules_each_named(env: tuple[d.Machine, d.Device]) -> None:
    m, dev = env
    buf = d.kmalloc(m, 512)
    h = d.dma_map_single(dev, buf, 512, d.DMA_TO_DEVICE)
    with pytest.raises(DmaSyncError, match="size"):
        d.dma_unmap_single(dev, h, 256, d.DMA_TO_DEVICE)
    with pytest.raises(DmaSyncError, match="direction"):
        d.dma_sync_single_for_cpu(dev, h, 512, d.DMA_FROM_DEVICE)
    with pytest.raises(DmaSyncError, match="past"):
        d.dma_sync_single_for_cpu(dev, h + 256, 512, d.DMA_TO_DEVICE)
    with pytest.raises(DmaUnmapError, match="never mapped"):
        d.dma_unmap_single(dev, h + 0x100000, 512, d.DMA_TO_DEVICE)
    # behind an IOMMU the mapping is read-only for the device: the IOMMU itself refuses
    with pytest.raises(IommuFaultError if m.name == "iommu" else DmaDeviceOwnershipError):
        dev.dma_write(h, b"x")
    with pytest.raises(DmaMappingErrorUncheckedError):
        d.dma_unmap_single(dev, h, 512, d.DMA_TO_DEVICE)
    # a refused unmap changed nothing: still mapped, still device-owned
    with pytest.raises(DmaCpuOwnershipError):
        m.kernel.read(buf, 1)
    assert not d.dma_mapping_error(dev, h)
    d.dma_unmap_single(dev, h, 512, d.DMA_TO_DEVICE)
    with pytest.raises(DmaDoubleUnmapError):
        d.dma_unmap_single(dev, h, 512, d.DMA_TO_DEVICE)
    assert m.kernel.read(buf, 1) == b"\0"


def test_device_access_to_cpu_owned_buffer(env: tuple[d.Machine, d.Device]) -> None:
    m, dev = env
    buf = d.kmalloc(m, 4096)
    h = d.dma_map_single(dev, buf, 4096, d.DMA_BIDIRECTIONAL)
    d.dma_mapping_error(dev, h)
    d.dma_sync_single_for_cpu(dev, h, 128, d.DMA_BIDIRECTIONAL)
    with pytest.raises(DmaDeviceOwnershipError) as ei:
        dev.dma_write(h + 64, b"late")
    assert ei.value.addr == m.virt_to_phys(buf) + 64
    dev.dma_write(h + 128, b"fine")   # the rest is still the device's
    m.kernel.write(buf, b"cpu")
    d.dma_sync_single_for_device(dev, h, 128, d.DMA_BIDIRECTIONAL)
    assert dev.dma_read(h, 3) == b"cpu"
    d.dma_unmap_single(dev, h, 4096, d.DMA_BIDIRECTIONAL)


def test_leak_at_removal_and_record_mode_summary(env: tuple[d.Machine, d.Device]) -> None:
    m, dev = env
    buf = d.kmalloc(m, 64)
    h = d.dma_map_single(dev, buf, 64, d.DMA_TO_DEVICE)
    with pytest.raises(DmaLeakError, match="streaming mapping"):
        dev.remove()
    m.dma_debug_mode = "record"
    d.dma_unmap_single(dev, h + 4096, 64, d.DMA_TO_DEVICE)   # recorded, then nothing happens
    dev.remove()
    assert dev.removed
    rep = m.dma_debug_report()
    assert [e.error for e in rep.events] == [DmaUnmapError, DmaLeakError]
    assert rep.counts == {DmaUnmapError.rule: 1, DmaLeakError.rule: 1}
    assert "2 violation(s)" in rep.summary() and "nic" in rep.summary()
    m.kernel.write(buf, b"ok")   # the removed device's mappings no longer own memory
    assert m.dma_debug_report(clear=True) and not m.dma_debug_report()
    with pytest.raises(InvalidArgumentError):
        m.dma_debug_mode = "warn"


def test_map_page_and_sg(env: tuple[d.Machine, d.Device]) -> None:
    m, dev = env
    pages = [m.alloc_pages(1) for _ in range(5)]
    for i, p in enumerate(pages):
        m.kernel.write(m.page_address(p), bytes([i + 1]) * 4096)
    sgl = d.sg_init_table(5)
    for s, p in zip(sgl, pages, strict=True):
        d.sg_set_page(s, p, 4096, 0)
    n = d.dma_map_sg(dev, sgl, 5, d.DMA_TO_DEVICE)
    assert n == (1 if m.name == "iommu" else 5)   # an IOMMU coalesces the pages into one bus segment
    seen = b"".join(dev.dma_read(d.sg_dma_address(s), d.sg_dma_len(s)) for s in d.for_each_sg(sgl, n))
    assert seen == b"".join(bytes([i + 1]) * 4096 for i in range(5))
    with pytest.raises(DmaSyncError, match="nents"):
        d.dma_unmap_sg(dev, sgl, 4, d.DMA_TO_DEVICE)
    d.dma_unmap_sg(dev, sgl, 5, d.DMA_TO_DEVICE)
    h = d.dma_map_page(dev, pages[2], 100, 200, d.DMA_FROM_DEVICE)
    assert not d.dma_mapping_error(dev, h)
    dev.dma_write(h, b"Z" * 200)
    d.dma_sync_sg_for_cpu  # noqa: B018 - exported
    d.dma_unmap_page(dev, h, 200, d.DMA_FROM_DEVICE)
    assert m.kernel.read(m.page_address(pages[2]) + 100, 200) == b"Z" * 200
    assert m.kernel.read(m.page_address(pages[2]) + 99, 1) == b"\3"


def test_sync_sg_round_trip(env: tuple[d.Machine, d.Device]) -> None:
    m, dev = env
    bufs = [d.kmalloc(m, 1000) for _ in range(3)]
    sgl = d.sg_init_table(3)
    for s, b in zip(sgl, bufs, strict=True):
        d.sg_set_buf(s, b, 1000)
    n = d.dma_map_sg(dev, sgl, 3, d.DMA_BIDIRECTIONAL)
    for s in sgl[:n]:
        dev.dma_write(s.dma_address, b"rx" * 500)
    d.dma_sync_sg_for_cpu(dev, sgl, 3, d.DMA_BIDIRECTIONAL)
    for b in bufs:
        assert m.kernel.read(b, 1000) == b"rx" * 500
        m.kernel.write(b, b"tx" * 500)
    d.dma_sync_sg_for_device(dev, sgl, 3, d.DMA_BIDIRECTIONAL)
    for s in sgl[:n]:
        assert dev.dma_read(s.dma_address, 1000) == b"tx" * 500
    d.dma_unmap_sg(dev, sgl, 3, d.DMA_BIDIRECTIONAL)


def test_bad_arguments(env: tuple[d.Machine, d.Device]) -> None:
    m, dev = env
    buf = d.kmalloc(m, 64)
    with pytest.raises(InvalidArgumentError, match="direction"):
        d.dma_map_single(dev, buf, 64, d.DMA_NONE)
    with pytest.raises(InvalidArgumentError, match="size is zero"):
        d.dma_map_single(dev, buf, 0, d.DMA_TO_DEVICE)
    with pytest.raises(InvalidArgumentError, match="direct map"):
        d.dma_map_single(dev, 0x1000, 64, d.DMA_TO_DEVICE)
    with pytest.raises(TypeError):
        d.dma_map_single(dev, buf, 64, "to")  # type: ignore[arg-type]
    cb = d.dma_alloc_coherent(dev, 4096)
    if not m.virt_addr_valid(cb.cpu_addr):
        with pytest.raises(InvalidArgumentError, match="direct map"):
            d.dma_map_single(dev, cb.cpu_addr, 64, d.DMA_TO_DEVICE)
    assert not dev.dma_debug.streams
    with pytest.raises(InvalidArgumentError):
        d.kfree(m, buf + 1)
    d.kfree(m, buf)
    with pytest.raises(InvalidArgumentError):
        d.kfree(m, buf)
    assert d.dma_mapping_error(dev, d.DMA_MAPPING_ERROR)


class _Scatter(Backend):
    """A backend whose bus addresses are scattered page by page (an IOMMU in all but name)."""

    name = "scatter-test"

    def dma_to_phys(self, dev: d.Device, dma_addr: int) -> int:
        page, off = divmod(dma_addr, 4096)
        return ((page ^ 1) << 12) + off   # neighbouring pages swapped


def test_dma_engine_translates_every_page() -> None:
    with d.Machine(_Scatter(), ram=RAM) as m:
        dev = m.add_device("dev")
        m.phys_write(0x10000, b"A" * 4096)
        m.phys_write(0x11000, b"B" * 4096)
        assert dev.dma_read(0x11000 - 2, 4) == b"BBAA"   # bus 0x10ffe -> pa 0x11ffe, bus 0x11000 -> pa 0x10000
        dev.dma_write(0x10ffe, b"xyzw")
        assert m.phys_read(0x11ffe, 2) == b"xy" and m.phys_read(0x10000, 2) == b"zw"
