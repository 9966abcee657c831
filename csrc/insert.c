/* Single-PTE inserts (mm/memory.c): vmf_insert_pfn[_prot], vmf_insert_mixed,
 * vm_insert_page, and the page-descriptor rules they share with the fault path. */
#include "internal.h"

static int pte_slot(dmamap_as *as, uint64_t addr, uint64_t **e)
{
    int level;
    int found = dmamap_pt_walk(as, addr, e, &level);
    return found ? level : -1;
}

/* Insert one special PTE (the common tail of vmf_insert_pfn and
 * vmf_insert_mixed); the same pfn already there is VM_FAULT_NOPAGE. */
static int insert_special(dmamap_as *as, uint64_t addr, uint64_t pfn, uint64_t prot, struct dmamap_err *err)
{
    uint64_t *e;
    int level = pte_slot(as, addr, &e);
    if (level >= 0) {
        if (as->m->arch->entry_pa(*e, level) + (addr & ((1ULL << (12 + 9 * level)) - 1) & PAGE_MASK) ==
            pfn << PAGE_SHIFT)
            return 0;
        return dmamap_fail(err, DMAMAP_EBUSY, addr, "PFN insert at %#llx: PTE already maps another pfn",
                           (unsigned long long)addr);
    }
    LOCK(&as->m->lock);
    int rc = insert_memtype_check(as->m, pfn << PAGE_SHIFT, PAGE_SIZE, MT_REPORT, &prot, err);
    UNLOCK(&as->m->lock);
    return rc ? rc : dmamap_pt_fill(as, addr, pfn, 1, prot, 0, 1, err);
}

int dmamap_vmf_insert_pfn_prot(dmamap_as *as, int64_t id, uint64_t addr, uint64_t pfn, uint64_t prot,
                               struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, addr);
    if (prot_check(as, prot, err))
        return DMAMAP_EINVAL;
    int rc;
    struct vma *v = vma_enter(as, id, addr, PAGE_SIZE, "vmf_insert_pfn", 1, err, &rc);
    if (!v)
        return rc;
    if ((rc = pfn_range_ok(as, pfn, 1, "vmf_insert_pfn", err)))
        goto out;
    uint64_t kind = v->flags & (DMAMAP_VM_PFNMAP | DMAMAP_VM_MIXEDMAP);
    if (!kind) {
        rc = dmamap_fail(err, DMAMAP_EVMAKIND, addr, "vmf_insert_pfn at %#llx into VMA [%#llx, %#llx) that "
                         "is neither VM_PFNMAP nor VM_MIXEDMAP", (unsigned long long)addr,
                         (unsigned long long)v->start, (unsigned long long)v->end);
        goto out;
    }
    if (kind == (DMAMAP_VM_PFNMAP | DMAMAP_VM_MIXEDMAP)) {
        rc = dmamap_fail(err, DMAMAP_EVMAKIND, addr, "vmf_insert_pfn at %#llx into a VMA with both VM_PFNMAP "
                         "and VM_MIXEDMAP", (unsigned long long)addr);
        goto out;
    }
    if ((kind & DMAMAP_VM_PFNMAP) && is_cow_mapping(v)) {
        rc = dmamap_fail(err, DMAMAP_EVMAKIND, addr, "vmf_insert_pfn at %#llx into a private (COW) VM_PFNMAP "
                         "VMA", (unsigned long long)addr);
        goto out;
    }
    if ((kind & DMAMAP_VM_MIXEDMAP) && dmamap_pfn_is_ram(as->m, pfn)) {
        rc = dmamap_fail(err, DMAMAP_EVMAKIND, addr, "vmf_insert_pfn at %#llx of RAM pfn %#llx into a "
                         "VM_MIXEDMAP VMA: use vmf_insert_mixed or vm_insert_page", (unsigned long long)addr,
                         (unsigned long long)pfn);
        goto out;
    }
    rc = insert_special(as, addr, pfn, prot, err);
out:
    return as_unlock(as, rc, err);
}

/* Validate that pfn may be handed out as a page descriptor (insert_page's
 * checks) and, with take_ref,
 * take the reference and map count a normal PTE holds, under one lock. */
