"""The streaming DMA API (include/linux/dma-mapping.h, kernel/dma/direct.h):
mapping memory the driver already owns for one transfer, and handing it back
and forth between CPU and device with syncs.

On a non-coherent machine every call does the cache maintenance arm64's
``arch_sync_dma_for_device``/``arch_sync_dma_for_cpu`` does: a map or a sync
for the device cleans the buffer's lines (any direction), a sync for the CPU
or an unmap invalidates them unless the direction is DMA_TO_DEVICE.  Every call
is checked as CONFIG_DMA_API_DEBUG checks it (kernel/dma/debug.c), and the
device/CPU ownership of each mapped byte is tracked (see :mod:`dmamap.dma_debug`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from dmamap._check import PAGE_SIZE, hex_repr, u64
from dmamap.device import Device
from dmamap.dma_debug import StreamMapping, dir_name, machine_debug
from dmamap.errors import (
    DmaDoubleUnmapError,
    DmaMappingErrorUncheckedError,
    DmaSyncError,
    DmaUnmapError,
    InvalidArgumentError,
)
from dmamap.physmem import KernelAddress, Page
from dmamap.swiotlb import swiotlb_of

__all__ = [
    "DmaDirection", "DMA_BIDIRECTIONAL", "DMA_TO_DEVICE", "DMA_FROM_DEVICE", "DMA_NONE", "DMA_MAPPING_ERROR",
    "Scatterlist", "sg_init_table", "sg_set_page", "sg_set_buf", "sg_dma_address", "sg_dma_len", "for_each_sg",
    "dma_map_single", "dma_unmap_single", "dma_map_page", "dma_unmap_page", "dma_map_sg", "dma_unmap_sg",
    "dma_sync_single_for_cpu", "dma_sync_single_for_device", "dma_sync_sg_for_cpu", "dma_sync_sg_for_device",
    "dma_mapping_error", "DMA_BIT_MASK", "dma_set_mask", "dma_set_coherent_mask", "dma_set_mask_and_coherent",
    "dma_get_mask",
]


class DmaDirection(enum.IntEnum):
    """enum dma_data_direction."""

    DMA_BIDIRECTIONAL = 0
    DMA_TO_DEVICE = 1
    DMA_FROM_DEVICE = 2
    DMA_NONE = 3


DMA_BIDIRECTIONAL = DmaDirection.DMA_BIDIRECTIONAL
DMA_TO_DEVICE = DmaDirection.DMA_TO_DEVICE
DMA_FROM_DEVICE = DmaDirection.DMA_FROM_DEVICE
DMA_NONE = DmaDirection.DMA_NONE
#: What a failed dma_map_single/dma_map_page returns (test it with dma_mapping_error).
DMA_MAPPING_ERROR = (1 << 64) - 1

_LINE = 64


# ---- scatter lists (struct scatterlist) ----

@dataclass(eq=False)
class Scatterlist:
    """One entry of a streaming scatter list: a page, an offset and a length
    on the CPU side; ``dma_address``/``dma_length`` once mapped."""

    page: Page | None = None
    offset: int = 0
    length: int = 0
    dma_address: int = 0
    dma_length: int = 0

    __repr__ = hex_repr("dma_address")

    @property
    def phys_addr(self) -> int:
        if self.page is None:
            raise InvalidArgumentError("scatterlist entry has no page (sg_set_page / sg_set_buf first)")
        return self.page.phys_addr + self.offset


def sg_init_table(nents: int) -> list[Scatterlist]:
    """A table of ``nents`` empty entries."""
    nents = u64("nents", nents)
    if nents == 0:
        raise InvalidArgumentError("sg_init_table: nents is zero")
    return [Scatterlist() for _ in range(nents)]


def _sg(sg: Scatterlist) -> Scatterlist:
    if not isinstance(sg, Scatterlist):
        raise TypeError(f"expected a Scatterlist, got {type(sg).__name__}")
    return sg


def sg_set_page(sg: Scatterlist, page: Page, length: int, offset: int) -> None:
    """Point ``sg`` at ``length`` bytes from ``offset`` into ``page`` (may run into following pages)."""
    _sg(sg)
    if not isinstance(page, Page):
        raise TypeError(f"expected a Page, got {type(page).__name__}")
    sg.page, sg.length, sg.offset = page, u64("length", length), u64("offset", offset)


def sg_set_buf(sg: Scatterlist, buf: int, length: int) -> None:
    """Point ``sg`` at a direct-mapped kernel buffer (virt_to_page + offset_in_page)."""
    _sg(sg)
    m = getattr(buf, "machine", None)
    if not isinstance(buf, KernelAddress) or m is None:
        raise TypeError("sg_set_buf needs a KernelAddress (from kmalloc or page_address)")
    sg_set_page(sg, m.virt_to_page(buf), length, int(buf) & (PAGE_SIZE - 1))


def sg_dma_address(sg: Scatterlist) -> int:
    return _sg(sg).dma_address


def sg_dma_len(sg: Scatterlist) -> int:
    return _sg(sg).dma_length


def for_each_sg(sgl: Sequence[Scatterlist], nents: int) -> Iterator[Scatterlist]:
    """The first ``nents`` entries (what dma_map_sg returned, to walk bus segments)."""
    return iter(_sg_check(sgl, nents, "for_each_sg"))


# ---- DMA masks (dma_set_mask & co) ----

def DMA_BIT_MASK(n: int) -> int:  # noqa: N802 - the kernel's name
    """All ones in the low ``n`` bits (n = 64: every bit)."""
    n = u64("n", n)
    if not 1 <= n <= 64:
        raise InvalidArgumentError(f"DMA_BIT_MASK({n}): n must be 1..64")
    return (1 << n) - 1


def _mask(dev: Device, mask: int, what: str) -> int:
    mask = u64("mask", mask)
    if mask < (1 << 24) - 1:   # dma_supported(): not even ZONE_DMA is reachable
        raise InvalidArgumentError(f"{what}: mask {mask:#x} is below 24 bits; the platform cannot satisfy it (-EIO)",
                                   mask)
    return mask


def dma_set_mask(dev: Device, mask: int) -> int:
    """The bus addresses streaming mappings must fit; memory above it is
    bounced through swiotlb.  Returns 0 (a mask below 24 bits is refused)."""
    dev = _device(dev)
    dev.dma_mask = _mask(dev, mask, "dma_set_mask")
    return 0


def dma_set_coherent_mask(dev: Device, mask: int) -> int:
    """The bus addresses coherent allocations must fit (allocated below it)."""
    dev = _device(dev)
    dev.coherent_dma_mask = _mask(dev, mask, "dma_set_coherent_mask")
    return 0


def dma_set_mask_and_coherent(dev: Device, mask: int) -> int:
    """Both masks at once."""
    dev = _device(dev)
    mask = _mask(dev, mask, "dma_set_mask_and_coherent")
    dev.dma_mask = dev.coherent_dma_mask = mask
    return 0


def dma_get_mask(dev: Device) -> int:
    return _device(dev).dma_mask


# ---- cache maintenance (arch/arm64/mm/dma-mapping.c) ----

def arch_sync_dma_for_device(dev: Device, pa: int, size: int, direction: int) -> None:
    """Before the device looks: clean (write back) the lines, whatever the direction,
    so no dirty line can later be evicted on top of what the device writes."""
    if not dev.machine.dma_coherent:
        dev.machine.clean_dcache_range(pa, size)


def arch_sync_dma_for_cpu(dev: Device, pa: int, size: int, direction: int) -> None:
    """Before the CPU looks: invalidate, unless the device only read the buffer.
    Partial lines at either end are cleaned first (dcache_inval_poc), so bytes
    outside the buffer sharing those lines survive."""
    m = dev.machine
    if m.dma_coherent or direction == DMA_TO_DEVICE:
        return
    end = pa + size
    if pa & (_LINE - 1):
        m.flush_dcache_range(pa & ~(_LINE - 1), _LINE)
    if end & (_LINE - 1):
        m.flush_dcache_range(end & ~(_LINE - 1), _LINE)
    m.invalidate_dcache_range(pa, size)


# ---- argument checks ----

def _device(dev: Device) -> Device:
    if not isinstance(dev, Device):
        raise TypeError(f"expected a Device, got {type(dev).__name__}")
    dev._check()
    return dev


def _direction(direction: int, what: str) -> DmaDirection:
    if isinstance(direction, bool) or not isinstance(direction, int):
        raise TypeError(f"{what}: direction must be a DmaDirection, not {type(direction).__name__}")
    if direction not in (0, 1, 2):
        raise InvalidArgumentError(f"{what}: direction {dir_name(direction)} is not DMA_TO_DEVICE, "
                                   f"DMA_FROM_DEVICE or DMA_BIDIRECTIONAL")
    return DmaDirection(direction)


def _size(size: int, what: str) -> int:
    size = u64("size", size)
    if size == 0:
        raise InvalidArgumentError(f"{what}: size is zero")
    return size


def _same_machine(dev: Device, page: Page | None, what: str) -> None:
    if page is not None and page.machine is not dev.machine:
        raise InvalidArgumentError(f"{what}: the page belongs to machine {page.machine.name}, the device to "
                                   f"{dev.machine.name}")


def _ram_span(dev: Device, pa: int, size: int, what: str) -> None:
    m = dev.machine
    first, last = pa >> 12, (pa + size - 1) >> 12
    if not (m.pfn_valid(first) and m.pfn_valid(last)) or m.region_of(pa) != m.region_of(pa + size - 1):
        raise InvalidArgumentError(f"{what}: [{pa:#x}, {pa + size:#x}) is not RAM with page descriptors "
                                   f"(streaming DMA maps memory the kernel owns)", pa)


# ---- mapping ----

def _map_runs(dev: Device, runs: list[tuple[int, int]], direction: DmaDirection, kind: str,
              sg_nents: int = 0) -> StreamMapping | None:
    """One bus range for the physical ``runs``: through the backend's IOMMU
    (``map_streaming``) when it has one, else the direct offset (one run)."""
    be = dev.machine.backend
    iommu_map = getattr(be, "map_streaming", None)
    size = sum(n for _, n in runs)
    bounce = None
    if iommu_map is not None:
        dma_addr = iommu_map(dev, runs, int(direction))
    else:
        dma_addr = be.phys_to_dma(dev, runs[0][0]) if be is not None else runs[0][0]
        if dma_addr + size - 1 > dev.dma_mask:   # !dma_capable(): bounce (swiotlb_map)
            bounce = swiotlb_of(dev.machine).map(runs[0][0], size)
            if bounce is None:
                return None
            dma_addr = be.phys_to_dma(dev, bounce) if be is not None else bounce
    sm = StreamMapping(dev, kind, dma_addr, size, int(direction), list(runs), sg_nents=sg_nents)
    sm.extra["iommu"] = iommu_map is not None
    if bounce is not None:
        sm.extra["bounce"] = bounce
        arch_sync_dma_for_device(dev, bounce, size, direction)
    else:
        for pa, n in runs:
            arch_sync_dma_for_device(dev, pa, n, direction)
    dev.dma_debug.add_stream(sm)
    return sm


def _map(dev: Device, pa: int, size: int, direction: DmaDirection, kind: str,
         sg_nents: int = 0) -> StreamMapping | None:
    return _map_runs(dev, [(pa, size)], direction, kind, sg_nents)


def _release(dev: Device, sm: StreamMapping) -> None:
    """Forget a mapping and give its bus range back (IOTLB invalidated, bounce slot freed)."""
    dev.dma_debug.drop_stream(sm)
    if dev.machine.closed:
        return
    if sm.extra.get("iommu"):
        dev.machine.backend.unmap_streaming(dev, sm.dma_addr, sm.runs)  # type: ignore[union-attr]
    if "bounce" in sm.extra:
        swiotlb_of(dev.machine).release(sm.extra["bounce"], sm.size)


def _cpu_side(dev: Device, sm: StreamMapping, off: int, size: int, direction: int) -> None:
    """sync_for_cpu of [off, off+size) of a mapping: invalidate, and with a
    bounce buffer copy it back (FROM_DEVICE / BIDIRECTIONAL, as swiotlb)."""
    bounce = sm.extra.get("bounce")
    if bounce is None:
        for pa, n in sm.phys_of(off, size):
            arch_sync_dma_for_cpu(dev, pa, n, direction)
        return
    arch_sync_dma_for_cpu(dev, bounce + off, size, direction)
    if direction != DMA_TO_DEVICE:
        swiotlb_of(dev.machine).to_cpu(sm.runs[0][0] + off, bounce + off, size)


def _device_side(dev: Device, sm: StreamMapping, off: int, size: int, direction: int) -> None:
    """sync_for_device: with a bounce buffer copy the CPU's data in first
    (TO_DEVICE / BIDIRECTIONAL), then clean."""
    bounce = sm.extra.get("bounce")
    if bounce is None:
        for pa, n in sm.phys_of(off, size):
            arch_sync_dma_for_device(dev, pa, n, direction)
        return
    if direction != DMA_FROM_DEVICE:
        swiotlb_of(dev.machine).to_device(sm.runs[0][0] + off, bounce + off, size)
    arch_sync_dma_for_device(dev, bounce + off, size, direction)


def dma_map_single(dev: Device, cpu_addr: int, size: int, direction: int) -> int:
    """Map ``size`` bytes of direct-mapped kernel memory for one transfer; the
    device owns them until a sync for the CPU or the unmap.  Returns the bus
    address, or DMA_MAPPING_ERROR (check with dma_mapping_error)."""
    dev = _device(dev)
    d = _direction(direction, "dma_map_single")
    size = _size(size, "dma_map_single")
    m = dev.machine
    cpu_addr = u64("cpu_addr", cpu_addr)
    if not m.virt_addr_valid(cpu_addr) or not m.virt_addr_valid(cpu_addr + size - 1):
        raise InvalidArgumentError(f"dma_map_single: {cpu_addr:#x}+{size:#x} is not in the direct map "
                                   f"(a vmalloc, ioremap or dma_alloc_coherent address cannot be mapped)",
                                   cpu_addr)
    sm = _map(dev, m.virt_to_phys(cpu_addr), size, d, "single")
    return DMA_MAPPING_ERROR if sm is None else sm.dma_addr


def dma_map_page(dev: Device, page: Page, offset: int, size: int, direction: int) -> int:
    """Map ``size`` bytes from ``offset`` into ``page`` (dma_map_page_attrs)."""
    dev = _device(dev)
    if not isinstance(page, Page):
        raise TypeError(f"expected a Page, got {type(page).__name__}")
    d = _direction(direction, "dma_map_page")
    size = _size(size, "dma_map_page")
    _same_machine(dev, page, "dma_map_page")
    pa = page.phys_addr + u64("offset", offset)
    _ram_span(dev, pa, size, "dma_map_page")
    sm = _map(dev, pa, size, d, "page")
    return DMA_MAPPING_ERROR if sm is None else sm.dma_addr


def dma_mapping_error(dev: Device, dma_addr: int) -> bool:
    """True when a map call failed; calling it is what DMA-API debug wants to see."""
    dev = _device(dev)
    dma_addr = u64("dma_addr", dma_addr)
    if dma_addr == DMA_MAPPING_ERROR:
        return True
    sm = dev.dma_debug.streams.get(dma_addr)
    if sm is not None:
        sm.checked = True
    return False


def _lookup(dev: Device, what: str, dma_addr: int, size: int, direction: int, *, exact: bool) -> StreamMapping | None:
    """The mapping a sync/unmap names, after the debug.c checks (None: report
    recorded and the call does nothing)."""
    md = machine_debug(dev.machine)
    sm = dev.dma_debug.find_stream(dma_addr, size) if not exact else dev.dma_debug.streams.get(dma_addr)
    if sm is None:
        past = dev.dma_debug.unmapped.get(dma_addr)
        if past is not None:
            md.violation(dev, DmaDoubleUnmapError, f"{what}: DMA address {dma_addr:#x} of device {dev.name!r} "
                         f"was already unmapped", dma_addr)
        else:
            md.violation(dev, DmaUnmapError, f"{what}: device {dev.name!r} never mapped DMA address "
                         f"{dma_addr:#x} (+{size:#x})", dma_addr)
        return None
    if exact and size != sm.size:
        md.violation(dev, DmaSyncError, f"{what}: size {size:#x} differs from the {sm.size:#x} bytes mapped at "
                     f"{dma_addr:#x}", dma_addr)
    if not exact and dma_addr + size > sm.dma_addr + sm.size:
        md.violation(dev, DmaSyncError, f"{what}: {dma_addr:#x}+{size:#x} runs past the mapping "
                     f"{sm.dma_addr:#x}+{sm.size:#x}", dma_addr)
    if direction != sm.direction:
        md.violation(dev, DmaSyncError, f"{what}: direction {dir_name(direction)} differs from the mapping's "
                     f"{dir_name(sm.direction)} at {dma_addr:#x}", dma_addr)
    return sm


def _unmap(dev: Device, what: str, dma_addr: int, size: int, direction: DmaDirection,
           sm: StreamMapping | None = None) -> None:
    if sm is None:
        sm = _lookup(dev, what, dma_addr, size, direction, exact=True)
        if sm is None:
            return
    if not sm.checked and sm.kind != "sg":
        machine_debug(dev.machine).violation(
            dev, DmaMappingErrorUncheckedError, f"{what}: device driver failed to check map error for "
            f"{sm.dma_addr:#x}+{sm.size:#x} ({dir_name(sm.direction)}): dma_mapping_error() was never called",
            sm.dma_addr)
    _cpu_side(dev, sm, 0, sm.size, direction)
    _release(dev, sm)


def dma_unmap_single(dev: Device, dma_addr: int, size: int, direction: int) -> None:
    """End a dma_map_single mapping (size and direction as mapped); the CPU owns the buffer again."""
    dev = _device(dev)
    _unmap(dev, "dma_unmap_single", u64("dma_addr", dma_addr), _size(size, "dma_unmap_single"),
           _direction(direction, "dma_unmap_single"))


def dma_unmap_page(dev: Device, dma_addr: int, size: int, direction: int) -> None:
    """End a dma_map_page mapping."""
    dev = _device(dev)
    _unmap(dev, "dma_unmap_page", u64("dma_addr", dma_addr), _size(size, "dma_unmap_page"),
           _direction(direction, "dma_unmap_page"))


def _sync(dev: Device, what: str, dma_addr: int, size: int, direction: int, for_cpu: bool) -> None:
    dev = _device(dev)
    dma_addr, size = u64("dma_addr", dma_addr), _size(size, what)
    d = _direction(direction, what)
    sm = _lookup(dev, what, dma_addr, size, d, exact=False)
    if sm is None:
        return
    _sync_mapping(dev, sm, dma_addr - sm.dma_addr, size, d, for_cpu)


def _sync_mapping(dev: Device, sm: StreamMapping, off: int, size: int, direction: DmaDirection,
                  for_cpu: bool) -> None:
    """The maintenance the caller's direction asks for (a wrong one does the wrong thing, as in Linux)."""
    size = min(size, sm.size - off)
    if for_cpu:
        _cpu_side(dev, sm, off, size, direction)
        sm.give_to_cpu(off, size)
    else:
        _device_side(dev, sm, off, size, direction)
        sm.give_to_device(off, size)


