"""Deliberately broken backends: each carries one classic porting bug, which
the conformance suite must catch and name (tests/test_conformance_broken.py).

They are ordinary :class:`~dmamap.backends.Backend` subclasses of the in-tree
platforms, overriding one hook each, exactly as a third-party port would.
"""

from __future__ import annotations

from dmamap import PAGE_SHIFT, Page, PgProt, VmFault, remap_pfn_range
from dmamap.backends import Backend
from dmamap.backends.arm import ArmBackend
from dmamap.backends.sram import SramBackend
from dmamap.backends.x86 import X86Backend
from dmamap.device import Device
from dmamap.mm import Vma


class ArmCacheableBackend(ArmBackend):
    """dma_pgprot forgets pgprot_dmacoherent: user mappings of the NORMAL_NC
    coherent buffers are cacheable NORMAL, a cacheable alias of uncached memory
    (the original bug: stale reads both ways on a non-snooping SoC)."""

    name = "broken-arm-cacheable"

    def dma_pgprot(self, dev: Device, prot: PgProt) -> PgProt:
        return prot.with_cache("NORMAL")


class SramPageFaultBackend(SramBackend):
    """Lazy mappings use a fault handler that returns page descriptors for the
    SRAM pool, as a driver written for RAM would (``virt_to_page`` style):
    SRAM has no struct page, so every such fault is a BadPageError."""

    name = "broken-sram-page-fault"

    def mmap_user(self, dev: Device, vma: Vma, chunks: list[tuple[int, int]], first_page: int, nr_pages: int,
                  prot: PgProt, strategy: str, is_ram: bool) -> bool:
        if strategy.startswith("prefault"):
            return False
        pfns = [pfn + i for pfn, n in chunks for i in range(n)][first_page:first_page + nr_pages]
        m = dev.machine
        vma.page_prot = prot

        def fault(vmf: VmFault) -> Page:
            return Page(m, pfns[vmf.pgoff])   # BUG: a page descriptor for non-RAM

        vma.set_fault_handler(fault)
        return True


class SgOffByOneBackend(X86Backend):
    """Fills scatter-gather mappings itself and gets the chunk walk wrong by
    one at chunk boundaries (``<=`` for ``<``): the first page of every chunk
    after the first maps the page just past the previous chunk."""

    name = "broken-sg-off-by-one"

    def mmap_user(self, dev: Device, vma: Vma, chunks: list[tuple[int, int]], first_page: int, nr_pages: int,
                  prot: PgProt, strategy: str, is_ram: bool) -> bool:
        if len(chunks) == 1:
            return False

        def locate(page: int) -> int:
            for pfn, n in chunks:
                if page <= n:               # BUG: should be page < n
                    return pfn + page
                page -= n
            raise AssertionError("page past the scatter list")

        vma.page_prot = prot
        for i in range(nr_pages):
            remap_pfn_range(vma, vma.start + (i << PAGE_SHIFT), locate(first_page + i), 1 << PAGE_SHIFT, prot)
        return True


class NoTlbFlushBackend(ArmBackend):
    """Unmaps user mappings without the TLB shootdown: the PTEs are gone but
    a warm TLB still translates the old addresses."""

    name = "broken-no-tlb-flush"

    def munmap_user(self, vma: Vma) -> None:
        vma.mm.munmap(vma, flush_tlb=False)   # BUG: no flush_tlb_range


#: name -> (backend class, the rule it breaks, the other rules its bug may also fail).
#: The "may also fail" sets are the bug's visible consequences (a cacheable alias
#: makes data stale everywhere; a stale TLB also bites a later mapping at a
#: reused address); any rule outside them failing would be a suite bug.
BROKEN: dict[str, tuple[type[Backend], str, set[str]]] = {
    ArmCacheableBackend.name: (
        ArmCacheableBackend, "user_attribute_matches_kernel",
        {"coherency_mmap", "coherency_mmap_sg", "sg_linear_mapping", "large_pages", "model_based",
         # a refused re-map still records the mismatched-attribute report
         "fork_copies_mappings", "bad_inputs_rejected"}),
    SramPageFaultBackend.name: (
        SramPageFaultBackend, "page_descriptors_ram_only",
        {"coherency_mmap", "coherency_mmap_sg", "user_attribute_matches_kernel", "sg_linear_mapping",
         "unmap_clears_ptes_and_tlb", "partial_unmap_splits", "fork_copies_mappings",
         "resources_return_to_baseline", "large_pages", "model_based"}),
    SgOffByOneBackend.name: (
        SgOffByOneBackend, "sg_linear_mapping",
        {"coherency_mmap_sg", "user_attribute_matches_kernel", "model_based"}),
    NoTlbFlushBackend.name: (
        NoTlbFlushBackend, "unmap_clears_ptes_and_tlb",
        {"large_pages", "sg_linear_mapping", "model_based"}),
}
