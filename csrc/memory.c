/* The kernel's PTE primitives over ranges (mm/memory.c, mm/mprotect.c):
 * remap_pfn_range (also of a chunk list), zap_vma_ptes and change_protection,
 * with the checks the kernel makes. */
#include "internal.h"

/* A protection value must hold attribute bits only: no output-address bits,
 * none of the ISA's reserved bits (AArch64 RES0 49:48, Sv39 60:54), a memory
 * type the ISA defines, and it must not encode physical page 0 as an empty
 * entry at any level. */
int prot_check(dmamap_as *as, uint64_t prot, struct dmamap_err *err)
{
    const struct dmamap_arch *a = as->m->arch;
    if ((prot & a->oa_mask) || (prot & a->reserved))
        return dmamap_fail(err, DMAMAP_EINVAL, 0, "protection %#llx has physical-address or reserved bits "
                           "set", (unsigned long long)prot);
    if (a->prot_cache(a, prot) < 0)
        return dmamap_fail(err, DMAMAP_EINVAL, 0, "protection %#llx encodes a reserved memory type",
                           (unsigned long long)prot);
    for (int l = 0; l <= a->max_block_level; l++)
        if (a->leaf(0, prot, l) == 0)
            return dmamap_fail(err, DMAMAP_EINVAL, 0, "protection %#llx encodes no attribute bits",
                               (unsigned long long)prot);
    return 0;
}

int is_cow_mapping(const struct vma *v)
{
    return !(v->flags & DMAMAP_VM_SHARED) && (v->flags & DMAMAP_VM_WRITE);
}

int pfn_range_ok(dmamap_as *as, uint64_t pfn, uint64_t npages, const char *what, struct dmamap_err *err)
{
    (void)as;
    if (pfn + npages < pfn || pfn + npages > (1ULL << 36))
        return dmamap_fail(err, DMAMAP_EINVAL, pfn << PAGE_SHIFT, "%s: pfn range %#llx+%llu is outside the "
                           "48-bit physical address space", what, (unsigned long long)pfn,
                           (unsigned long long)npages);
    return 0;
}

int dmamap_remap_pfn_range(dmamap_as *as, int64_t id, uint64_t addr, uint64_t pfn, uint64_t size, uint64_t prot,
                           int flags, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, addr);
    if (prot_check(as, prot, err))
        return DMAMAP_EINVAL;
    int rc;
    struct vma *v = vma_enter(as, id, addr, size, "remap_pfn_range", 1, err, &rc);
    if (!v)
        return rc;
    if ((rc = pfn_range_ok(as, pfn, size >> PAGE_SHIFT, "remap_pfn_range", err)))
        goto out;
    if (v->flags & DMAMAP_VM_MIXEDMAP) {
        rc = dmamap_fail(err, DMAMAP_EVMAKIND, addr, "remap_pfn_range at %#llx on a VM_MIXEDMAP VMA would "
                         "make it both VM_PFNMAP and VM_MIXEDMAP", (unsigned long long)addr);
        goto out;
    }
    if (is_cow_mapping(v) && (addr != v->start || addr + size != v->end)) {
        rc = dmamap_fail(err, DMAMAP_EINVAL, addr, "remap_pfn_range of a private (COW) mapping must cover "
                         "the whole VMA [%#llx, %#llx)", (unsigned long long)v->start,
                         (unsigned long long)v->end);
        goto out;
    }
    if (flags & ~(DMAMAP_REMAP_LARGE | DMAMAP_REMAP_NOTRACK)) {
        rc = dmamap_fail(err, DMAMAP_EINVAL, addr, "remap_pfn_range: unknown flags %#x", flags);
        goto out;
    }
    int track = !(flags & DMAMAP_REMAP_NOTRACK);
    uint64_t reports = as->m->nreports;
    if (track && (rc = track_pfn(as, v, pfn << PAGE_SHIFT, size, &prot, err)))
        goto out;
    rc = dmamap_pt_fill(as, addr, pfn, size >> PAGE_SHIFT, prot, flags & DMAMAP_REMAP_LARGE, 1, err);
    if (rc) {
        if (track) {
            untrack_last(as, v);
            LOCK(&as->m->lock);
            as->m->nreports = reports;   /* a refused remap leaves no attribute report either */
            UNLOCK(&as->m->lock);
        }
        goto out;
    }
    v->flags |= DMAMAP_VM_IO | DMAMAP_VM_PFNMAP | DMAMAP_VM_DONTEXPAND | DMAMAP_VM_DONTDUMP;
