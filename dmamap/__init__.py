"""dmamap: architecture-portable mmap helpers for device memory, and an emulated
machine to run them on (real x86-64 / AArch64 page tables, page descriptors, a
non-snooped write-back cache, devices with DMA engines).

A driver calls one helper per memory kind and the platform backend does the
rest:

- coherent DMA: ``dma_alloc_coherent``, ``dma_mmap_coherent`` (``*_sg`` for
  scatter lists), ``dma_coherent_to_page`` / ``dma_coherent_to_pfn``;
- device registers and port I/O: ``mmio_map``, ``pio_map``;
- the kernel primitives underneath: ``remap_pfn_range``, ``vmf_insert_pfn``,
  ``vm_insert_page``, ``pgprot_*``, ``virt_to_page`` and friends.

The machine: ``Machine(platform)`` (platforms: ``available_backends()``),
``Machine.add_device``, ``Machine.new_address_space``.  Every refusal is a
``DmamapError`` subclass naming the rule broken (``dmamap.errors``).

Documentation: the site built from docs/ (``mkdocs serve`` in a clone) has the
quick start, the porting and driver guides and the API reference.  From the
shell: ``dmamap info``, ``dmamap demo``, ``dmamap conformance BACKEND``.
"""

import typing as _typing

from dmamap.barrier import dma_wmb, mb, set_write_combining, wmb
from dmamap.chardev import DeviceFile
from dmamap.device import Bar, Device, PortRange
from dmamap.dma import (
    COHERENT_SG_VM_OPS,
    COHERENT_VM_OPS,
    DMA_ATTR_WRITE_COMBINE,
    MMIO_VM_OPS,
    PIO_VM_OPS,
    STRATEGIES,
    DmaBuffer,
    SgEntry,
    SgTable,
    dma_alloc_attrs,
    dma_alloc_coherent,
    dma_alloc_coherent_sg,
    dma_alloc_wc,
    dma_coherent_to_page,
    dma_coherent_to_pfn,
    dma_free_attrs,
    dma_free_coherent,
    dma_free_coherent_sg,
    dma_free_wc,
    dma_mmap_attrs,
    dma_mmap_coherent,
    dma_mmap_coherent_sg,
    dma_mmap_wc,
    dma_munmap_coherent,
    mmio_map,
    pio_map,
)
from dmamap.dma_debug import DmaDebugEvent, DmaDebugReport
from dmamap.dma_noncoherent import *  # noqa: F403
from dmamap.dma_noncoherent import __all__ as _noncoherent_names
from dmamap.dma_stream import *  # noqa: F403
from dmamap.dma_stream import __all__ as _stream_names
from dmamap.errors import *  # noqa: F403 - the documented exception classes
from dmamap.errors import DmamapError
from dmamap.errors import __all__ as _error_names
from dmamap.iomem import *  # noqa: F403 - ioremap and the readl/writel family
from dmamap.iomem import __all__ as _iomem_names
from dmamap.irq import *  # noqa: F403 - request_irq and friends
from dmamap.irq import __all__ as _irq_names
from dmamap.machine import KernelAddress, Machine, MachineStats, Page, Region
from dmamap.machine import resolve_machine as _resolve_machine
from dmamap.mm import (
    PAGE_SHIFT,
    PAGE_SIZE,
    PMD_ORDER,
    VM_FAULT_FALLBACK,
    VM_FAULT_NOPAGE,
    VM_FAULT_SIGBUS,
    AddressSpace,
    AsStats,
    PgProt,
    Translation,
    Vma,
    VmFault,
    VmFlags,
    change_protection,
    pgprot_cached,
    pgprot_dmacoherent,
    pgprot_noncached,
    pgprot_writecombine,
    remap_pfn_range,
    vm_insert_page,
    vmf_insert_mixed,
    vmf_insert_pfn,
    vmf_insert_pfn_pmd,
    vmf_insert_pfn_prot,
    zap_vma_ptes,
)
from dmamap.ndbuffer import DmaMemory, allocate
from dmamap.registry import available_backends, get_backend, register_backend, registry, unregister_backend
from dmamap.remote import access_process_vm, generic_access_phys
from dmamap.set_memory import set_memory_uc, set_memory_wb, set_memory_wc
from dmamap.slab import kfree, kmalloc, ksize
from dmamap.vipt import flush_dcache_page
from dmamap.vm_ops import VmOperations, fault_around_bytes, set_fault_around_bytes
from dmamap.vmap import (
    VMALLOC_VM_OPS,
    io_remap_pfn_range,
    remap_vmalloc_range,
    remap_vmalloc_range_partial,
    vfree,
    vm_insert_pages,
    vm_iomap_memory,
    vm_map_pages,
    vm_map_pages_zero,
    vmalloc_to_page,
    vmalloc_user,
)


