"""Scatter-gather coherent buffers: discontiguous chunks mapped as one linear
user range, with offsets and lengths that start and end inside chunks, on every
platform and strategy; DMA-API-debug checks on scatter lists."""

from __future__ import annotations

import pytest

import dmamap
from dmamap import PAGE_SHIFT, PAGE_SIZE, STRATEGIES
from dmamap.errors import (
    BusError,
    DmaDoubleFreeError,
    DmaFreeError,
    DmaLeakError,
    DmaUseAfterFreeError,
    InvalidArgumentError,
    StrategyError,
)

P = PAGE_SIZE
RAM = 16 << 20
PLATFORMS = ("x86", "arm", "sram")
USER_CACHE = {"x86": "WB", "arm": "NORMAL_NC", "sram": "NORMAL_NC", "riscv": "NC"}
LEGAL = [(p, s) for p in PLATFORMS for s in STRATEGIES if not (p == "sram" and s == "fault-page")]


def chunk_pa(dev: dmamap.Device, e: dmamap.SgEntry) -> int:
    return dmamap.dma_coherent_to_pfn(dev, e.cpu_addr, e.dma_handle) << PAGE_SHIFT


def starts(sg: dmamap.SgTable) -> list[int]:
    """Linear page index at which each chunk starts."""
    out, at = [], 0
    for e in sg:
        out.append(at)
        at += e.nr_pages
    return out


def inner_window(sg: dmamap.SgTable) -> tuple[int, int]:
    """(offset, nr_pages) starting one page into a multi-page chunk and ending one page
    into a later multi-page chunk, spanning at least one whole chunk in between."""
    big = [i for i, e in enumerate(sg) if e.nr_pages >= 2]
    first, last = big[0], big[-1]
    assert last - first >= 2, "scatter list too regular for the test"
    s = starts(sg)
    offset = s[first] + 1
    end = s[last] + 1
    return offset, end - offset


def page_marker(i: int) -> bytes:
    return f"<page {i:05d}>".encode() * 4


def check_window(m: dmamap.Machine, plat: str, dev: dmamap.Device, sg: dmamap.SgTable, mm: dmamap.AddressSpace,
                 vma: dmamap.Vma, offset: int, nr: int) -> None:
    """Every mapped page is the right chunk page, in both DMA directions."""
    mm.touch(vma.start, nr)    # fault everything in (a no-op when prefaulted)
    for p in range(nr):
        e, idx = sg.locate(offset + p)
        t = mm.translate(vma.start + p * P + 0x123)
        assert t is not None and t.pa == chunk_pa(dev, e) + idx * P + 0x123, f"page {p}"
        assert t.cache == USER_CACHE[plat]
    # user -> device, per page and with one bulk write spanning every chunk boundary
    for p in range(nr):
        mm.write(vma.start + p * P + 64, page_marker(p))
    for p in range(nr):
        e, idx = sg.locate(offset + p)
        assert dev.dma_read(e.dma_handle + idx * P + 64, len(page_marker(p))) == page_marker(p), f"page {p}"
    data = bytes((i * 11 + (i >> 12)) & 0xFF for i in range(nr * P))
    mm.write(vma.start, data)
    for p in range(nr):
        e, idx = sg.locate(offset + p)
        assert dev.dma_read(e.dma_handle + idx * P, P) == data[p * P:(p + 1) * P], f"page {p}"
    # device -> user
    for p in range(nr):
        e, idx = sg.locate(offset + p)
        dev.dma_write(e.dma_handle + idx * P, page_marker(1000 + p) + bytes(P - len(page_marker(0))))
    got = mm.read(vma.start, nr * P)
    for p in range(nr):
        assert got[p * P:p * P + len(page_marker(0))] == page_marker(1000 + p), f"page {p}"