def dma_sync_single_for_cpu(dev: Device, dma_addr: int, size: int, direction: int) -> None:
    """Hand (part of) a mapping to the CPU: invalidate what the device may have written."""
    _sync(dev, "dma_sync_single_for_cpu", dma_addr, size, direction, True)


def dma_sync_single_for_device(dev: Device, dma_addr: int, size: int, direction: int) -> None:
    """Hand (part of) a mapping back to the device: write back what the CPU wrote."""
    _sync(dev, "dma_sync_single_for_device", dma_addr, size, direction, False)


# ---- scatter-gather ----

def _sg_check(sgl: Sequence[Scatterlist], nents: int, what: str) -> list[Scatterlist]:
    nents = u64("nents", nents)
    if not isinstance(sgl, Sequence) or not all(isinstance(s, Scatterlist) for s in sgl):
        raise TypeError(f"{what}: expected a list of Scatterlist entries")
    if nents == 0 or nents > len(sgl):
        raise InvalidArgumentError(f"{what}: nents {nents} is not between 1 and the table's {len(sgl)} entries")
    return list(sgl[:nents])


def dma_map_sg(dev: Device, sgl: Sequence[Scatterlist], nents: int, direction: int) -> int:
    """Map every entry; returns the number of bus segments (``sg_dma_address``/
    ``sg_dma_len`` of the first that many entries), 0 on failure.  Unmap and
    sync with the ``nents`` passed here, not the count returned."""
    dev = _device(dev)
    d = _direction(direction, "dma_map_sg")
    ents = _sg_check(sgl, nents, "dma_map_sg")
    spans = []
    for s in ents:
        size = _size(s.length, "dma_map_sg entry")
        _same_machine(dev, s.page, "dma_map_sg")
        pa = s.phys_addr
        _ram_span(dev, pa, size, "dma_map_sg")
        spans.append((pa, size))
    be = dev.machine.backend
    # Behind an IOMMU, entries whose inner boundaries are page-aligned become one
    # bus segment (iommu_dma_map_sg): the reason scatter lists and IOMMUs go together.
    inner_aligned = all((pa + size) % PAGE_SIZE == 0 for pa, size in spans[:-1]) and \
        all(pa % PAGE_SIZE == 0 for pa, _ in spans[1:])
    if getattr(be, "map_streaming", None) is not None and inner_aligned:
        one = _map_runs(dev, spans, d, "sg", sg_nents=len(ents))
        if one is None:
            return 0
        one.checked = True
        for s in ents:
            s.dma_address, s.dma_length = 0, 0
        ents[0].dma_address, ents[0].dma_length = one.dma_addr, one.size
        return 1
    done: list[StreamMapping] = []
    try:
        for s, (pa, size) in zip(ents, spans, strict=True):
            sm = _map(dev, pa, size, d, "sg", sg_nents=len(ents))
            if sm is None:   # bounce pool full: nothing stays mapped
                for old in done:
                    _release(dev, old)
                return 0
            sm.checked = True
            done.append(sm)
            s.dma_address, s.dma_length = sm.dma_addr, size
    except BaseException:
        for sm in done:
            _release(dev, sm)
        raise
    return len(ents)


