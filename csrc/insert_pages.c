/* vm_insert_pages (mm/memory.c): many RAM pages into consecutive PTEs of one
 * VMA in one call, as vm_map_pages and remap_vmalloc_range use it.  Unlike the
 * kernel (which stops at the first error and reports how many were left) it is
 * all or nothing: every page and every PTE is checked before any is filled. */
#include "internal.h"

#include <stdlib.h>

int dmamap_vm_insert_pages(dmamap_as *as, int64_t id, uint64_t addr, const uint64_t *pfns, uint64_t n,
                           struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, addr);
    if (!pfns || n == 0)
        return dmamap_fail(err, DMAMAP_EINVAL, addr, "vm_insert_pages: no pages");
    if (n > (UINT64_MAX >> PAGE_SHIFT) || addr + (n << PAGE_SHIFT) < addr)
        return dmamap_fail(err, DMAMAP_EINVAL, addr, "vm_insert_pages: %llu pages from %#llx wrap the "
                           "address space", (unsigned long long)n, (unsigned long long)addr);
    int rc;
    struct vma *v = vma_enter(as, id, addr, n << PAGE_SHIFT, "vm_insert_pages", 1, err, &rc);
    if (!v)
        return rc;
    uint64_t *prots = NULL;   /* each page's protection, when the attribute check adjusts one */
    if (v->flags & DMAMAP_VM_PFNMAP) {
        rc = dmamap_fail(err, DMAMAP_EVMAKIND, addr, "vm_insert_pages at %#llx into a VM_PFNMAP VMA [%#llx, "
                         "%#llx)", (unsigned long long)addr, (unsigned long long)v->start,
                         (unsigned long long)v->end);
        goto out;
    }
    for (uint64_t i = 0; i < n; i++) {
        uint64_t va = addr + (i << PAGE_SHIFT), *e;
        int level;
        if ((rc = page_insertable(as, va, pfns[i], "vm_insert_pages", err)))
            goto out;
        if (dmamap_pt_walk(as, va, &e, &level)) {
            rc = dmamap_fail(err, DMAMAP_EBUSY, va, "vm_insert_pages at %#llx: PTE is not empty",
                             (unsigned long long)va);
            goto out;
        }
    }
    /* With the attribute check of every insertion path (memtype.c): the one
     * vm_insert_page makes, page by page, once every page and PTE passed. */
    for (uint64_t i = 0; i < n; i++) {
        uint64_t prot = v->prot;
        LOCK(&as->m->lock);
        rc = insert_memtype_check(as->m, pfns[i] << PAGE_SHIFT, PAGE_SIZE, MT_REPORT | MT_PAGE, &prot, err);
        UNLOCK(&as->m->lock);
        if (rc)
            goto out;
        if (prot != v->prot && !prots) {
            if (!(prots = malloc(n * sizeof *prots))) {
                rc = dmamap_fail(err, DMAMAP_ENOMEM, addr, "vm_insert_pages: out of host memory");
                goto out;
            }
            for (uint64_t j = 0; j < n; j++)
                prots[j] = v->prot;
        }
        if (prots)
            prots[i] = prot;
    }
    uint64_t written = as->st.ptes_written, cleared = as->st.ptes_cleared;
    for (uint64_t i = 0; i < n; i++) {
        /* consecutive pfns of one protection go in as one run (pt_fill takes their references) */
        uint64_t prot = prots ? prots[i] : v->prot, run = 1;
        while (i + run < n && pfns[i + run] == pfns[i] + run && (!prots || prots[i + run] == prot))
            run++;
        rc = dmamap_pt_fill(as, addr + (i << PAGE_SHIFT), pfns[i], run, prot, 0, 0, err);
        if (rc) {
            dmamap_pt_clear(as, addr, i);   /* drops the references taken so far */
            as->st.ptes_written = written;
            as->st.ptes_cleared = cleared;
            goto out;
        }
        i += run - 1;
    }
    v->flags |= DMAMAP_VM_MIXEDMAP;
out:
    free(prots);
    return as_unlock(as, rc, err);
}
