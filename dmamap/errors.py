"""The exceptions dmamap raises: one root, one subclass per rule broken.

Every class also inherits the builtin that fits, so callers may catch
``ValueError`` or ``MemoryError`` as usual.  Each instance carries ``addr``,
the virtual or physical address the rule was broken at (0 when none).
"""

from __future__ import annotations


class DmamapError(Exception):
    """Root of every dmamap error."""

    rule = "dmamap error"

    def __init__(self, message: str = "", addr: int = 0) -> None:
        super().__init__(message or self.rule)
        self.addr = addr


class InvalidArgumentError(DmamapError, ValueError):
    """An argument is out of range, misaligned, wraps, or is of the wrong kind."""

    rule = "invalid argument"


class MmapError(InvalidArgumentError):
    """A driver's mmap refused the VMA: larger than the object from its offset (-ENXIO)."""

    rule = "VMA does not fit the mapped object"


class OutOfMemoryError(DmamapError, MemoryError):
    """Emulated RAM (or a virtual range) is exhausted."""

    rule = "out of emulated memory"


class PhysicalAddressError(DmamapError, ValueError):
    """A physical access falls outside memory regions."""

    rule = "physical address outside memory"


class AddressRangeError(DmamapError, ValueError):
    """An address range lies outside the VMA or address space it must be in."""

    rule = "address range outside VMA"


class AccessFault(DmamapError):
    """A CPU access through an address space faulted."""

    rule = "access fault"


class SegmentationFault(AccessFault):
    """SIGSEGV: the address is mapped by no VMA."""

    rule = "no VMA at address (SIGSEGV)"


class PortRangeFault(SegmentationFault):
    """SIGSEGV: an access past the ports a ``pio_map`` reaches (#GP on x86, an
    abort from the I/O window elsewhere: one class on every platform)."""

    rule = "access past the mapped ports (SIGSEGV)"


class ProtectionFault(AccessFault, PermissionError):
    """SIGSEGV: the access is not allowed by the PTE or the VMA."""

    rule = "protection violation (SIGSEGV)"


class AlignmentFault(AccessFault):
    """Unaligned access to Device memory (AArch64 alignment fault)."""

    rule = "unaligned access to Device memory"


class BusError(AccessFault):
    """SIGBUS raised by the fault path."""

    rule = "SIGBUS"


class NoFaultHandlerError(BusError):
    """A not-present page in a VMA that has no fault handler."""

    rule = "not-present page with no fault handler"


class CowFaultError(BusError):
    """A private (copy-on-write) write fault on non-RAM: SIGBUS, not a copy."""

    rule = "private write fault on non-RAM"


class FaultHandlerSigbus(BusError):
    """The fault handler returned VM_FAULT_SIGBUS (or inserted nothing)."""

    rule = "fault handler returned SIGBUS"


class BadPageError(DmamapError, ValueError):
    """A page descriptor was asked of, or handed out for, memory that may not have one.

    Raised when a fault handler returns a page for non-RAM (``pfn_valid()`` is
    false), an anonymous, free or page-table page, and by ``pfn_to_page`` on
    non-RAM.
    """

    rule = "page descriptor for non-RAM or unsuitable page"


class VmaKindError(DmamapError, ValueError):
    """PFN insertion into a VMA that is not VM_PFNMAP/VM_MIXEDMAP, or is both."""

    rule = "PFN insert into the wrong VMA kind"


class PteBusyError(DmamapError):
    """Prefault or insert into a PTE that is not empty (the remap is rolled back)."""

    rule = "prefault into a non-empty PTE"


class MemtypeConflictError(DmamapError):
    """One physical range mapped with conflicting cache types (x86 PAT)."""

    rule = "conflicting memory types"


class VirtToPageError(DmamapError, ValueError):
    """virt_to_page() on an address outside the direct map of RAM."""

    rule = "virt_to_page on a non direct-mapped address"


class VmaNotMappedError(DmamapError, LookupError):
    """The VMA was already unmapped, or belongs to another address space."""

    rule = "VMA not mapped"


