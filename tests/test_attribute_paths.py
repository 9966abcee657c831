"""Attribute checks on every PTE insertion path (issue 11): the page path, the
2004 nopage driver with a cacheable alias, set_memory_uc/wc/wb, x86 PAT."""

from __future__ import annotations

import pytest

import dmamap
from dmamap import PAGE_SHIFT, PAGE_SIZE, VmFault
from dmamap.errors import MemtypeConflictError

P = PAGE_SIZE
RAM = 16 << 20


def _nopage_driver(m: dmamap.Machine) -> tuple[dmamap.AddressSpace, dmamap.Vma, dmamap.DmaBuffer, dmamap.Device]:
    dev = m.add_device("snd")
    buf = dmamap.dma_alloc_coherent(dev, 2 * P)
    mm = m.new_address_space()
    vma = mm.mmap(buf.size)

    def fault(vmf: VmFault) -> dmamap.Page:   # the 2004 driver, fixed to return the right page
        return dmamap.dma_coherent_to_page(dev, buf.cpu_addr, buf.dma_handle, vmf.pgoff << PAGE_SHIFT)

    vma.set_fault_handler(fault)
    return mm, vma, buf, dev


@pytest.mark.parametrize("platform", ["arm", "riscv"])
def test_nopage_with_cacheable_alias_is_reported(platform: str) -> None:
    """A fault handler returning the right page of a non-coherent coherent buffer with
    the VMA's default cacheable protection gives a cacheable alias of an uncached
    buffer: recorded in attribute_reports (mm/memory.c finish_fault)."""
    with dmamap.Machine(platform, ram=RAM) as m:
        mm, vma, buf, dev = _nopage_driver(m)
        mm.read(vma.start, 8)
        reports = m.attribute_reports
        assert len(reports) == 1
        r = reports[0]
        assert r["requested"] == m.isa_info.cached and r["existing"] != r["requested"]
        assert r["start"] == dmamap.dma_coherent_to_pfn(dev, buf.cpu_addr, buf.dma_handle) << PAGE_SHIFT


@pytest.mark.parametrize("platform", ["arm", "riscv"])
def test_nopage_with_cacheable_alias_is_refused_when_strict(platform: str) -> None:
    with dmamap.Machine(platform, ram=RAM, strict_memtype=True) as m:
        mm, vma, _, _ = _nopage_driver(m)
        with pytest.raises(MemtypeConflictError):
            mm.read(vma.start, 8)
        assert mm.count_present(vma.start, len(vma)) == 0
        assert m.attribute_reports == []


@pytest.mark.parametrize("platform", ["arm", "riscv"])
def test_vm_insert_page_with_cacheable_alias(platform: str) -> None:
    """vm_insert_page of a coherent buffer's page into a cacheable VMA: reported,
    refused when strict (nothing inserted); the right attribute passes."""
    for strict in (False, True):
        with dmamap.Machine(platform, ram=RAM, strict_memtype=strict) as m:
            dev = m.add_device("d")
            buf = dmamap.dma_alloc_coherent(dev, P)
            page = dmamap.dma_coherent_to_page(dev, buf.cpu_addr, buf.dma_handle)
            mm = m.new_address_space()
            vma = mm.mmap(P)
            if strict:
                with pytest.raises(MemtypeConflictError):
                    dmamap.vm_insert_page(vma, vma.start, page)
                assert mm.count_present(vma.start, P) == 0 and page.mapcount == 0
            else:
                dmamap.vm_insert_page(vma, vma.start, page)
                assert len(m.attribute_reports) == 1
            ok = mm.mmap(P)
            ok.page_prot = ok.page_prot.with_cache(m.memtype_lookup(page.phys_addr))   # the kernel alias's type
            before = len(m.attribute_reports)
            dmamap.vm_insert_page(ok, ok.start, page)
            assert len(m.attribute_reports) == before


def test_builtin_page_fault_is_checked() -> None:
    """The built-in page fault (and its fault-around) checks the VMA's attribute too."""
    with dmamap.Machine("arm", ram=RAM, strict_memtype=True) as m:
        dev = m.add_device("d")
        buf = dmamap.dma_alloc_coherent(dev, 4 * P)
        pfn = dmamap.dma_coherent_to_pfn(dev, buf.cpu_addr, buf.dma_handle)
        mm = m.new_address_space()
        vma = mm.mmap(4 * P)
        vma.set_builtin_fault("page", [(pfn, 4)], fault_around=4)
        with pytest.raises(MemtypeConflictError):
            mm.read(vma.start, 8)
        assert mm.count_present(vma.start, 4 * P) == 0
        good = mm.mmap(4 * P)
        good.page_prot = good.page_prot.with_cache(m.memtype_lookup(pfn << PAGE_SHIFT))
        good.set_builtin_fault("page", [(pfn, 4)], fault_around=4)
        mm.read(good.start, 8)
        assert mm.count_present(good.start, 4 * P) == 4


def test_x86_page_alias_is_reported_not_refused() -> None:
    """x86: PAT does not track page inserts (vm_insert_page, a page-returning fault):
    a UC- alias of WB coherent RAM is mapped and reported, never refused."""
    with dmamap.Machine("x86", ram=RAM) as m:
        mm, vma, _, _ = _nopage_driver(m)
        vma.page_prot = dmamap.pgprot_noncached(vma.page_prot)
        mm.read(vma.start, 8)
        assert mm.translate(vma.start).cache == "UC-"
        assert [(r["requested"], r["existing"]) for r in m.attribute_reports] == [("UC-", "WB")]


@pytest.mark.parametrize("platform", ["x86", "arm"])
def test_set_memory_uc_then_cacheable_mapping(platform: str) -> None:
    """set_memory_uc reserves the pages' type (arch/x86/mm/pat/set_memory.c): a
    cacheable remap_pfn_range of them then conflicts (refused on x86, reported on
    arm); set_memory_wb releases it; a second set_memory_wc conflicts."""
    with dmamap.Machine(platform, ram=RAM) as m:
        page = m.alloc_pages(2)
        kaddr = m.page_address(page)
        dmamap.set_memory_uc(kaddr, 2)
        assert m.memtype_lookup(page.phys_addr) == m.isa_info.noncached
        mm = m.new_address_space()
        vma = mm.mmap(2 * P)
        if platform == "x86":
            with pytest.raises(MemtypeConflictError):
                dmamap.remap_pfn_range(vma, vma.start, page.pfn, 2 * P, vma.page_prot)
            with pytest.raises(MemtypeConflictError):
                dmamap.set_memory_wc(kaddr, 2)
        else:
            dmamap.remap_pfn_range(vma, vma.start, page.pfn, 2 * P, vma.page_prot)
            assert len(m.attribute_reports) == 1
            mm.munmap(vma)
            vma = mm.mmap(2 * P)
        dmamap.set_memory_wb(kaddr, 2)
        assert m.memtype_lookup(page.phys_addr) is None
        dmamap.remap_pfn_range(vma, vma.start, page.pfn, 2 * P, vma.page_prot)
        with pytest.raises(dmamap.InvalidArgumentError):
            dmamap.set_memory_wb(kaddr, 2)
        with pytest.raises(dmamap.VirtToPageError):
            dmamap.set_memory_uc(dmamap.KernelAddress(1 << 12, m), 1)
