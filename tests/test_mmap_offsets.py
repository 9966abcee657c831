"""mmap offsets (issue 11): vma.vm_pgoff from mm.mmap(offset=), the helpers
mapping from it as dma_mmap_attrs does, size below the allocation, MmapError,
and a DeviceFile whose driver dispatches by offset as ALSA does."""

from __future__ import annotations

import pytest

import dmamap
from dmamap import PAGE_SHIFT, PAGE_SIZE, DeviceFile, Vma, VmFault
from dmamap.errors import InvalidArgumentError, MmapError

P = PAGE_SIZE
RAM = 16 << 20
PLATFORMS = ("x86", "arm", "sram", "riscv")


def test_mmap_offset_sets_vm_pgoff() -> None:
    """mmap(2): the byte offset must be page-aligned and becomes vm_pgoff in pages."""
    with dmamap.Machine("x86", ram=RAM) as m:
        mm = m.new_address_space()
        assert mm.mmap(P).vm_pgoff == 0
        v = mm.mmap(2 * P, offset=5 * P)
        assert v.vm_pgoff == 5
        v.vm_pgoff = 0   # drivers may rewrite it (DRM's fake offsets)
        assert v.vm_pgoff == 0
        before = len(mm.vmas)
        with pytest.raises(InvalidArgumentError):
            mm.mmap(P, offset=100)
        with pytest.raises(InvalidArgumentError):
            mm.mmap(2 * P, offset=(1 << 64) - P)
        assert len(mm.vmas) == before


@pytest.mark.parametrize("platform", PLATFORMS)
def test_dma_mmap_coherent_maps_from_vm_pgoff(platform: str) -> None:
    """dma_direct_mmap: remap from pfn + vma->vm_pgoff."""
    with dmamap.Machine(platform, ram=RAM) as m:
        dev = m.add_device("d")
        buf = dmamap.dma_alloc_coherent(dev, 4 * P)
        for i in range(4):
            dev.dma_write(buf.dma_handle + i * P, bytes([i + 1]) * 8)
        mm = m.new_address_space()
        vma = mm.mmap(2 * P, offset=2 * P)
        dmamap.dma_mmap_coherent(dev, vma, *buf)
        assert mm.read(vma.start, 1) == b"\x03" and mm.read(vma.start + P, 1) == b"\x04"


@pytest.mark.parametrize("platform", PLATFORMS)
def test_dma_mmap_coherent_size_below_allocation(platform: str) -> None:
    """ALSA passes runtime->dma_bytes <= the preallocated size: allowed; only a VMA
    larger than count - vm_pgoff is refused (-ENXIO), with nothing changed."""
    with dmamap.Machine(platform, ram=RAM) as m:
        dev = m.add_device("snd")
        buf = dmamap.dma_alloc_coherent(dev, 8 * P)
        mm = m.new_address_space()
        ok = mm.mmap(3 * P)
        dmamap.dma_mmap_coherent(dev, ok, buf.cpu_addr, buf.dma_handle, 3 * P - 100)
        mm.write(ok.start + 2 * P, b"x")
        assert dev.dma_read(buf.dma_handle + 2 * P, 1) == b"x"
        too_big = mm.mmap(4 * P)
        with pytest.raises(MmapError):
            dmamap.dma_mmap_coherent(dev, too_big, buf.cpu_addr, buf.dma_handle, 3 * P)
        past = mm.mmap(P, offset=3 * P)
        with pytest.raises(MmapError):
            dmamap.dma_mmap_coherent(dev, past, buf.cpu_addr, buf.dma_handle, 3 * P)
        with pytest.raises(MmapError):   # more than was allocated
            dmamap.dma_mmap_coherent(dev, past, buf.cpu_addr, buf.dma_handle, 9 * P)
        assert mm.count_present(too_big.start, 4 * P) == 0 and mm.count_present(past.start, P) == 0