class MachineClosedError(DmamapError, RuntimeError):
    """The machine (or address space) was closed."""

    rule = "machine closed"


class UnclaimedIOError(DmamapError, LookupError):
    """An MMIO or port access that no device claims."""

    rule = "no device at address"


class DmaApiError(DmamapError):
    """DMA API misuse, as CONFIG_DMA_API_DEBUG reports it."""

    rule = "DMA API misuse"


class DmaFreeError(DmaApiError, ValueError):
    """Freeing DMA memory that was not allocated, or with the wrong size/address."""

    rule = "free of DMA memory that was not allocated as given"


class DmaDoubleFreeError(DmaFreeError):
    """Freeing DMA memory twice."""

    rule = "DMA double free"


class DmaUseAfterFreeError(DmaApiError, ValueError):
    """Mapping or using a DMA buffer that was freed."""

    rule = "use of a freed DMA buffer"


class DmaLeakError(DmaApiError):
    """A device is removed while its DMA buffers are still allocated or mapped."""

    rule = "DMA buffers still allocated or mapped at device release"


class DmaCpuOwnershipError(DmaApiError):
    """The CPU read or wrote a streaming buffer the device owns (mapped, or
    handed back with dma_sync_*_for_device, and not yet synced for the CPU)."""

    rule = "CPU access to a device-owned DMA buffer"


class DmaDeviceOwnershipError(DmaApiError):
    """The device wrote a streaming buffer the CPU owns (after
    dma_sync_*_for_cpu), or one mapped DMA_TO_DEVICE."""

    rule = "device write to a CPU-owned DMA buffer"


class DmaSyncError(DmaApiError, ValueError):
    """A sync or unmap whose size or direction differs from the mapping's."""

    rule = "DMA sync/unmap with a different size or direction than the map"


class DmaUnmapError(DmaApiError, ValueError):
    """Unmapping or syncing a DMA address that was never mapped."""

    rule = "DMA unmap of memory that was never mapped"


class DmaDoubleUnmapError(DmaUnmapError):
    """Unmapping a streaming mapping twice."""

    rule = "DMA double unmap"


class DmaMappingErrorUncheckedError(DmaApiError):
    """A streaming mapping was used or unmapped without dma_mapping_error()
    ever being called on its address (debug.c check_unmap)."""

    rule = "dma_mapping_error() not checked"


class IommuFaultError(DmamapError):
    """A device DMA to an IOVA its IOMMU domain does not map, or a write to a
    read-only one: the IOMMU refuses the transfer and records the fault."""

    rule = "IOMMU fault"


class StrategyError(DmamapError, ValueError):
    """A mapping strategy that is illegal for this memory (e.g. pages for non-RAM)."""

    rule = "illegal mapping strategy"


class BackendError(DmamapError, LookupError):
    """An unknown or broken backend name."""

    rule = "unknown backend"


class HandlerError(DmamapError):
    """A Python callback failed; the original exception is chained."""

    rule = "callback failed"


class IoremapError(DmamapError, ValueError):
    """ioremap of memory that is not MMIO, or iounmap/readl of an address ioremap did not return."""

    rule = "ioremap of non-MMIO or unknown __iomem address"


class IrqError(DmamapError, ValueError):
    """request_irq/free_irq misuse: a line taken without IRQF_SHARED, a bad line, a free of no handler."""

    rule = "interrupt line misuse"


class VmallocError(DmamapError, ValueError):
    """remap_vmalloc_range of memory vmalloc_user did not return, or a range past its end."""

    rule = "remap of memory that is not a vmalloc_user area"



class ZeroCopyError(DmamapError, ValueError):
    """A zero-copy view of memory the CPU reaches only through emulation: the
    cache model of a non-coherent machine, an uncached or write-combining
    mapping, Device memory, MMIO, ports, SRAM, or a physically discontiguous
    range.  Copy in and out instead (``readinto`` / ``write``)."""

    rule = "zero-copy view of memory that needs emulation"

__all__ = [name for name, obj in list(globals().items()) if isinstance(obj, type) and issubclass(obj, DmamapError)]
