"""Area: unmap and TLB.  dma_munmap_coherent clears every PTE and flushes the
TLB: a read after the unmap faults even when the TLB was warm; a partial
munmap splits the mapping and clears only the hole."""

from __future__ import annotations

import dmamap
from dmamap import PAGE_SHIFT, PAGE_SIZE
from dmamap.errors import AccessFault, DmaFreeError
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
            sg = dmamap.dma_alloc_coherent_sg(dev, 7 * PAGE_SIZE, max_chunk_pages=2, seed=11)
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


@rule("partial_unmap_splits", "unmap",
      "munmap of the middle of a coherent mapping splits it (__split_vma): the hole's PTEs are cleared, the "
      "pieces keep their pages, the tail's vm_pgoff moves on, and the buffer stays mapped until the last piece goes",
      STRATEGY_VARIANTS)
def partial_unmap_splits(t: Target, variant: str) -> None:
    strategy = t.strategy(variant)
    chk = Check("partial_unmap_splits", variant)
    with t.machine() as m:
        dev = make_device(m)
        mm = m.new_address_space()
        buf = dmamap.dma_alloc_coherent(dev, 6 * PAGE_SIZE)
        mp = map_buffer(dev, mm, buf, strategy, first_page=1, nr_pages=5)
        mm.read(mp.start, mp.size)
        mm.munmap(mp.vma, mp.start + PAGE_SIZE, 2 * PAGE_SIZE)
        pieces = mm.vmas
        if [(v.start, v.end) for v in pieces] != [(mp.start, mp.start + PAGE_SIZE),
                                                  (mp.start + 3 * PAGE_SIZE, mp.start + 5 * PAGE_SIZE)]:
            chk.fail(mp.start, f"pieces after a partial munmap are {pieces}, expected head and tail")
        if pieces[1].vm_pgoff != 4:
            chk.fail(pieces[1].start, f"the tail's vm_pgoff is {pieces[1].vm_pgoff}, expected 1 + 3")
        for i in range(5):
            va = mp.start + (i << PAGE_SHIFT)
            e = raw_entry(m, mm, va)
            if i in (1, 2) and e is not None:
                chk.fail(va, f"PTE {e.entry:#x} in the unmapped hole still maps pa {e.pa:#x}")
            if i not in (1, 2):
                mm.read(va, 1)
                e = raw_entry(m, mm, va)
                if e is None or e.pa != mp.pages[i][2]:
                    chk.fail(va, f"page {i} of a piece maps {e.pa if e else None}, expected {mp.pages[i][2]:#x}")
        mm.munmap(pieces[0])
        try:
            dmamap.dma_free_coherent(dev, buf.size, buf.cpu_addr, buf.dma_handle)
        except DmaFreeError:
            pass
        else:
            chk.fail(mp.start, "dma_free_coherent succeeded while a piece of the mapping remained")
        mm.munmap(pieces[1])
        dmamap.dma_free_coherent(dev, buf.size, buf.cpu_addr, buf.dma_handle)


@rule("fork_copies_mappings", "unmap",
      "mm.fork() copies a coherent mapping as dup_mmap does: the child's PTEs map the same pages with the same "
      "memory type, device writes reach both, and the buffer stays mapped until the last copy goes",
      STRATEGY_VARIANTS)
def fork_copies_mappings(t: Target, variant: str) -> None:
    strategy = t.strategy(variant)
    chk = Check("fork_copies_mappings", variant)
    with t.machine() as m:
        dev = make_device(m)
        mm = m.new_address_space()
        buf = dmamap.dma_alloc_coherent(dev, 3 * PAGE_SIZE)
        mp = map_buffer(dev, mm, buf, strategy)
        mm.read(mp.start, mp.size)
        child = mm.fork()
        copies = child.vmas
        if [(v.start, v.end) for v in copies] != [(mp.vma.start, mp.vma.end)]:
            chk.fail(mp.start, f"the child has {copies}, expected one copy of {mp.vma!r}")
        dev.dma_write(buf.dma_handle, b"fork")
        for space in (mm, child):
            if space.read(mp.start, 4) != b"fork":
                chk.fail(mp.start, "a device write is not seen through a forked mapping")
        for i in range(len(mp.pages)):
            va = mp.start + (i << PAGE_SHIFT)
            child.read(va, 1)
            a, b = raw_entry(m, mm, va), raw_entry(m, child, va)
            if a is None or b is None or a.pa != b.pa or a.cache != b.cache:
                chk.fail(va, f"the child's PTE {b} differs from the parent's {a}")
        mm.munmap(mp.vma)
        try:
            dmamap.dma_free_coherent(dev, buf.size, buf.cpu_addr, buf.dma_handle)
        except DmaFreeError:
            pass
        else:
            chk.fail(mp.start, "dma_free_coherent succeeded while the child's copy still mapped the buffer")
        child.close()
        dmamap.dma_free_coherent(dev, buf.size, buf.cpu_addr, buf.dma_handle)