def test_chunks_are_discontiguous(m: dmamap.Machine, plat: str) -> None:
    """dma_alloc_coherent_sg returns chunks of 1..max_chunk_pages pages adding up to
    nr_pages, none adjacent to or overlapping another (physically or on the bus),
    zeroed, with bus addresses that translate to their pages; the same seed gives
    the same chunk sizes."""
    dev = m.add_device("nic")
    sg = dmamap.dma_alloc_coherent_sg(dev, 60 * PAGE_SIZE, max_chunk_pages=6, seed=7)
    assert sg.nr_pages == 60 == sum(e.nr_pages for e in sg)
    assert len(sg) >= 60 // 6 and len(sg) == len(sg.entries)
    assert all(1 <= e.nr_pages <= 6 for e in sg)
    assert any(e.nr_pages > 1 for e in sg)
    spans = sorted((chunk_pa(dev, e), chunk_pa(dev, e) + e.length) for e in sg)
    for (_, end), (nxt, _) in zip(spans, spans[1:], strict=False):
        assert end < nxt, "chunks touch or overlap"
    for a, b in zip(sg, list(sg)[1:], strict=False):
        assert a.dma_handle + a.length != b.dma_handle
    for e in sg:
        assert e.length == e.nr_pages * P
        assert dev.dma_read(e.dma_handle, e.length) == bytes(e.length)
        assert m.region_of(chunk_pa(dev, e)) == ("sram" if plat == "sram" else "ram")
    again = dmamap.dma_alloc_coherent_sg(dev, 60 * PAGE_SIZE, max_chunk_pages=6, seed=7)
    assert [e.nr_pages for e in again] == [e.nr_pages for e in sg]
    ones = dmamap.dma_alloc_coherent_sg(dev, 5 * PAGE_SIZE, max_chunk_pages=1)
    assert [e.nr_pages for e in ones] == [1] * 5


