/* mremap (mm/mremap.c): growing a VMA in place, or moving it with its PTEs
 * (move_ptes) when it may move. */
#include "internal.h"

/* Copy the present leaf at src to dst (one 4 KiB PTE; a block over src is
 * split first) with the page reference a normal PTE holds, so that clearing
 * src afterwards leaves every count as it was (mm/mremap.c move_ptes). */
static int move_one(dmamap_as *as, uint64_t src, uint64_t dst, struct dmamap_err *err)
{
    uint64_t *e;
    int level;
    while (dmamap_pt_walk(as, src, &e, &level) && level > 0) {
        uint64_t span = 1ULL << level_shift(level);
        uint64_t cut = (src & ~(span - 1)) + PAGE_SIZE;
        int rc = dmamap_pt_split_edges(as, cut, cut, err);
        if (rc)
            return rc;
    }
    if (!dmamap_pt_walk(as, src, &e, &level))
        return 0;
    uint64_t entry = *e, table;
    uint64_t *slot = dmamap_pt_slot(as, dst, &table, err);
    if (!slot)
        return err ? err->code : DMAMAP_ENOMEM;
    *slot = entry;
    dmamap_pt_added(as, table, 1);
    if (!(entry & as->special_bit)) {
        struct page_desc *p = dmamap_page(as->m, (entry & as->pa_mask[0]) >> as->pfn_shift);
        if (p) {   /* the source PTE holds a reference */
            page_hold_add(as->m, p, PAGE_REF1 | PAGE_MAP1);
        }
    }
    return 0;
}

/* mm/mremap.c for growth: grow VMA id to new_len in place when the range after
 * it is free, else (may_move) move it, PTEs and all, to a free range.  A
 * VM_DONTEXPAND or VM_PFNMAP VMA may not grow (vma_to_resize: -EFAULT).
 * Shrinking is a partial munmap.  *new_start gets the VMA's start. */
int dmamap_mremap(dmamap_as *as, int64_t id, uint64_t new_len, int may_move, uint64_t *new_start,
                  struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, 0);
    if (!new_start)
        return dmamap_fail(err, DMAMAP_EINVAL, 0, "NULL new_start");
    int rc = 0;
    struct vma *v = vma_enter(as, id, 0, 0, NULL, 0, err, &rc);
    if (!v)
        return rc;
    uint64_t old_len = v->end - v->start;
    if (new_len == 0 || (new_len & (PAGE_SIZE - 1)) || new_len < old_len) {
        rc = dmamap_fail(err, DMAMAP_EINVAL, v->start, "mremap: new length %#llx is zero, not page-aligned or "
                         "shorter than %#llx (shrink with a partial munmap)", (unsigned long long)new_len,
                         (unsigned long long)old_len);
        goto out;
    }
    if (new_len > old_len && (v->flags & (DMAMAP_VM_DONTEXPAND | DMAMAP_VM_PFNMAP))) {
        rc = dmamap_fail(err, DMAMAP_EINVAL, v->start, "mremap: VMA [%#llx, %#llx) is VM_DONTEXPAND or "
                         "VM_PFNMAP and may not grow (-EFAULT)", (unsigned long long)v->start,
                         (unsigned long long)v->end);
        goto out;
    }
    uint64_t start = v->start;
    if (new_len == old_len || (va_ok(as, start, new_len) && !vma_overlaps(as, v->end, start + new_len))) {
        v->end = start + new_len;
        *new_start = start;
        goto out;
    }
    uint64_t dst;
    if (!may_move || !vma_find_gap(as, new_len, PAGE_SIZE, &dst)) {
        rc = dmamap_fail(err, DMAMAP_ENOMEM, start, "mremap: no room to grow [%#llx, %#llx) to %#llx bytes%s",
                         (unsigned long long)start, (unsigned long long)v->end, (unsigned long long)new_len,
                         may_move ? "" : " in place");
        goto out;
    }
    for (uint64_t off = 0; off < old_len; off += PAGE_SIZE)
        if ((rc = move_one(as, start + off, dst + off, err))) {
            dmamap_pt_clear(as, dst, old_len >> PAGE_SHIFT);   /* drops the references taken */
            goto out;
        }
    dmamap_pt_clear(as, start, old_len >> PAGE_SHIFT);
    dmamap_tlb_flush_range(as, start, old_len);
    v = vma_get(as, id, NULL);
    v->start = dst;
    v->end = dst + new_len;
    *new_start = dst;
out:
    return as_unlock(as, rc, err);
}