out:
    return as_unlock(as, rc, err);
}

int dmamap_remap_pfn_chunks(dmamap_as *as, int64_t id, uint64_t addr, const struct dmamap_chunk *chunks, int nchunks,
                            uint64_t first_page, uint64_t nr_pages, uint64_t prot, int flags,
                            struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, addr);
    if (!chunks || nchunks <= 0 || nr_pages == 0)
        return dmamap_fail(err, DMAMAP_EINVAL, addr, "remap of a chunk list needs chunks and nr_pages > 0");
    int rc = 0;
    struct vma *v = vma_enter(as, id, addr, 0, NULL, 0, err, &rc);
    if (!v)
        return rc;
    uint64_t old_flags = v->flags, reports = as->m->nreports;
    int old_tracked = v->nmemtypes;
    uint64_t cur = addr, skip = first_page, left = nr_pages;
    for (int i = 0; i < nchunks && left && !rc; i++) {
        uint64_t n = chunks[i].npages;
        if (skip >= n) {
            skip -= n;
            continue;
        }
        uint64_t take = n - skip < left ? n - skip : left;
        if (take > (~0ULL >> PAGE_SHIFT) || chunks[i].pfn + skip < chunks[i].pfn) {
            rc = dmamap_fail(err, DMAMAP_EINVAL, cur, "chunk %d (pfn %#llx, %llu pages) wraps", i,
                             (unsigned long long)chunks[i].pfn, (unsigned long long)n);
            break;
        }
        rc = dmamap_remap_pfn_range(as, id, cur, chunks[i].pfn + skip, take << PAGE_SHIFT, prot, flags, err);
        if (!rc) {
            cur += take << PAGE_SHIFT;
            left -= take;
            skip = 0;
        }
    }
    if (!rc && left)
        rc = dmamap_fail(err, DMAMAP_EINVAL, addr, "chunk list ends %llu pages short of first page %llu + "
                         "%llu pages", (unsigned long long)left, (unsigned long long)first_page,
                         (unsigned long long)nr_pages);
    if (rc) {   /* roll back every chunk already mapped */
        v = vma_get(as, id, NULL);
        if (v) {
            if (cur > addr) {
                dmamap_pt_clear(as, addr, (cur - addr) >> PAGE_SHIFT);
                dmamap_tlb_flush_range(as, addr, cur - addr);
            }
            while (v->nmemtypes > old_tracked)
                untrack_last(as, v);
            v->flags = old_flags;
        }
        LOCK(&as->m->lock);
        as->m->nreports = reports;
        UNLOCK(&as->m->lock);
    }
    return as_unlock(as, rc, err);
}

int dmamap_zap_vma_ptes(dmamap_as *as, int64_t id, uint64_t addr, uint64_t size, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, addr);
    int rc;
    struct vma *v = vma_enter(as, id, addr, size, "zap_vma_ptes", 1, err, &rc);
    if (!v)
        return rc;
    if (!(v->flags & DMAMAP_VM_PFNMAP))   /* mm/memory.c zap_vma_ptes: not a PFN map, nothing to do */
        goto out;
    /* a partial zap of a large page needs a table: get it first, or change nothing */
    if ((rc = dmamap_pt_split_edges(as, addr, addr + size, err)))
        goto out;
    dmamap_pt_clear(as, addr, size >> PAGE_SHIFT);
    dmamap_tlb_flush_range(as, addr, size);
out:
    return as_unlock(as, rc, err);
}

int dmamap_mprotect(dmamap_as *as, int64_t id, uint64_t addr, uint64_t size, uint64_t prot, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, addr);
    if (prot_check(as, prot, err))
        return DMAMAP_EINVAL;
    int rc;
    struct vma *v = vma_enter(as, id, addr, size, "change_protection", 1, err, &rc);
    if (!v)
        return rc;
    if ((rc = dmamap_pt_split_edges(as, addr, addr + size, err)))   /* all or nothing */
        goto out;
    if ((rc = dmamap_pt_protect(as, addr, size >> PAGE_SHIFT, prot, err)) == 0 && addr == v->start &&
        addr + size == v->end)
        v->prot = prot;
    dmamap_tlb_flush_range(as, addr, size);
out:
    return as_unlock(as, rc, err);
}
