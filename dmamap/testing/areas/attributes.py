"""Area: attributes.  The user PTE of a coherent mapping, decoded from raw
page-table memory, has the memory type of the kernel's own alias of the same
memory (a cacheable alias of uncached DMA memory is the bug this catches), and
the page path (a fault handler returning the right page) is checked too."""

from __future__ import annotations

import dmamap
from dmamap import PAGE_SHIFT, PAGE_SIZE
from dmamap.errors import MemtypeConflictError
from dmamap.testing.checks import check_attributes, make_device, map_buffer, map_sg, touch
from dmamap.testing.rule import Check, RuleSkipped, rule
from dmamap.testing.target import STRATEGY_VARIANTS, Target


@rule("user_attribute_matches_kernel", "attributes",
      "the user PTE (decoded from raw page-table memory) has the memory type of the kernel alias",
      STRATEGY_VARIANTS)
def user_attribute_matches_kernel(t: Target, variant: str) -> None:
    strategy = t.strategy(variant)
    chk = Check("user_attribute_matches_kernel", variant)
    with t.machine() as m:
        dev = make_device(m)
        mm = m.new_address_space()
        buf = dmamap.dma_alloc_coherent(dev, 5 * PAGE_SIZE)
        mp = map_buffer(dev, mm, buf, strategy, first_page=1)
        touch(mp)
        check_attributes(chk, m, mp)
        if t.caps.scatter_gather:
            sg = dmamap.dma_alloc_coherent_sg(dev, 9 * PAGE_SIZE, max_chunk_pages=4, seed=3)
            mp = map_sg(dev, mm, sg, strategy, offset=1, nr_pages=8)
            touch(mp)
            check_attributes(chk, m, mp)


@rule("page_path_attribute_checked", "attributes",
      "a fault handler returning the right page of a coherent buffer with a cacheable VMA (the 2004 nopage "
      "driver) is checked against the kernel alias: refused or reported when their types conflict, silent "
      "when they agree")
def page_path_attribute_checked(t: Target, variant: str) -> None:   # noqa: ARG001 - one variant
    chk = Check("page_path_attribute_checked", variant)
    if not t.caps.page_descriptors:
        raise RuleSkipped(f"{t.name}'s coherent memory has no page descriptors: no page path to check")
    with t.machine() as m:
        dev = make_device(m)
        mm = m.new_address_space()
        buf = dmamap.dma_alloc_coherent(dev, 2 * PAGE_SIZE)
        pfn = dmamap.dma_coherent_to_pfn(dev, buf.cpu_addr, buf.dma_handle)
        kernel = m.memtype_lookup(pfn << PAGE_SHIFT)
        cached = m.isa_info.cached
        vma = mm.mmap(buf.size)
        vma.page_prot = dmamap.pgprot_cached(vma.page_prot)
        vma.set_fault_handler(lambda vmf: dmamap.dma_coherent_to_page(dev, buf.cpu_addr, buf.dma_handle,
                                                                    vmf.pgoff << PAGE_SHIFT))
        before = len(m.attribute_reports)
        try:
            mm.read(vma.start, 1)
            refused = False
        except MemtypeConflictError:
            refused = True
        reported = len(m.attribute_reports) > before
        conflict = kernel is not None and (kernel in m.isa_info.cacheable) != (cached in m.isa_info.cacheable)
        if conflict and not (refused or reported):
            chk.fail(vma.start, f"a {cached} user alias of a {kernel} coherent buffer was mapped through the page "
                                f"path with no report and no refusal")
        if not conflict and (refused or reported):
            chk.fail(vma.start, f"the page path refused or reported a {cached} alias of a {kernel} buffer")
