"""Where dmamap used to differ from Linux (issue 11): each test names the
kernel function (or hardware behaviour) it now follows."""

from __future__ import annotations

import pytest

import dmamap
from dmamap import PAGE_SHIFT, PAGE_SIZE, PortRange
from dmamap.errors import PortRangeFault, SegmentationFault

P = PAGE_SIZE
RAM = 16 << 20
PLATFORMS = ("x86", "arm", "sram", "riscv")


def test_zap_vma_ptes_on_non_pfnmap_returns_quietly() -> None:
    """mm/memory.c zap_vma_ptes: `if (... !(vma->vm_flags & VM_PFNMAP)) return;` --
    a VMA of pages is left as it is, no error."""
    with dmamap.Machine("arm", ram=RAM) as m:
        mm = m.new_address_space()
        vma = mm.mmap(2 * P)
        page = m.alloc_pages(1)
        dmamap.vm_insert_page(vma, vma.start, page)
        before = (mm.stats, page.mapcount)
        dmamap.zap_vma_ptes(vma, vma.start, 2 * P)
        assert mm.count_present(vma.start, 2 * P) == 1 and (mm.stats, page.mapcount) == before
        pfn = mm.mmap(P)
        dmamap.remap_pfn_range(pfn, pfn.start, page.pfn, P, pfn.page_prot)
        dmamap.zap_vma_ptes(pfn, pfn.start, P)   # a PFN map is zapped
        assert mm.count_present(pfn.start, P) == 0


@pytest.mark.parametrize("platform", PLATFORMS)
def test_pio_past_mapped_ports_is_one_fault_class(platform: str) -> None:
    """Hardware: an access past the ports mapped faults (#GP on x86, an abort from
    the I/O window on ARM/RISC-V), both SIGSEGV to user space: PortRangeFault,
    a SegmentationFault, on every platform; the device sees nothing."""
    with dmamap.Machine(platform, ram=RAM) as m:
        log: list[tuple[int, int]] = []
        m.add_device("uart", ports=[PortRange(0x3F8, 16, read=lambda o, s: log.append((o, s)) or 0)])
        mm = m.new_address_space()
        vma = mm.mmap(P)
        dmamap.pio_map(vma, 0x3F8, 8)
        mm.read8(vma.start + 7)
        with pytest.raises(PortRangeFault) as info:
            mm.read8(vma.start + 8)
        assert isinstance(info.value, SegmentationFault)
        with pytest.raises(PortRangeFault):
            mm.write32(vma.start + 12, 1)
        assert log == [(7, 1)]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_unclaimed_port_reads_all_ones(platform: str) -> None:
    """PCI master abort: a port read no device claims returns all-ones and a write
    is dropped, both counted; through pio_map as well as from the kernel."""
    with dmamap.Machine(platform, ram=RAM) as m:
        m.add_device("kbd", ports=[(0x60, 8)])
        assert m.port_read(0x100) == 0xFF and m.port_read(0x100, 2) == 0xFFFF
        assert m.port_read(0x100, 4) == 0xFFFFFFFF
        m.port_write(0x100, 0x12)
        mm = m.new_address_space()
        vma = mm.mmap(P)
        dmamap.pio_map(vma, 0x200, 8)   # no device there
        assert mm.read32(vma.start) == 0xFFFFFFFF
        mm.write8(vma.start, 1)
        assert m.stats.port_master_aborts == 6


def test_x86_pfn_map_adopts_existing_memtype() -> None:
    """arch/x86/mm/pat/memtype.c reserve_pfn_range + is_new_memtype_allowed: a WC
    PFN map of MMIO already reserved UC- maps UC-; a UC- map over a WB reservation
    is refused.  vmf_insert_pfn_prot adopts the same way (track_pfn_insert)."""
    with dmamap.Machine("x86", ram=RAM) as m:
        dev = m.add_device("fb", bars=[4 * P])
        bar = dev.bar(0)[0]
        mm = m.new_address_space()
        uc = mm.mmap(P)
        dmamap.mmio_map(uc, bar, P, cache="uc")
        wc = mm.mmap(P, flags=dmamap.VmFlags.VM_PFNMAP)
        dmamap.vmf_insert_pfn_prot(wc, wc.start, bar >> PAGE_SHIFT, dmamap.pgprot_writecombine(wc.page_prot))
        assert mm.translate(wc.start).cache == "UC-"
        wb = mm.mmap(P)
        dmamap.remap_pfn_range(wb, wb.start, (bar >> PAGE_SHIFT) + 1, P, dmamap.pgprot_cached(wb.page_prot))
        other = mm.mmap(P)
        with pytest.raises(dmamap.MemtypeConflictError):
            dmamap.remap_pfn_range(other, other.start, (bar >> PAGE_SHIFT) + 1, P,
                                   dmamap.pgprot_noncached(other.page_prot))
        assert mm.count_present(other.start, P) == 0 and m.attribute_reports == []
