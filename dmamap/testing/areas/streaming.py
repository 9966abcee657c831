"""Area: streaming DMA.  Data crosses a streaming mapping in each direction
with the syncs Linux requires (whatever cache or IOMMU the backend has), bytes
sharing a cache line with a mapped range survive, scatter lists read back in
order, and every ownership rule is enforced with its named error."""

from __future__ import annotations

import dmamap
from dmamap import PAGE_SIZE
from dmamap.errors import (
    DmaCpuOwnershipError,
    DmaDeviceOwnershipError,
    DmaDoubleUnmapError,
    DmaSyncError,
    IommuFaultError,
)
from dmamap.testing.checks import make_device
from dmamap.testing.rule import Check, rule
from dmamap.testing.target import Target

_DIRS = {"to_device": dmamap.DMA_TO_DEVICE, "from_device": dmamap.DMA_FROM_DEVICE,
         "bidirectional": dmamap.DMA_BIDIRECTIONAL}


@rule("streaming_sync_per_direction", "streaming",
      "dma_map_single and its syncs move data correctly in each direction, even when the CPU cached the "
      "buffer before, and keep bytes sharing a cache line with the mapping", tuple(_DIRS))
def streaming_sync_per_direction(t: Target, variant: str) -> None:
    chk = Check("streaming_sync_per_direction", variant)
    d = _DIRS[variant]
    with t.machine() as m:
        dev = make_device(m)
        buf = dmamap.kmalloc(m, 2 * PAGE_SIZE)
        m.kernel.write(buf, b"\x11" * (2 * PAGE_SIZE))
        m.kernel.read(buf, 2 * PAGE_SIZE)                     # the CPU has the lines cached
        start, size = buf + 40, 3000                           # partial lines at both ends
        m.kernel.write(start, b"cpu-data")
        h = dmamap.dma_map_single(dev, start, size, d)
        if dmamap.dma_mapping_error(dev, h):
            chk.fail(int(start), "dma_map_single failed")
        if d != dmamap.DMA_FROM_DEVICE and dev.dma_read(h, 8) != b"cpu-data":
            chk.fail(int(start), f"the device read {dev.dma_read(h, 8)!r}, not the CPU's data, after the map")
        if d != dmamap.DMA_TO_DEVICE:
            dev.dma_write(h + 100, b"device-data")
            dmamap.dma_sync_single_for_cpu(dev, h, size, d)
            got = m.kernel.read(start + 100, 11)
            if got != b"device-data":
                chk.fail(int(start) + 100, f"after dma_sync_single_for_cpu the CPU read {got!r}, not the device's data")
            m.kernel.write(start + 200, b"again")
            dmamap.dma_sync_single_for_device(dev, h, size, d)
            if d == dmamap.DMA_BIDIRECTIONAL and dev.dma_read(h + 200, 5) != b"again":
                chk.fail(int(start) + 200, "after dma_sync_single_for_device the device missed the CPU's data")
            dev.dma_write(h + 300, b"last")
        dmamap.dma_unmap_single(dev, h, size, d)
        if d != dmamap.DMA_TO_DEVICE and m.kernel.read(start + 300, 4) != b"last":
            chk.fail(int(start) + 300, "after dma_unmap_single the CPU missed the device's data")
        for off in (0, 39, 40 + size, 2 * PAGE_SIZE - 1):
            if m.kernel.read(buf + off, 1) != b"\x11":
                chk.fail(int(buf) + off, f"byte {off} outside the mapping (sharing a cache line) was lost")
        dmamap.kfree(m, buf)


@rule("streaming_sg_and_ownership", "streaming",
      "dma_map_sg reads back in order; CPU access to a device-owned buffer, device writes to a CPU-owned one, "
      "wrong-direction syncs and double unmaps raise their named errors")
def streaming_sg_and_ownership(t: Target, variant: str) -> None:
    chk = Check("streaming_sg_and_ownership", variant)
    with t.machine() as m:
        dev = make_device(m)
        pages = []
        for i in range(6):
            pages.append(m.alloc_pages(1))
            m.alloc_pages(1)
            m.kernel.write(m.page_address(pages[-1]), bytes([i + 1]) * PAGE_SIZE)
        sgl = dmamap.sg_init_table(6)
        for s, p in zip(sgl, pages, strict=True):
            dmamap.sg_set_page(s, p, PAGE_SIZE, 0)
        n = dmamap.dma_map_sg(dev, sgl, 6, dmamap.DMA_BIDIRECTIONAL)
        if not 1 <= n <= 6:
            chk.fail(0, f"dma_map_sg returned {n} segments for 6 entries")
        seen = b"".join(dev.dma_read(dmamap.sg_dma_address(s), dmamap.sg_dma_len(s))
                        for s in dmamap.for_each_sg(sgl, n))
        if seen != b"".join(bytes([i + 1]) * PAGE_SIZE for i in range(6)):
            chk.fail(0, "the device read the scatter list's pages out of order or wrong")
        kva = m.page_address(pages[0])
        _expect(chk, DmaCpuOwnershipError, lambda: m.kernel.read(kva, 4), int(kva),
                "a CPU read of a device-owned sg page")
        _expect(chk, DmaSyncError,
                lambda: dmamap.dma_sync_sg_for_cpu(dev, sgl, 6, dmamap.DMA_TO_DEVICE), 0,
                "a sync with another direction than the map")
        dmamap.dma_sync_sg_for_cpu(dev, sgl, 6, dmamap.DMA_BIDIRECTIONAL)
        _expect(chk, (DmaDeviceOwnershipError, IommuFaultError),
                lambda: dev.dma_write(dmamap.sg_dma_address(sgl[0]), b"late"), 0,
                "a device write to a CPU-owned buffer")
        if m.kernel.read(kva, 4) != bytes([1]) * 4:
            chk.fail(int(kva), "a refused device write changed memory")
        dmamap.dma_unmap_sg(dev, sgl, 6, dmamap.DMA_BIDIRECTIONAL)
        _expect(chk, DmaDoubleUnmapError,
                lambda: dmamap.dma_unmap_sg(dev, sgl, 6, dmamap.DMA_BIDIRECTIONAL), 0, "a double unmap")


def _expect(chk: Check, exc: type[BaseException] | tuple[type[BaseException], ...], fn: object, addr: int,
            what: str) -> None:
    try:
        fn()  # type: ignore[operator]
    except exc:
        return
    except dmamap.DmamapError as e:
        chk.fail(addr, f"{what} raised {type(e).__name__} ({e}), not the named rule")
    chk.fail(addr, f"{what} was not caught")
