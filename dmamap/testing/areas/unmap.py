"""Area: unmap and TLB.  dma_munmap_coherent clears every PTE and flushes the
TLB: a read after the unmap faults even when the TLB was warm."""

from __future__ import annotations

import dmamap
from dmamap import PAGE_SHIFT, PAGE_SIZE
from dmamap.errors import AccessFault
from dmamap.testing.checks import make_device, map_buffer, map_sg, raw_entry
from dmamap.testing.rule import Check, rule
from dmamap.testing.target import STRATEGY_VARIANTS, Target


@rule("unmap_clears_ptes_and_tlb", "unmap",
      "dma_munmap_coherent clears every PTE and the TLB: a read after unmap faults even with a warm TLB",
      STRATEGY_VARIANTS)
def unmap_clears_ptes_and_tlb(t: Target, variant: str) -> None:
    strategy = t.strategy(variant)
    chk = Check("unmap_clears_ptes_and_tlb", variant)
    with t.machine() as m:
        dev = make_device(m)
        mm = m.new_address_space()
        buf = dmamap.dma_alloc_coherent(dev, 5 * PAGE_SIZE)
        mappings = [map_buffer(dev, mm, buf, strategy)]
        if t.caps.scatter_gather:
            sg = dmamap.dma_alloc_coherent_sg(dev, 7, max_chunk_pages=2, seed=11)
            mappings.append(map_sg(dev, mm, sg, strategy, offset=1, nr_pages=6))
        for mp in mappings:
            for _ in range(2):                      # fault in, then hit the (now warm) TLB
                mm.read(mp.start, mp.size)
            vas = [mp.start + (i << PAGE_SHIFT) for i in range(len(mp.pages))]
            if any(raw_entry(m, mm, va) is None for va in vas):
                chk.fail(mp.start, "a touched page has no valid PTE")
            dmamap.dma_munmap_coherent(mp.vma)
            if mp.vma.live or mm.find_vma(mp.start) is not None:
                chk.fail(mp.start, "the VMA is still mapped after dma_munmap_coherent")
            for va in vas:
                e = raw_entry(m, mm, va)
                if e is not None:
                    chk.fail(va, f"PTE {e.entry:#x} (at pa {e.entry_pa:#x}) still maps pa {e.pa:#x} after "
                                 f"dma_munmap_coherent")
            for va in vas:
                try:
                    data = mm.read(va, 8)
                except AccessFault:
                    continue
                chk.fail(va, f"a read after dma_munmap_coherent returned {data.hex()} through a stale TLB "
                             f"entry (the page tables no longer map it): the unmap did not flush the TLB")
