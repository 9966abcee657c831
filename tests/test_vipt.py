"""The aliasing VIPT cache (platform ``armv6``): differently coloured aliases
of one page disagree until flush_dcache_page; same-coloured ones never do."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import dmamap as d
from dmamap.vipt import cache_colours, page_colour


@pytest.fixture
def m() -> Iterator[d.Machine]:
    with d.Machine("armv6", ram=16 << 20) as machine:
        yield machine


def _user_alias(m: d.Machine, mm: d.AddressSpace, page: d.Page, colour: int) -> int:
    """Map ``page`` into ``mm`` at a user address of the given colour."""
    vma = mm.mmap(4 * 4096)
    va = next(v for v in range(vma.start, vma.end, 4096) if page_colour(m, v) == colour)
    d.remap_pfn_range(vma, va, page.pfn, 4096, vma.page_prot)
    return va


def test_two_colours(m: d.Machine) -> None:
    assert cache_colours(m) == 2
    with d.Machine("arm", ram=16 << 20) as pipt:
        assert cache_colours(pipt) == 1


@pytest.mark.parametrize("flush", [False, True])
def test_wrongly_shared_kernel_page_is_stale_until_flushed(m: d.Machine, flush: bool) -> None:
    mm = m.new_address_space()
    page = m.alloc_pages(1)
    kva = m.page_address(page)
    va = _user_alias(m, mm, page, 1 - page_colour(m, kva))   # the other colour
    assert mm.read(va, 6) == bytes(6)            # the user alias is cached now
    m.kernel.write(kva, b"status")               # the driver updates the shared page
    if flush:
        d.flush_dcache_page(page)
    assert mm.read(va, 6) == (b"status" if flush else bytes(6))
    mm.close()


def test_same_colour_alias_is_coherent(m: d.Machine) -> None:
    mm = m.new_address_space()
    page = m.alloc_pages(1)
    kva = m.page_address(page)
    va = _user_alias(m, mm, page, page_colour(m, kva))
    assert mm.read(va, 6) == bytes(6)
    m.kernel.write(kva, b"shared")
    assert mm.read(va, 6) == b"shared"           # one set, one line: no alias
    mm.write(va + 8, b"back")
    assert m.kernel.read(kva + 8, 4) == b"back"
    mm.close()


def test_pipt_arm_has_no_alias() -> None:
    with d.Machine("arm", ram=16 << 20) as m:
        mm = m.new_address_space()
        page = m.alloc_pages(1)
        kva = m.page_address(page)
        vma = mm.mmap(2 * 4096)
        va = vma.start + (4096 if ((vma.start ^ kva) >> 12) & 1 == 0 else 0)
        d.remap_pfn_range(vma, va, page.pfn, 4096, vma.page_prot)
        assert mm.read(va, 6) == bytes(6)
        m.kernel.write(kva, b"status")
        assert mm.read(va, 6) == b"status"
        mm.close()


def test_coherent_helpers_are_coherent_on_armv6(m: d.Machine) -> None:
    """dma_mmap_coherent maps the buffer uncached, as the kernel's alias: no colour can go stale."""
    dev = m.add_device("snd")
    mm = m.new_address_space()
    buf = d.dma_alloc_coherent(dev, 2 * 4096)
    vma = mm.mmap(2 * 4096)
    d.dma_mmap_coherent(dev, vma, *buf)
    assert mm.read(vma.start + 4096, 4) == bytes(4)
    m.kernel.write(buf.cpu_addr + 4096, b"ptr!")
    assert mm.read(vma.start + 4096, 4) == b"ptr!"
    mm.write(vma.start, b"ctl")
    assert m.kernel.read(buf.cpu_addr, 3) == b"ctl"
    assert dev.dma_read(buf.dma_handle, 3) == b"ctl"
    d.dma_munmap_coherent(vma)
    d.dma_free_coherent(dev, buf.size, buf.cpu_addr, buf.dma_handle)
    mm.close()
