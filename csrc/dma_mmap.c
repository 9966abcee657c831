/* The prefault of dma_mmap_coherent in one call (kernel/dma/direct.c
 * dma_direct_mmap: vma->vm_page_prot = dma_pgprot(...), then remap_pfn_range):
 * the VMA's protection set and the window of a chunk list remapped from the
 * VMA's start; a refused remap puts the protection back, so that the call
 * changes nothing.  Every check is the one the two steps make on their own. */
#include "internal.h"

int dmamap_dma_mmap_prefault(dmamap_as *as, int64_t id, const struct dmamap_chunk *chunks, int nchunks,
                             uint64_t first_page, uint64_t nr_pages, uint64_t prot, int flags,
                             struct dmamap_err *err)
{
    struct dmamap_vma_info info;
    int rc = dmamap_vma_info(as, id, &info, err);
    if (rc)
        return rc;
    if ((rc = dmamap_vma_set_prot(as, id, prot, err)))
        return rc;
    rc = dmamap_remap_pfn_chunks(as, id, info.start, chunks, nchunks, first_page, nr_pages, prot, flags, err);
    if (rc) {
        struct dmamap_err scratch;   /* the refusal's own error is what the caller sees */
        dmamap_vma_set_prot(as, id, info.page_prot, &scratch);
    }
    return rc;
}
