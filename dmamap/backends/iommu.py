"""AArch64 SoC whose DMA masters sit behind an SMMU: device addresses are
IOVAs translated page by page through per-device stage-1 tables in RAM
(:mod:`dmamap.iommu`).  Otherwise as ``arm``: non-coherent DMA, coherent
buffers remapped NORMAL_NC.  Streaming scatter lists coalesce into one IOVA
range; a DMA to an unmapped or read-only IOVA is an IOMMU fault."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dmamap.backends import CoherentAlloc
from dmamap.backends.arm import ArmBackend
from dmamap.errors import InvalidArgumentError
from dmamap.iommu import iommu_of
from dmamap.mm import PAGE_SHIFT

if TYPE_CHECKING:
    from dmamap.device import Device


class IommuBackend(ArmBackend):
    """The IOMMU hooks a backend supplies: ``dma_runs`` (translate a transfer
    page by page, faulting), ``map_streaming``/``unmap_streaming`` (give
    physical runs one bus range), and coherent allocations mapped likewise."""

    name = "iommu"
    dma_offset = 0
    description = "AArch64 behind an SMMU (stage-1 IOVA tables in RAM), non-coherent DMA"

    def dma_runs(self, dev: Device, dma_addr: int, n: int, is_write: bool) -> list[tuple[int, int]]:
        return iommu_of(dev.machine).translate(dev, dma_addr, n, is_write)

    def dma_to_phys(self, dev: Device, dma_addr: int) -> int:
        return iommu_of(dev.machine).translate(dev, dma_addr, 1, False)[0][0]

    def device_removed(self, dev: Device) -> None:
        """The device is gone: its domain (tables, IOTLB) goes with it."""
        iommu_of(dev.machine).detach(dev)

    def map_streaming(self, dev: Device, runs: list[tuple[int, int]], direction: int) -> int:
        return iommu_of(dev.machine).map_runs(dev, runs, writable=direction != 1)

    def unmap_streaming(self, dev: Device, dma_addr: int, runs: list[tuple[int, int]]) -> None:
        npages = sum(((pa + n - 1) >> PAGE_SHIFT) - (pa >> PAGE_SHIFT) + 1 for pa, n in runs)
        iommu_of(dev.machine).unmap_range(dev, dma_addr, npages)

    def alloc_coherent(self, dev: Device, npages: int) -> CoherentAlloc:
        alloc = super().alloc_coherent(dev, npages)
        try:
            alloc.extra["iova"] = iommu_of(dev.machine).map_runs(
                dev, [(alloc.pfn << PAGE_SHIFT, npages << PAGE_SHIFT)], writable=True)
        except BaseException:
            super().free_coherent(dev, alloc)
            raise
        self._iova_of(dev)[alloc.pfn << PAGE_SHIFT] = alloc.extra["iova"]
        return alloc

    def free_coherent(self, dev: Device, alloc: CoherentAlloc) -> None:
        iova = self._iova_of(dev).pop(alloc.pfn << PAGE_SHIFT, None)
        if iova is not None and not dev.machine.closed:
            iommu_of(dev.machine).unmap_range(dev, iova, alloc.npages)
        super().free_coherent(dev, alloc)

    def phys_to_dma(self, dev: Device, pa: int) -> int:
        """The IOVA of a coherent allocation starting at ``pa``; other memory has
        none until it is mapped (dma_map_*)."""
        iova = self._iova_of(dev).get(pa)
        if iova is None:
            raise InvalidArgumentError(f"iommu: physical address {pa:#x} has no IOVA for device {dev.name!r}; "
                                       f"map it with dma_map_* first", pa)
        return iova

    def _iova_of(self, dev: Device) -> dict[int, int]:
        table: dict[int, int] = dev.__dict__.setdefault("_coherent_iovas", {})
        return table