def virt_to_page(kaddr: int, *, machine: Machine | None = None) -> Page:
    """Page descriptor of a direct-mapped RAM kernel address; anything else raises VirtToPageError."""
    return _resolve_machine(kaddr, machine).virt_to_page(kaddr)


def virt_to_phys(kaddr: int, *, machine: Machine | None = None) -> int:
    return _resolve_machine(kaddr, machine).virt_to_phys(kaddr)


def pfn_to_page(pfn: int, *, machine: Machine | None = None) -> Page:
    """Page descriptor of a RAM pfn; non-RAM raises BadPageError."""
    return _resolve_machine(pfn, machine).pfn_to_page(pfn)


def page_to_pfn(page: Page) -> int:
    if not isinstance(page, Page):
        raise TypeError(f"expected a Page, got {type(page).__name__}")
    return page.pfn


def page_address(page: Page) -> KernelAddress:
    if not isinstance(page, Page):
        raise TypeError(f"expected a Page, got {type(page).__name__}")
    return page.machine.page_address(page)


__all__ = [
    "__version__", "Machine", "MachineStats", "Page", "Region", "KernelAddress", "AddressSpace", "AsStats",
    "Vma", "VmFault", "VmFlags", "PgProt", "Translation", "Device", "Bar", "PortRange", "DmaBuffer", "SgEntry",
    "SgTable", "STRATEGIES", "PAGE_SIZE", "PAGE_SHIFT", "VM_FAULT_NOPAGE", "VM_FAULT_SIGBUS",
    "DmamapError", "dma_alloc_coherent", "dma_free_coherent", "dma_mmap_coherent", "dma_munmap_coherent",
    "dma_alloc_coherent_sg", "dma_free_coherent_sg", "dma_mmap_coherent_sg", "dma_coherent_to_page",
    "dma_coherent_to_pfn", "mmio_map", "pio_map", "remap_pfn_range", "vmf_insert_pfn", "vmf_insert_pfn_prot",
    "vmf_insert_mixed", "vm_insert_page", "zap_vma_ptes", "change_protection", "pgprot_noncached",
    "pgprot_writecombine", "pgprot_dmacoherent", "pgprot_cached", "virt_to_page", "virt_to_phys",
    "pfn_to_page", "page_to_pfn", "page_address", "available_backends", "get_backend", "register_backend",
    "unregister_backend", "registry", "set_memory_uc", "set_memory_wc", "set_memory_wb", "DeviceFile", "VmOperations",
]
__all__ += ["wmb", "mb", "dma_wmb", "set_write_combining", "flush_dcache_page", "DmaDebugEvent", "DmaDebugReport",
            "kmalloc", "kfree", "ksize", *_stream_names, *_noncoherent_names]
__all__ += [
    "DMA_ATTR_WRITE_COMBINE", "dma_alloc_attrs", "dma_free_attrs", "dma_alloc_wc", "dma_free_wc", "dma_mmap_attrs",
    "dma_mmap_wc", "io_remap_pfn_range", "remap_vmalloc_range", "remap_vmalloc_range_partial",
    "vfree", "vm_insert_pages", "vm_iomap_memory", "vm_map_pages", "vm_map_pages_zero", "vmalloc_to_page",
    "vmalloc_user",
]
__all__ += [
    "COHERENT_VM_OPS", "COHERENT_SG_VM_OPS", "MMIO_VM_OPS", "PIO_VM_OPS", "VMALLOC_VM_OPS", "VM_FAULT_FALLBACK",
    "PMD_ORDER", "vmf_insert_pfn_pmd", "access_process_vm", "generic_access_phys", "fault_around_bytes",
    "set_fault_around_bytes",
]
__all__ += ["allocate", "DmaMemory"]
__all__ += [n for n in _error_names + _iomem_names + _irq_names if n not in __all__]
del _error_names, _iomem_names, _irq_names



if _typing.TYPE_CHECKING:
    from dmamap._ndarray import DmaArray as DmaArray

    __version__: str
else:
    def __getattr__(name: str) -> object:
        if name == "__version__":   # read from the installed metadata when asked, not at import
            import importlib.metadata

            try:
                version = importlib.metadata.version("dmamap")
            except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a source tree
                version = "0.0.0"
            globals()["__version__"] = version
            return version
        # DmaArray is a numpy subclass: numpy (an optional extra) is imported only when it is asked for
        if name == "DmaArray":
            from dmamap.ndbuffer import dma_array_class

            return dma_array_class()
        raise AttributeError(f"module 'dmamap' has no attribute {name!r}")
