"""What a new user sees at the REPL: hex addresses in reprs, flag names, a
trimmed namespace, spelled-out signatures and a package docstring."""

from __future__ import annotations

import inspect
import pkgutil
import re

import pytest

import dmamap
from dmamap import PAGE_SIZE, VmFlags


def test_reprs_show_addresses_in_hex() -> None:
    """Translation, Region, DmaBuffer, SgEntry and SgTable print addresses in hex,
    never as long decimals."""
    with dmamap.Machine("x86", ram=16 << 20) as m:
        dev = m.add_device("nic", bars=[PAGE_SIZE])
        buf = dmamap.dma_alloc_coherent(dev, 2 * PAGE_SIZE)
        mm = m.new_address_space()
        vma = mm.mmap(2 * PAGE_SIZE)
        dmamap.dma_mmap_coherent(dev, vma, *buf)
        t = mm.translate(vma.start)
        sg = dmamap.dma_alloc_coherent_sg(dev, 3 * PAGE_SIZE)
        texts = {
            "translation": repr(t), "buffer": repr(buf), "sg": repr(sg), "entry": repr(sg[0]),
            "regions": repr(m.memory_map), "page": repr(dmamap.virt_to_page(buf.cpu_addr, machine=m)),
        }
        assert t is not None
        assert f"va={t.va:#x}" in texts["translation"] and f"entry={t.entry:#018x}" in texts["translation"]
        assert f"dma_handle={buf.dma_handle:#x}" in texts["buffer"] and f"size={buf.size:#x}" in texts["buffer"]
        assert f"cpu_addr={int(sg[0].cpu_addr):#x}" in texts["entry"]
        assert texts["sg"] == "<SgTable 1 entries, 3 pages, device 'nic'>"
        assert "owner='nic BAR0'" in texts["regions"] and "size=0x1000000" in texts["regions"]
        for name, text in texts.items():
            assert not re.search(r"=\d{5,}", text), (name, text)   # no long decimal numbers


def test_event_and_fault_reprs_show_addresses_in_hex() -> None:
    """DmaDebugEvent, Scatterlist, VmFault and IommuFault print addresses in hex."""
    from dmamap.iommu import iommu_of

    texts: list[str] = []
    with dmamap.Machine("arm", ram=16 << 20) as m:
        dev = m.add_device("nic")
        m.dma_debug_mode = "record"
        rx = dmamap.kmalloc(m, 2048)
        h = dmamap.dma_map_single(dev, rx, 2048, dmamap.DMA_FROM_DEVICE)
        m.kernel.read(rx, 4)
        dmamap.dma_unmap_single(dev, h, 2048, dmamap.DMA_FROM_DEVICE)
        texts += [repr(e) for e in m.dma_debug_report().events]
        sgl = dmamap.sg_init_table(1)
        dmamap.sg_set_page(sgl[0], m.alloc_pages(1), PAGE_SIZE, 0)
        dmamap.dma_map_sg(dev, sgl, 1, dmamap.DMA_TO_DEVICE)
        texts.append(repr(sgl[0]))
        mm = m.new_address_space()
        vma = mm.mmap(PAGE_SIZE)
        vma.set_fault_handler(lambda vmf: (texts.append(repr(vmf)), dmamap.VM_FAULT_SIGBUS)[1])
        with pytest.raises(dmamap.DmamapError):
            mm.read(vma.start, 1)
    with dmamap.Machine("iommu", ram=16 << 20) as m:
        dev = m.add_device("nic")
        with pytest.raises(dmamap.IommuFaultError):
            dev.dma_read(0x100000, 4)
        texts.append(repr(iommu_of(m).faults[-1]))
    assert len(texts) >= 5 and "iova=0x100000" in texts[-1]
    for text in texts:
        assert not re.search(r"=\d{5,}", text), text


def test_vmflags_print_names() -> None:
    """str() and format() of VmFlags give flag names on every supported Python."""
    f = VmFlags.VM_READ | VmFlags.VM_WRITE | VmFlags.VM_PFNMAP
    assert str(f) == "VM_READ|VM_WRITE|VM_PFNMAP"
    assert f"{VmFlags.VM_IO}" == "VM_IO"
    assert str(VmFlags(0)) == "0"
    assert str(VmFlags(0x1 | 0x100)) == "VM_READ|0x100"


def test_namespace_is_all_plus_submodules() -> None:
    """Every public name of dmamap is in __all__ or is one of its submodules, and
    __all__ names only what exists (nothing from importlib or __future__ leaks)."""
    submodules = {m.name for m in pkgutil.iter_modules(dmamap.__path__)}
    public = {n for n in dir(dmamap) if not n.startswith("_")}
    assert public - set(dmamap.__all__) <= submodules
    for leaked in ("annotations", "version", "PackageNotFoundError", "resolve_machine"):
        assert leaked not in public
    assert all(hasattr(dmamap, n) for n in dmamap.__all__)
    assert len(dmamap.__all__) == len(set(dmamap.__all__))
    assert "BadPageError" in dmamap.__all__ and "dma_mmap_coherent" in dmamap.__all__


def test_add_device_spells_out_its_arguments() -> None:
    """Machine.add_device shows bars/ports/read/write (no **kwargs) in its signature."""
    params = inspect.signature(dmamap.Machine.add_device).parameters
    assert list(params) == ["self", "name", "bars", "ports", "read", "write"]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for n, p in params.items() if n not in ("self", "name"))
    with dmamap.Machine("x86", ram=1 << 20) as m:
        dev = m.add_device("uart", ports=[(0x3F8, 8)], read=lambda off, size: 0x5A)
        assert m.port_read(0x3F8) == 0x5A and dev.ports[0].base == 0x3F8


def test_package_docstring_is_a_map() -> None:
    """The package docstring names the helpers, the machine and where the docs are."""
    doc = dmamap.__doc__ or ""
    for word in ("dma_mmap_coherent", "mmio_map", "Machine", "available_backends", "DmamapError", "dmamap info",
                 "mkdocs"):
        assert word in doc
    assert len(doc.splitlines()) < 40
