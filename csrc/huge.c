/* PMD-level inserts for huge faults (mm/huge_memory.c): vmf_insert_pfn_pmd,
 * and whether a PMD is none (create_huge_pmd's precondition). */
#include "internal.h"

#define PMD_SPAN (1ULL << 21)

int dmamap_pmd_none(dmamap_as *as, uint64_t va, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, va);
    AS_LOCK(as, err, va);
    uint64_t *e;
    int level;
    int found = dmamap_pt_walk(as, va & ~(PMD_SPAN - 1), &e, &level);
    return as_unlock(as, !found && level >= 1, err);
}

int dmamap_vmf_insert_pfn_pmd(dmamap_as *as, int64_t id, uint64_t addr, uint64_t pfn, int write,
                              struct dmamap_err *err)
{
    (void)write;   /* a new block is made with the VMA's protection; a present one is left alone */
    dmamap_err_clear(err);
    AS_CHECK(as, err, addr);
    uint64_t haddr = addr & ~(PMD_SPAN - 1);
    if (pfn & ((PMD_SPAN >> PAGE_SHIFT) - 1))
        return dmamap_fail(err, DMAMAP_EINVAL, addr, "vmf_insert_pfn_pmd: pfn %#llx is not 2 MiB-aligned",
                           (unsigned long long)pfn);
    if (as->m->arch->max_block_level < 1)
        return dmamap_fail(err, DMAMAP_EINVAL, addr, "vmf_insert_pfn_pmd: this ISA has no 2 MiB blocks");
    int rc;
    struct vma *v = vma_enter(as, id, addr, 0, "vmf_insert_pfn_pmd", 0, err, &rc);
    if (!v)
        return rc;
    if (addr < v->start || addr >= v->end || haddr < v->start || haddr + PMD_SPAN > v->end) {
        rc = dmamap_fail(err, DMAMAP_ERANGE, addr, "vmf_insert_pfn_pmd: the 2 MiB block at %#llx is not "
                         "inside VMA [%#llx, %#llx) (VM_FAULT_SIGBUS)", (unsigned long long)haddr,
                         (unsigned long long)v->start, (unsigned long long)v->end);
        goto out;
    }
    if ((rc = pfn_range_ok(as, pfn, PMD_SPAN >> PAGE_SHIFT, "vmf_insert_pfn_pmd", err)))
        goto out;
    uint64_t kind = v->flags & (DMAMAP_VM_PFNMAP | DMAMAP_VM_MIXEDMAP);
    if (!kind || kind == (DMAMAP_VM_PFNMAP | DMAMAP_VM_MIXEDMAP) ||
        ((kind & DMAMAP_VM_PFNMAP) && is_cow_mapping(v))) {
        rc = dmamap_fail(err, DMAMAP_EVMAKIND, addr, "vmf_insert_pfn_pmd at %#llx into VMA [%#llx, %#llx): "
                         "it must be exactly one of VM_PFNMAP / VM_MIXEDMAP, and a VM_PFNMAP one shared",
                         (unsigned long long)addr, (unsigned long long)v->start, (unsigned long long)v->end);
        goto out;
    }
    if ((kind & DMAMAP_VM_MIXEDMAP) && dmamap_pfn_is_ram(as->m, pfn)) {
        rc = dmamap_fail(err, DMAMAP_EVMAKIND, addr, "vmf_insert_pfn_pmd at %#llx of RAM pfn %#llx into a "
                         "VM_MIXEDMAP VMA: RAM is mapped with its page descriptors", (unsigned long long)addr,
                         (unsigned long long)pfn);
        goto out;
    }
    uint64_t *e;
    int level;
    if (dmamap_pt_walk(as, haddr, &e, &level) || level < 1)
        goto out;   /* insert_pfn_pmd: !pmd_none, nothing to do */
    uint64_t prot = v->prot;
    LOCK(&as->m->lock);
    rc = insert_memtype_check(as->m, pfn << PAGE_SHIFT, PMD_SPAN, MT_REPORT, &prot, err);
    UNLOCK(&as->m->lock);
    if (!rc)
        rc = dmamap_pt_fill(as, haddr, pfn, PMD_SPAN >> PAGE_SHIFT, prot, 1, 1, err);
out:
    return as_unlock(as, rc, err);
}