def _sg_maps(dev: Device, ents: list[Scatterlist], nents: int, d: DmaDirection, what: str,
             ) -> list[tuple[Scatterlist, StreamMapping]]:
    out = []
    md = machine_debug(dev.machine)
    for i, s in enumerate(ents):
        if i and not s.dma_length:
            continue   # coalesced into an earlier segment
        sm = _lookup(dev, what, s.dma_address, s.dma_length or s.length, d, exact=True)
        if sm is None:
            continue
        if sm.sg_nents and sm.sg_nents != nents:
            md.violation(dev, DmaSyncError, f"{what}: nents {nents} differs from the {sm.sg_nents} entries "
                         f"passed to dma_map_sg", s.dma_address)
        out.append((s, sm))
    return out


def dma_unmap_sg(dev: Device, sgl: Sequence[Scatterlist], nents: int, direction: int) -> None:
    """End a dma_map_sg mapping; ``nents`` as passed to dma_map_sg."""
    dev = _device(dev)
    d = _direction(direction, "dma_unmap_sg")
    ents = _sg_check(sgl, nents, "dma_unmap_sg")
    for _s, sm in _sg_maps(dev, ents, len(ents), d, "dma_unmap_sg"):
        _unmap(dev, "dma_unmap_sg", sm.dma_addr, sm.size, d, sm)


def _sync_sg(dev: Device, sgl: Sequence[Scatterlist], nents: int, direction: int, for_cpu: bool, what: str) -> None:
    dev = _device(dev)
    d = _direction(direction, what)
    ents = _sg_check(sgl, nents, what)
    for _s, sm in _sg_maps(dev, ents, len(ents), d, what):
        _sync_mapping(dev, sm, 0, sm.size, d, for_cpu)


def dma_sync_sg_for_cpu(dev: Device, sgl: Sequence[Scatterlist], nents: int, direction: int) -> None:
    """dma_sync_single_for_cpu for every entry."""
    _sync_sg(dev, sgl, nents, direction, True, "dma_sync_sg_for_cpu")


def dma_sync_sg_for_device(dev: Device, sgl: Sequence[Scatterlist], nents: int, direction: int) -> None:
    """dma_sync_single_for_device for every entry."""
    _sync_sg(dev, sgl, nents, direction, False, "dma_sync_sg_for_device")
