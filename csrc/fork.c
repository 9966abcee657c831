/* fork's copy of an address space (kernel/fork.c dup_mmap, mm/memory.c
 * copy_page_range): VMAs, their reservations and the PTEs that are copied. */
#include <stdlib.h>
#include <string.h>
#include "internal.h"

/* One present leaf of parent at va into child (copy_present_pte): a block is
 * copied as a block; a normal 4 KiB PTE takes the page reference it holds, and
 * a writable one of a private mapping is write-protected in both. */
static int copy_one(dmamap_as *parent, dmamap_as *child, const struct vma *v, uint64_t va, uint64_t *step,
                    struct dmamap_err *err)
{
    const struct dmamap_arch *a = parent->m->arch;
    uint64_t *e;
    int level;
    *step = PAGE_SIZE;
    if (!dmamap_pt_walk(parent, va, &e, &level))
        return 0;
    uint64_t entry = *e, special = entry & parent->special_bit;
    uint64_t prot = a->leaf_prot(entry, level);
    uint64_t pfn = a->entry_pa(entry, level) >> PAGE_SHIFT;
    if (level > 0) {
        uint64_t span = 1ULL << level_shift(level);
        *step = span - (va & (span - 1));
        return dmamap_pt_fill(child, va & ~(span - 1), pfn, span >> PAGE_SHIFT, prot, 1, special ? 1 : 0, err);
    }
    unsigned f = a->prot_flags(prot);
    if (!special && !(v->flags & DMAMAP_VM_SHARED) && (f & DMAMAP_PROT_WRITE)) {
        prot = a->prot_make(a, f & ~(unsigned)DMAMAP_PROT_WRITE, a->prot_cache(a, prot));
        entry = dmamap_pt_leaf_base(parent, prot, 0) | (pfn << parent->pfn_shift);
        *e = entry;
        dmamap_tlb_flush_range(parent, va, PAGE_SIZE);
    }
    uint64_t table;
    uint64_t *slot = dmamap_pt_slot(child, va, &table, err);
    if (!slot)
        return err ? err->code : DMAMAP_ENOMEM;
    *slot = entry;
    dmamap_pt_added(child, table, 1);
    struct page_desc *p = special ? NULL : dmamap_page(parent->m, pfn);
    if (p) {   /* the parent's PTE holds a reference */
        page_hold_add(parent->m, p, PAGE_REF1 | PAGE_MAP1);
    }
    return 0;
}

int dmamap_fork(dmamap_as *parent, dmamap_as *child, int64_t *ids, int max, int *n_out, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(parent, err, 0);
    AS_CHECK(child, err, 0);
    if (!ids || !n_out || max < 0)
        return dmamap_fail(err, DMAMAP_EINVAL, 0, "NULL output");
    if (parent == child || parent->m != child->m || parent->kernel || child->kernel)
        return dmamap_fail(err, DMAMAP_EINVAL, 0, "fork: the child must be another user address space of "
                           "the same machine");
    int rc = 0, n = 0;
    LOCK(&parent->lock);
    LOCK(&child->lock);
    if (as_dead(parent) || as_dead(child)) {
        rc = dmamap_fail(err, DMAMAP_ECLOSED, 0, "address space or machine is closed");
        goto out;
    }
    for (int i = 0; i < child->nvmas; i++)
        if (child->vmas[i].live) {
            rc = dmamap_fail(err, DMAMAP_EINVAL, 0, "fork: the child address space is not empty");
            goto out;
        }
    for (int i = 0; i < parent->nvmas && !rc; i++) {
        struct vma *v = &parent->vmas[i];
        if (!v->live || (v->flags & DMAMAP_VM_DONTCOPY))
            continue;
        if (n == max) {
            rc = dmamap_fail(err, DMAMAP_EINVAL, v->start, "fork: more than %d VMAs", max);
            break;
        }
        struct vma *c = vma_new(child, v->start, err, &rc);
        if (!c)
            break;
        struct dmamap_chunk *ch = v->nchunks ? malloc((size_t)v->nchunks * sizeof *ch) : NULL;
        uint64_t *cs = v->nchunks ? malloc(((size_t)v->nchunks + 1) * sizeof *cs) : NULL;
        struct memtype_entry *mt = v->nmemtypes ? malloc((size_t)v->nmemtypes * sizeof *mt) : NULL;
        if ((v->nchunks && (!ch || !cs)) || (v->nmemtypes && !mt)) {
            free(ch);
            free(cs);
            free(mt);
            rc = dmamap_fail(err, DMAMAP_ENOMEM, v->start, "host out of memory for fork");
            c->live = 0;
            break;
        }
        c->start = v->start;
        c->end = v->end;
        c->flags = v->flags;
        c->prot = v->prot;
        c->pgoff = v->pgoff;
        c->fault_kind = v->fault_kind;
        c->fault_around = v->fault_around;
        c->large = v->large;
        c->wrnotify = v->wrnotify;
        c->first_page = v->first_page;
        c->pio_port = v->pio_port;
        c->pio_count = v->pio_count;
        if (v->nchunks) {
            memcpy(ch, v->chunks, (size_t)v->nchunks * sizeof *ch);
            memcpy(cs, v->chunk_start, ((size_t)v->nchunks + 1) * sizeof *cs);
            c->chunks = ch;
            c->chunk_start = cs;
            c->nchunks = v->nchunks;
        }
        c->memtypes = mt;
        c->capmemtypes = v->nmemtypes;
        for (int k = 0; k < v->nmemtypes; k++) {   /* track_pfn_copy */
            struct memtype_entry *e = &v->memtypes[k];
            struct dmamap_err ignored;
            if (dmamap_memtype_reserve(parent->m, e->start, e->end - e->start, e->cache, &ignored) == 0)
                c->memtypes[c->nmemtypes++] = *e;
        }
        c->live = 1;
        ids[2 * n] = v->id;
        ids[2 * n + 1] = c->id;
        n++;
        int copy = !(v->flags & DMAMAP_VM_WIPEONFORK) &&
                   ((v->flags & (DMAMAP_VM_PFNMAP | DMAMAP_VM_MIXEDMAP)) || !(v->flags & DMAMAP_VM_SHARED));
        for (uint64_t va = v->start, step; copy && va < v->end && !rc; va += step)
            rc = copy_one(parent, child, v, va, &step, err);
    }
out:
    *n_out = n;
    UNLOCK(&child->lock);
    return as_unlock(parent, rc, err);
}
