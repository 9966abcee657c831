"""Area: page descriptors.  Page descriptors are handed out for RAM only
(non-RAM is prefaulted or PFN-inserted, with special PTEs and no page
references), and dma_coherent_to_page gives the RAM page behind a buffer."""

from __future__ import annotations

import dmamap
from dmamap import PAGE_SHIFT, PAGE_SIZE
from dmamap.errors import BadPageError
from dmamap.testing.checks import make_device, map_buffer, map_sg, page_state, raw_entry
from dmamap.testing.pagetable import walk
from dmamap.testing.rule import Check, rule
from dmamap.testing.target import STRATEGY_VARIANTS, Target


@rule("page_descriptors_ram_only", "page descriptors",
      "page descriptors are handed out for RAM only; non-RAM is prefaulted or PFN-inserted (special PTEs, "
      "no page references)", STRATEGY_VARIANTS)
def page_descriptors_ram_only(t: Target, variant: str) -> None:
    strategy = t.strategy(variant)
    chk = Check("page_descriptors_ram_only", variant)
    with t.machine() as m:
        dev = make_device(m)
        mm = m.new_address_space()
        buf = dmamap.dma_alloc_coherent(dev, 4 * PAGE_SIZE)
        mappings = [map_buffer(dev, mm, buf, strategy)]
        if t.caps.scatter_gather:
            sg = dmamap.dma_alloc_coherent_sg(dev, 8 * PAGE_SIZE, max_chunk_pages=3, seed=5)
            mappings.append(map_sg(dev, mm, sg, strategy, offset=0, nr_pages=8))
        before = {pa: page_state(m, pa) for mp in mappings for _, _, pa in mp.pages}
        for mp in mappings:
            for i in range(len(mp.pages)):
                va = mp.start + (i << PAGE_SHIFT)
                try:
                    mm.read(va, 1)
                except BadPageError as exc:
                    chk.fail(va, f"the fault handler handed out a page descriptor for non-RAM: {exc}")
        for mp in mappings:
            flags = mp.vma.vm_flags
            for i, (_, _, pa) in enumerate(mp.pages):
                va = mp.start + (i << PAGE_SHIFT)
                e = raw_entry(m, mm, va)
                if e is None:
                    chk.fail(va, "no valid user PTE after the page was touched")
                    return
                ram = m.pfn_valid(e.pfn)
                if not ram and not e.special:
                    chk.fail(va, f"non-RAM pa {e.pa:#x} is mapped by a normal PTE {e.entry:#x}, i.e. through a page "
                                 f"descriptor it does not have; it must be prefaulted or PFN-inserted (special)")
                if e.special and not flags & (dmamap.VmFlags.VM_PFNMAP | dmamap.VmFlags.VM_MIXEDMAP):
                    chk.fail(va, f"special PTE in a VMA that is neither VM_PFNMAP nor VM_MIXEDMAP ({flags!r})")
                if ram and e.pa == pa:   # (a PTE mapping the wrong page is sg_linear_mapping's business)
                    b, now = before[pa], page_state(m, e.pa)
                    assert b is not None and now is not None
                    want = b if e.special else (b[0] + 1, b[1] + 1)
                    if now != want:
                        kind = "special (PFN) PTE" if e.special else "normal PTE of a page descriptor"
                        chk.fail(va, f"page at pa {e.pa:#x} has refcount/mapcount {now} behind a {kind}; "
                                     f"expected {want} (was {b})")
        for mp in mappings:
            dmamap.dma_munmap_coherent(mp.vma)
        for pa, b in before.items():
            if page_state(m, pa) != b:
                chk.fail(pa, f"page references not returned after unmap: {page_state(m, pa)} != {b}")


@rule("coherent_to_page", "page descriptors",
      "dma_coherent_to_page gives the RAM page behind the buffer (from the allocator, not virt_to_page of an "
      "alias)", needs="page_descriptors")
def coherent_to_page(t: Target, variant: str) -> None:
    chk = Check("coherent_to_page")
    with t.machine() as m:
        dev = make_device(m)
        buf = dmamap.dma_alloc_coherent(dev, 4 * PAGE_SIZE)
        for i in range(4):
            off = i << PAGE_SHIFT
            page = dmamap.dma_coherent_to_page(dev, buf.cpu_addr, buf.dma_handle, off)
            pfn = dmamap.dma_coherent_to_pfn(dev, buf.cpu_addr, buf.dma_handle, off)
            cpu = int(buf.cpu_addr) + off
            if page.pfn != pfn:
                chk.fail(cpu, f"dma_coherent_to_page gives pfn {page.pfn:#x}, dma_coherent_to_pfn {pfn:#x}")
            if not m.pfn_valid(page.pfn):
                chk.fail(cpu, f"dma_coherent_to_page handed out a page descriptor for non-RAM pfn {page.pfn:#x}")
            k = walk(m, m.kernel.root, cpu)
            if k is None or k.pfn != pfn:
                chk.fail(cpu, f"the kernel alias maps {'nothing' if k is None else hex(k.pa)}, not the page's "
                              f"pa {pfn << PAGE_SHIFT:#x}")
            if m.virt_addr_valid(cpu) and dmamap.virt_to_page(cpu, machine=m) != page:
                chk.fail(cpu, "cpu_addr is in the direct map but virt_to_page disagrees with dma_coherent_to_page")
            pa = t.backend.dma_to_phys(dev, buf.dma_handle + off)
            if pa != pfn << PAGE_SHIFT:
                chk.fail(cpu, f"dma_handle {buf.dma_handle + off:#x} does not reach the page at "
                              f"{pfn << PAGE_SHIFT:#x} (dma_to_phys gives {pa:#x})")