int page_get(dmamap_as *as, uint64_t addr, uint64_t pfn, const char *what, int take_ref,
                    struct dmamap_err *err)
{
    struct page_desc *p = dmamap_page(as->m, pfn);
    if (!p)
        return dmamap_fail(err, DMAMAP_EBADPAGE, addr, "%s at %#llx: pfn %#llx has no page descriptor (not RAM, "
                           "pfn_valid() is false); map it with a PFN insert or prefault instead", what,
                           (unsigned long long)addr, (unsigned long long)pfn);
    /* the reference first, then the flags of the allocation it holds (a
     * check alone takes none: it may be out of date once returned anyway) */
    int held = take_ref ? page_get_unless_zero(as->m, p, PAGE_REF1 | PAGE_MAP1) : page_refs(p) > 0;
    uint32_t flags = page_flags(p);
    int rc = 0;
    if (!held)
        rc = dmamap_fail(err, DMAMAP_EBADPAGE, addr, "%s at %#llx: pfn %#llx is a free page", what,
                         (unsigned long long)addr, (unsigned long long)pfn);
    else if (flags & DMAMAP_PG_ANON)
        rc = dmamap_fail(err, DMAMAP_EBADPAGE, addr, "%s at %#llx: pfn %#llx is an anonymous page", what,
                         (unsigned long long)addr, (unsigned long long)pfn);
    else if (flags & DMAMAP_PG_TABLE)
        rc = dmamap_fail(err, DMAMAP_EBADPAGE, addr, "%s at %#llx: pfn %#llx is a page-table page", what,
                         (unsigned long long)addr, (unsigned long long)pfn);
    if (held && take_ref && rc)
        page_map_put(as->m, p);
    return rc;
}

int page_insertable(dmamap_as *as, uint64_t addr, uint64_t pfn, const char *what, struct dmamap_err *err)
{
    return page_get(as, addr, pfn, what, 0, err);
}

void page_unget(dmamap_as *as, uint64_t pfn)
{
    page_map_put(as->m, dmamap_page(as->m, pfn));
}

int dmamap_vm_insert_page(dmamap_as *as, int64_t id, uint64_t addr, uint64_t pfn, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, addr);
    int rc;
    struct vma *v = vma_enter(as, id, addr, PAGE_SIZE, "vm_insert_page", 1, err, &rc);
    if (!v)
        return rc;
    if (v->flags & DMAMAP_VM_PFNMAP) {
        rc = dmamap_fail(err, DMAMAP_EVMAKIND, addr, "vm_insert_page at %#llx into a VM_PFNMAP VMA [%#llx, "
                         "%#llx)", (unsigned long long)addr,
                         (unsigned long long)v->start, (unsigned long long)v->end);
        goto out;
    }
    if ((rc = page_insertable(as, addr, pfn, "vm_insert_page", err)))
        goto out;
    uint64_t *e;
    if (pte_slot(as, addr, &e) >= 0) {
        rc = dmamap_fail(err, DMAMAP_EBUSY, addr, "vm_insert_page at %#llx: PTE is not empty",
                         (unsigned long long)addr);
        goto out;
    }
    uint64_t prot = v->prot;
    LOCK(&as->m->lock);
    rc = insert_memtype_check(as->m, pfn << PAGE_SHIFT, PAGE_SIZE, MT_REPORT | MT_PAGE, &prot, err);
    UNLOCK(&as->m->lock);
    if (rc)
        goto out;
    rc = dmamap_pt_fill(as, addr, pfn, 1, prot, 0, 0, err);
    if (rc == 0)
        v->flags |= DMAMAP_VM_MIXEDMAP;
out:
    return as_unlock(as, rc, err);
}

int dmamap_vmf_insert_mixed(dmamap_as *as, int64_t id, uint64_t addr, uint64_t pfn, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, addr);
    int rc;
    struct vma *v = vma_enter(as, id, addr, 0, "vmf_insert_mixed", 0, err, &rc);
    if (!v)
        return rc;
    if (!(v->flags & DMAMAP_VM_MIXEDMAP)) {
        rc = dmamap_fail(err, DMAMAP_EVMAKIND, addr, "vmf_insert_mixed at %#llx into VMA [%#llx, %#llx) "
                         "without VM_MIXEDMAP", (unsigned long long)addr,
                         (unsigned long long)v->start, (unsigned long long)v->end);
        goto out;
    }
    if (dmamap_pfn_is_ram(as->m, pfn)) {
        UNLOCK(&as->lock);
        return dmamap_vm_insert_page(as, id, addr, pfn, err);
    }
    if ((rc = range_in_vma(as, v, addr, PAGE_SIZE, "vmf_insert_mixed", err)) ||
        (rc = pfn_range_ok(as, pfn, 1, "vmf_insert_mixed", err)))
        goto out;
    rc = insert_special(as, addr, pfn, v->prot, err);
out:
    return as_unlock(as, rc, err);
}