def test_dma_mmap_coherent_sg_maps_from_vm_pgoff() -> None:
    with dmamap.Machine("arm", ram=RAM) as m:
        dev = m.add_device("nic")
        sg = dmamap.dma_alloc_coherent_sg(dev, 12 * PAGE_SIZE, max_chunk_pages=3, seed=1)
        pages = [(e.dma_handle + (i << PAGE_SHIFT)) for e in sg for i in range(e.nr_pages)]
        for i, h in enumerate(pages):
            dev.dma_write(h, bytes([i]))
        mm = m.new_address_space()
        vma = mm.mmap(4 * P, offset=5 * P)
        dmamap.dma_mmap_coherent_sg(dev, vma, sg)
        assert [mm.read(vma.start + i * P, 1)[0] for i in range(4)] == [5, 6, 7, 8]
        with pytest.raises(MmapError):
            dmamap.dma_mmap_coherent_sg(dev, mm.mmap(P, offset=12 * P), sg)


def test_deprecated_offset_keyword_is_gone() -> None:
    """The helpers take their offset from vma.vm_pgoff only, as the kernel's
    dma_mmap_attrs: the old ``offset=`` keyword is refused as any unknown one."""
    with dmamap.Machine("x86", ram=RAM) as m:
        dev = m.add_device("d")
        buf = dmamap.dma_alloc_coherent(dev, 2 * P)
        sg = dmamap.dma_alloc_coherent_sg(dev, 2 * P)
        vma = m.new_address_space().mmap(P)
        with pytest.raises(TypeError):
            dmamap.dma_mmap_coherent(dev, vma, *buf, offset=P)  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            dmamap.dma_mmap_coherent_sg(dev, vma, sg, offset=1)  # type: ignore[call-arg]


def test_alloc_coherent_sg_takes_bytes() -> None:
    """dma_alloc_coherent_sg counts bytes as dma_alloc_coherent does, rounded up
    to whole pages (PAGE_ALIGN in dma_alloc_attrs)."""
    with dmamap.Machine("x86", ram=RAM) as m:
        dev = m.add_device("d")
        assert dmamap.dma_alloc_coherent_sg(dev, 5 * P).nr_pages == 5
        assert dmamap.dma_alloc_coherent_sg(dev, 5 * P + 1).nr_pages == 6
        assert dmamap.dma_alloc_coherent_sg(dev, 1).nr_pages == 1


# ALSA's fixed offsets (include/uapi/sound/asound.h)
SNDRV_PCM_MMAP_OFFSET_DATA = 0x00000000
SNDRV_PCM_MMAP_OFFSET_STATUS = 0x80000000
SNDRV_PCM_MMAP_OFFSET_CONTROL = 0x81000000