@pytest.mark.parametrize("window", ["inner", "whole", "tail"])
@pytest.mark.parametrize(("plat", "strategy"), LEGAL)
def test_sg_both_directions(m: dmamap.Machine, plat: str, strategy: str, window: str) -> None:
    """A window of the scatter list (starting and ending inside chunks, the whole
    list, or from a chunk boundary to the end) maps linearly: each user page is the
    right chunk page, bytes go both ways with no sync call, pages outside the window
    are never touched, and accesses past nr_pages are SIGBUS."""
    dev = m.add_device("nic")
    sg = dmamap.dma_alloc_coherent_sg(dev, 40 * PAGE_SIZE, max_chunk_pages=5, seed=3)
    if window == "inner":
        offset, nr = inner_window(sg)
        assert sg.locate(offset)[1] > 0                  # starts inside a chunk
        e_last, i_last = sg.locate(offset + nr - 1)
        assert i_last < e_last.nr_pages - 1              # ends inside a chunk
    elif window == "whole":
        offset, nr = 0, sg.nr_pages
    else:
        offset = starts(sg)[len(sg) // 2]
        nr = sg.nr_pages - offset
    mm = m.new_address_space()
    vma = mm.mmap((nr + 2) * P, offset=offset * P)     # two spare pages after the window
    dmamap.dma_mmap_coherent_sg(dev, vma, sg, nr_pages=nr, strategy=strategy)
    check_window(m, plat, dev, sg, mm, vma, offset, nr)
    # a width access straddling a chunk boundary lands in both chunks
    s = starts(sg)
    b = next(x for x in s if offset < x < offset + nr) - offset   # first boundary inside the window
    mm.write64(vma.start + b * P - 4, 0x8877665544332211)
    e0, i0 = sg.locate(offset + b - 1)
    e1, i1 = sg.locate(offset + b)
    assert e0 is not e1 and i1 == 0
    assert dev.dma_read(e0.dma_handle + (i0 + 1) * P - 4, 4) == bytes.fromhex("11223344")
    assert dev.dma_read(e1.dma_handle, 4) == bytes.fromhex("55667788")
    # outside the window: untouched, and not reachable
    for p in [*range(offset), *range(offset + nr, sg.nr_pages)]:
        e, idx = sg.locate(p)
        assert dev.dma_read(e.dma_handle + idx * P, P) == bytes(P), f"page {p} outside the window was written"
    for extra in (nr, nr + 1):
        with pytest.raises(BusError):
            mm.read8(vma.start + extra * P)
    assert mm.count_present(vma.start + nr * P, 2 * P) == 0
    assert m.attribute_reports == []


def test_sg_default_nr_pages(m: dmamap.Machine) -> None:
    """Without nr_pages the window is the rest of the list, capped by the VMA."""
    dev = m.add_device("nic")
    sg = dmamap.dma_alloc_coherent_sg(dev, 12 * PAGE_SIZE, max_chunk_pages=3, seed=1)
    mm = m.new_address_space()
    small = mm.mmap(4 * P, offset=2 * P)
    dmamap.dma_mmap_coherent_sg(dev, small, sg, strategy="prefault")
    assert mm.count_present(small.start, len(small)) == 4
    big = mm.mmap(20 * P, offset=5 * P)
    dmamap.dma_mmap_coherent_sg(dev, big, sg, strategy="prefault")
    assert mm.count_present(big.start, len(big)) == 7
    e, idx = sg.locate(5)
    assert mm.translate(big.start).pa == chunk_pa(dev, e) + idx * P


def test_sg_fault_page_refused_on_sram() -> None:
    """'fault-page' on an SRAM scatter list raises StrategyError and leaves the VMA
    as it was (no handler, prot unchanged, chunks still freeable)."""
    with dmamap.Machine("sram", ram=RAM) as m:
        dev = m.add_device("nic")
        sg = dmamap.dma_alloc_coherent_sg(dev, 10 * PAGE_SIZE, max_chunk_pages=3)
        mm = m.new_address_space()
        vma = mm.mmap(10 * P)
        prot, flags = vma.vm_page_prot, vma.vm_flags
        with pytest.raises(StrategyError):
            dmamap.dma_mmap_coherent_sg(dev, vma, sg, strategy="fault-page")
        assert vma.vm_page_prot == prot and vma.vm_flags == flags
        with pytest.raises(BusError):
            mm.read8(vma.start)
        for e in sg:
            with pytest.raises(dmamap.BadPageError):
                dmamap.dma_coherent_to_page(dev, e.cpu_addr, e.dma_handle)
        dmamap.dma_free_coherent_sg(dev, sg)


def test_sg_argument_errors(m: dmamap.Machine) -> None:
    """Windows outside the list or larger than the VMA, zero pages and zero chunk
    sizes are refused and map nothing."""
    dev = m.add_device("nic")
    sg = dmamap.dma_alloc_coherent_sg(dev, 10 * PAGE_SIZE, max_chunk_pages=3, seed=2)
    mm = m.new_address_space()
    vma = mm.mmap(8 * P)
    for kwargs in ({"offset": 10}, {"offset": 8, "nr_pages": 5}, {"offset": 0, "nr_pages": 9},
                   {"offset": 0, "nr_pages": 0}, {"offset": 11, "nr_pages": 1}):
        vma.vm_pgoff = kwargs.pop("offset")   # the page offset: vm_pgoff, as dma_mmap_attrs
        with pytest.raises(InvalidArgumentError):
            dmamap.dma_mmap_coherent_sg(dev, vma, sg, strategy="prefault", **kwargs)
    assert mm.count_present(vma.start, len(vma)) == 0
    with pytest.raises(InvalidArgumentError):
        dmamap.dma_alloc_coherent_sg(dev, 0)
    with pytest.raises(InvalidArgumentError):
        dmamap.dma_alloc_coherent_sg(dev, 4 * PAGE_SIZE, max_chunk_pages=0)
    with pytest.raises(InvalidArgumentError):
        sg.locate(10)


def test_sg_free_checks(m: dmamap.Machine) -> None:
    """Freeing a scatter list while any chunk is user-mapped raises DmaFreeError and
    frees nothing; freeing it twice is DmaDoubleFreeError; mapping a freed list is
    DmaUseAfterFreeError; a list with one chunk already freed is refused without
    freeing the others. Counters are unchanged by every refusal."""
    dev = m.add_device("nic")
    sg = dmamap.dma_alloc_coherent_sg(dev, 12 * PAGE_SIZE, max_chunk_pages=4, seed=1)
    mm = m.new_address_space()
    offset = starts(sg)[-1]   # only the last chunk is mapped
    vma = mm.mmap(3 * P, offset=offset * P)
    dmamap.dma_mmap_coherent_sg(dev, vma, sg, nr_pages=min(3, sg[-1].nr_pages),
                                strategy="prefault")
    before = m.stats
    with pytest.raises(DmaFreeError):
        dmamap.dma_free_coherent_sg(dev, sg)
    with pytest.raises(DmaLeakError):
        dev.remove()
    assert m.stats == before
    for e in sg:    # nothing was freed: every chunk still looks up
        dmamap.dma_coherent_to_pfn(dev, e.cpu_addr, e.dma_handle)
    mm.write(vma.start, b"mapped")
    assert dev.dma_read(sg[-1].dma_handle, 6) == b"mapped"
    mm.munmap(vma)
    dmamap.dma_free_coherent_sg(dev, sg)
    after = m.stats
    with pytest.raises(DmaDoubleFreeError):
        dmamap.dma_free_coherent_sg(dev, sg)
    with pytest.raises(DmaUseAfterFreeError):
        dmamap.dma_mmap_coherent_sg(dev, mm.mmap(P), sg)
    assert m.stats.ram_pages_used == after.ram_pages_used

    sg2 = dmamap.dma_alloc_coherent_sg(dev, 12 * PAGE_SIZE, max_chunk_pages=4, seed=5)
    gone = sg2[1]
    dmamap.dma_free_coherent(dev, gone.length, gone.cpu_addr, gone.dma_handle)
    before = m.stats
    with pytest.raises(DmaDoubleFreeError):
        dmamap.dma_free_coherent_sg(dev, sg2)
    assert m.stats == before
    for e in sg2:
        if e is not gone:
            dmamap.dma_free_coherent(dev, e.length, e.cpu_addr, e.dma_handle)
    dev.remove()


@pytest.mark.parametrize("strategy", ["prefault", "fault"])
def test_sg_resources_return_to_baseline(m: dmamap.Machine, strategy: str) -> None:
    """Scatter lists mapped, touched, unmapped and freed leave RAM pages and
    page-table pages at baseline (guard pages included)."""
    dev = m.add_device("nic")
    mm = m.new_address_space()
    base = m.stats
    for seed in range(3):
        sg = dmamap.dma_alloc_coherent_sg(dev, 50 * PAGE_SIZE, max_chunk_pages=7, seed=seed)
        vma = mm.mmap(45 * P, offset=3 * P)
        dmamap.dma_mmap_coherent_sg(dev, vma, sg, nr_pages=45, strategy=strategy)
        mm.touch(vma.start, 45, write=True)
        assert mm.count_present(vma.start, len(vma)) == 45
        dmamap.dma_munmap_coherent(vma)
        assert mm.count_present(vma.start, len(vma)) == 0
        dmamap.dma_free_coherent_sg(dev, sg)
        s = m.stats
        assert (s.ram_pages_used, s.table_pages) == (base.ram_pages_used, base.table_pages)


def test_sg_failed_prefault_rolls_back(m: dmamap.Machine, plat: str) -> None:
    """When prefaulting hits an occupied PTE in a later chunk, the chunks already
    mapped by the call are unmapped again, the occupied PTE and the VMA's protection
    are untouched, and the list stays unmapped as far as DMA-API debug is concerned."""
    dev = m.add_device("nic")
    sg = dmamap.dma_alloc_coherent_sg(dev, 12 * PAGE_SIZE, max_chunk_pages=3, seed=4)
    other = dmamap.dma_alloc_coherent(dev, P)
    mm = m.new_address_space()
    vma = mm.mmap(12 * P)
    busy = starts(sg)[2] + 1 if sg[2].nr_pages > 1 else starts(sg)[2]
    other_pfn = dmamap.dma_coherent_to_pfn(dev, other.cpu_addr, other.dma_handle)
    dmamap.remap_pfn_range(vma, vma.start + busy * P, other_pfn, P, vma.vm_page_prot.with_cache(USER_CACHE[plat]))
    prot = vma.vm_page_prot
    with pytest.raises(dmamap.PteBusyError):
        dmamap.dma_mmap_coherent_sg(dev, vma, sg, strategy="prefault")
    assert mm.count_present(vma.start, len(vma)) == 1
    assert mm.translate(vma.start + busy * P).pa == other_pfn << PAGE_SHIFT
    assert vma.vm_page_prot == prot
    dmamap.dma_free_coherent_sg(dev, sg)    # not recorded as mapped
