"""Area: large pages.  A 2 MiB-aligned run maps with one 2 MiB entry with the
right attribute, is coherent, and is fully gone after the unmap."""

from __future__ import annotations

import dmamap
from dmamap import PAGE_SIZE
from dmamap.errors import AccessFault
from dmamap.testing.checks import check_attributes, check_coherent, make_device, map_buffer, raw_entry
from dmamap.testing.rule import Check, rule
from dmamap.testing.target import LARGE_STRATEGIES, Target


@rule("large_pages", "attributes",
      "a 2 MiB-aligned run maps with one 2 MiB entry with the right attribute, coherent and fully unmapped",
      LARGE_STRATEGIES, needs="large_pages")
def large_pages(t: Target, variant: str) -> None:
    strategy = t.strategy(variant)
    chk = Check("large_pages", variant)
    span = 512
    with t.machine() as m:
        dev = make_device(m)
        mm = m.new_address_space()
        buf = dmamap.dma_alloc_coherent(dev, 2 * span * PAGE_SIZE)
        pfn = dmamap.dma_coherent_to_pfn(dev, buf.cpu_addr, buf.dma_handle)
        first = (-pfn) % span                      # first 2 MiB-aligned page of the buffer
        mp = map_buffer(dev, mm, buf, strategy, first_page=first, nr_pages=span)
        if mp.start % (span * PAGE_SIZE):
            chk.fail(mp.start, "a 2 MiB mmap is not 2 MiB-aligned")
        mm.read(mp.start, 64)
        e = raw_entry(m, mm, mp.start)
        if e is None:
            chk.fail(mp.start, "no valid user entry after a touch")
            return
        if e.level != 1:
            chk.fail(mp.start, f"a 2 MiB-aligned, 2 MiB run of pa {mp.pages[0][2]:#x} was mapped with a "
                               f"{e.page_size // 1024} KiB entry {e.entry:#x}, not one 2 MiB entry")
        check_attributes(chk, m, mp)
        check_coherent(chk, dev, mp, ("large", variant))
        vas = [mp.start, mp.start + 0x1FF000]
        dmamap.dma_munmap_coherent(mp.vma)
        for va in vas:
            if raw_entry(m, mm, va) is not None:
                chk.fail(va, "the 2 MiB entry survives dma_munmap_coherent")
            try:
                mm.read(va, 1)
            except AccessFault:
                continue
            chk.fail(va, "a read after dma_munmap_coherent of a large mapping succeeded (stale TLB)")