@pytest.mark.parametrize("platform", PLATFORMS)
def test_device_file_dispatches_by_offset(platform: str) -> None:
    """One device file, three mmaps told apart by vm_pgoff (snd_pcm_mmap): the data
    buffer through dma_mmap_coherent, status and control pages (kernel RAM)
    through a page-returning fault; an unknown offset fails and leaves no VMA."""
    with dmamap.Machine(platform, ram=RAM) as m:
        dev = m.add_device("pcm")
        buf = dmamap.dma_alloc_coherent(dev, 4 * P)
        status, control = m.alloc_pages(1), m.alloc_pages(1)
        seen: list[int] = []

        def pcm_mmap(file: DeviceFile, vma: Vma) -> None:
            off = vma.vm_pgoff << PAGE_SHIFT
            seen.append(off)
            if off == SNDRV_PCM_MMAP_OFFSET_STATUS:
                vma.set_fault_handler(lambda vmf: status)
            elif off == SNDRV_PCM_MMAP_OFFSET_CONTROL:
                vma.set_fault_handler(lambda vmf: control)
            elif off == SNDRV_PCM_MMAP_OFFSET_DATA:
                dmamap.dma_mmap_coherent(file.dev, vma, *buf)
            else:
                raise MmapError(f"pcm: no mapping at offset {off:#x}")

        f = DeviceFile(dev, mmap=pcm_mmap)
        mm = m.new_address_space()
        data = f.mmap(mm, 4 * P, offset=SNDRV_PCM_MMAP_OFFSET_DATA)
        st = f.mmap(mm, P, offset=SNDRV_PCM_MMAP_OFFSET_STATUS, prot="r")
        ctl = f.mmap(mm, P, offset=SNDRV_PCM_MMAP_OFFSET_CONTROL)
        assert seen == [0, SNDRV_PCM_MMAP_OFFSET_STATUS, SNDRV_PCM_MMAP_OFFSET_CONTROL]
        assert data.vm_file is f and st.vm_pgoff == SNDRV_PCM_MMAP_OFFSET_STATUS >> PAGE_SHIFT
        m.phys_write(status.phys_addr, b"\x07")
        assert mm.read8(st.start) == 7
        mm.write8(ctl.start, 9)
        assert mm.translate(ctl.start).pa == control.phys_addr and mm.read8(ctl.start) == 9
        mm.write(data.start, b"pcm")
        assert dev.dma_read(buf.dma_handle, 3) == b"pcm"
        n = len(mm.vmas)
        with pytest.raises(MmapError):
            f.mmap(mm, P, offset=0x90000000)
        assert len(mm.vmas) == n


def test_fault_pgoff_includes_vm_pgoff() -> None:
    """vmf->pgoff is linear_page_index: vm_pgoff + the page's index in the VMA."""
    with dmamap.Machine("x86", ram=RAM) as m:
        pages = m.alloc_pages(8)
        got: list[int] = []
        mm = m.new_address_space()
        vma = mm.mmap(2 * P, offset=6 * P)

        def fault(vmf: VmFault) -> dmamap.Page:
            got.append(vmf.pgoff)
            return m.pfn_to_page(pages.pfn + vmf.pgoff)

        vma.set_fault_handler(fault)
        mm.read(vma.start + P, 1)
        assert got == [7]
        assert mm.translate(vma.start + P).pa == (pages.pfn + 7) << PAGE_SHIFT


@pytest.mark.parametrize("plat", PLATFORMS)
def test_page_and_range_helpers_refuse_with_mmap_error(plat: str) -> None:
    """vm_map_pages (mm/memory.c __vm_map_pages: -ENXIO), dma_mmap_pages
    (kernel/dma/mapping.c: -ENXIO) and vm_iomap_memory (-EINVAL) refuse a VMA
    that does not fit the object from its vm_pgoff with MmapError, as
    dma_mmap_coherent does, mapping nothing; dma_mmap_pages maps from vm_pgoff."""
    with dmamap.Machine(plat, ram=RAM) as m:
        mm = m.new_address_space()
        dev = m.add_device("d", bars=[4 * P])
        pages = [m.alloc_pages(1) for _ in range(4)]
        page, _handle = dmamap.dma_alloc_pages(dev, 4 * P, dmamap.DMA_BIDIRECTIONAL)
        bar = dev.bar(0)[0]
        for call in (lambda v: dmamap.vm_map_pages(v, pages, 4),
                     lambda v: dmamap.dma_mmap_pages(dev, v, 4 * P, page),
                     lambda v: dmamap.vm_iomap_memory(v, bar, 4 * P)):
            for length, pgoff in ((5 * P, 0), (2 * P, 3), (P, 4)):
                v = mm.mmap(length, offset=pgoff * P)
                with pytest.raises(MmapError):
                    call(v)
                assert mm.count_present(v.start, len(v)) == 0
        v = mm.mmap(2 * P, offset=2 * P)
        dmamap.dma_mmap_pages(dev, v, 4 * P, page)
        assert mm.translate(v.start).pa == page.phys_addr + 2 * P
