/* The fault path: built-in page and PFN handlers (with fault-around and huge
 * faults), Python handlers with finish_fault semantics, and copy-on-write. */
#include <string.h>
#include "internal.h"

int cow_page(dmamap_as *as, struct vma *v, uint64_t va, uint64_t src_pfn, int replace,
                    struct dmamap_err *err)
{
    uint64_t pfn;
    int rc = dmamap_alloc_pages(as->m, 1, 1, DMAMAP_PG_ANON, &pfn, err);
    if (rc)
        return rc;
    uint8_t *dst = dmamap_host_ptr(as->m, pfn << PAGE_SHIFT, PAGE_SIZE, NULL);
    uint8_t *src = dmamap_host_ptr(as->m, src_pfn << PAGE_SHIFT, PAGE_SIZE, NULL);
    if (src && as->m->cache) {
        /* copy_user_highpage: a CPU copy through the cacheable direct map, so a
         * dirty line of the source (a write-back cache) is what gets copied;
         * the copy is cleaned to memory for a non-cacheable user alias */
        uint8_t buf[PAGE_SIZE];
        uint64_t dm = as->m->arch->page_offset - (as->m->ram_base_pfn << PAGE_SHIFT);   /* direct-map VA - pa */
        dmamap_cache_read(as->m, dm + (src_pfn << PAGE_SHIFT), src_pfn << PAGE_SHIFT, src, buf, PAGE_SIZE);
        dmamap_cache_write(as->m, dm + (pfn << PAGE_SHIFT), pfn << PAGE_SHIFT, dst, buf, PAGE_SIZE);
        dmamap_cache_maint(as->m, pfn << PAGE_SHIFT, PAGE_SIZE, 1, 0);
    } else if (src) {
        memcpy(dst, src, PAGE_SIZE);
    }
    uint64_t page = va & PAGE_MASK;
    if (replace) {
        dmamap_pt_clear(as, page, 1);
        dmamap_tlb_flush_range(as, page, PAGE_SIZE);
    }
    const struct dmamap_arch *a = as->m->arch;
    unsigned f = a->prot_flags(v->prot) | DMAMAP_PROT_WRITE;
    uint64_t prot = a->prot_make(a, f, a->prot_cache(a, v->prot));
    rc = dmamap_pt_fill(as, page, pfn, 1, prot, 0, 0, err);
    /* the PTE now holds the reference the allocation gave us (none on failure: freed) */
    page_put(as->m, dmamap_page(as->m, pfn));
    as->st.cow_faults++;
    return rc;
}

static int insert_one(dmamap_as *as, struct vma *v, uint64_t va, uint64_t pfn, int page_mode, int is_write,
                      uint64_t idx, struct dmamap_err *err)
{
    uint64_t page = va & PAGE_MASK;
    if (page_mode) {
        if (is_write && !(v->flags & DMAMAP_VM_SHARED)) {
            int rc = page_insertable(as, page, pfn, "fault handler returned a page", err);
            return rc ? rc : cow_page(as, v, page, pfn, 0, err);
        }
        uint64_t prot;
        int rc = page_get(as, page, pfn, "fault handler returned a page", 1, err);
        if (rc)
            return rc;
        rc = fault_memtype_check(as, v, pfn << PAGE_SHIFT, PAGE_SIZE, idx, MT_REPORT | MT_PAGE, &prot, err);
        rc = rc ? rc : dmamap_pt_insert(as, page, pfn, prot, 0, err);
        if (rc)
            page_unget(as, pfn);
        return rc;
    }
    if (is_write && !(v->flags & DMAMAP_VM_SHARED)) {
        if (!dmamap_pfn_is_ram(as->m, pfn))
            return dmamap_fail(err, DMAMAP_ECOW, va, "private write fault at %#llx on non-RAM pfn %#llx: "
                               "SIGBUS, not a copy", (unsigned long long)va, (unsigned long long)pfn);
        return cow_page(as, v, page, pfn, 0, err);
    }
    uint64_t kind = v->flags & (DMAMAP_VM_PFNMAP | DMAMAP_VM_MIXEDMAP);
    if (!kind || kind == (DMAMAP_VM_PFNMAP | DMAMAP_VM_MIXEDMAP))
        return dmamap_fail(err, DMAMAP_EVMAKIND, va, "PFN insert at %#llx into VMA [%#llx, %#llx) that is %s",
                           (unsigned long long)va, (unsigned long long)v->start, (unsigned long long)v->end,
                           kind ? "both VM_PFNMAP and VM_MIXEDMAP" : "neither VM_PFNMAP nor VM_MIXEDMAP");
    uint64_t prot;
    int rc = fault_memtype_check(as, v, pfn << PAGE_SHIFT, PAGE_SIZE, idx, MT_REPORT, &prot, err);
    if (rc)
        return rc;
    return dmamap_pt_insert(as, page, pfn, prot, 1, err);
}

/* Fault-around for n pages from a, backed by pfn.. (one chunk run, one leaf
 * table): fill the empty PTEs among them, as insert_one would one by one
 * (errors only skip pages), but with one walk and one hold of the lock. */
static void around_run(dmamap_as *as, struct vma *v, uint64_t a, uint64_t pfn, uint64_t n, int page_mode,
                       uint64_t idx)
{
    struct dmamap_err ignored;
    uint64_t table, cnt = 0;
    uint64_t *slot = dmamap_pt_slot(as, a, &table, &ignored);
    if (!slot)
        return;   /* a block covers it, or no memory for a table */
    uint64_t prot;
    if (fault_memtype_check(as, v, pfn << PAGE_SHIFT, n << PAGE_SHIFT, idx, page_mode ? MT_PAGE : 0, &prot,
                            &ignored) || prot != v->prot) {
        for (uint64_t i = 0; i < n; i++)   /* a conflict somewhere: page by page, reporting each */
            if (!slot[i])
                insert_one(as, v, a + (i << PAGE_SHIFT), pfn + i, page_mode, 0, idx + i, &ignored);
        return;
    }
    if (page_mode) {
        dmamap_machine *m = as->m;
        uint64_t base = dmamap_pt_leaf_base(as, v->prot, 0);
        for (uint64_t i = 0; i < n; i++) {
            struct page_desc *p = slot[i] ? NULL : dmamap_page(m, pfn + i);
            /* page_get's rules: RAM, allocated, neither anonymous nor a page table */
            if (!p || !page_map_get(m, p))
                continue;
            slot[i] = base | ((pfn + i) << as->pfn_shift);
            cnt++;
        }
    } else {
        uint64_t kind = v->flags & (DMAMAP_VM_PFNMAP | DMAMAP_VM_MIXEDMAP);
        if (!kind || kind == (DMAMAP_VM_PFNMAP | DMAMAP_VM_MIXEDMAP))
            return;
        uint64_t base = dmamap_pt_leaf_base(as, v->prot, 1);
        for (uint64_t i = 0; i < n; i++)
            if (!slot[i]) {
                slot[i] = base | ((pfn + i) << as->pfn_shift);
                cnt++;
            }
    }
    dmamap_pt_added(as, table, cnt);
}

static int builtin_fault(dmamap_as *as, struct vma *v, uint64_t va, int is_write, struct dmamap_err *err)
{
    int page_mode = v->fault_kind == DMAMAP_FAULT_PAGE;
    uint64_t idx = (va - v->start) >> PAGE_SHIFT;
    uint64_t run;
    uint64_t pfn = chunk_pfn(v, idx, &run);
    if (pfn == ~0ULL)
        return dmamap_fail(err, DMAMAP_ESIGBUS, va, "fault at %#llx beyond the end of the mapped buffer "
                           "(SIGBUS)", (unsigned long long)va);
    /* huge fault: a 2 MiB block when the chunk and the VMA allow */
    if (v->large && !page_mode) {
        uint64_t span = 1ULL << 21;
        uint64_t base = va & ~(span - 1);
        uint64_t bidx = (base - v->start) >> PAGE_SHIFT;
        uint64_t brun;
        uint64_t bpfn = base >= v->start ? chunk_pfn(v, bidx, &brun) : ~0ULL;
        if (base >= v->start && base + span <= v->end && bpfn != ~0ULL && brun >= 512 &&
            !((bpfn << PAGE_SHIFT) & (span - 1)) && !(is_write && !(v->flags & DMAMAP_VM_SHARED))) {
            uint64_t *e;
            int level;
            int found = dmamap_pt_walk(as, base, &e, &level);
            if (!found && level >= 1) {
                uint64_t prot;
                int rc = fault_memtype_check(as, v, bpfn << PAGE_SHIFT, span, bidx, MT_REPORT, &prot, err);
                rc = rc ? rc : dmamap_pt_fill(as, base, bpfn, 512, prot, 1, 1, err);
                as->st.faults_huge += rc == 0;
                return rc;
            }
        }
    }
    int rc = insert_one(as, v, va, pfn, page_mode, is_write, idx, err);
    if (rc || v->fault_around <= 1 || is_write)
        return rc;
    /* fault-around: map the empty neighbours in the aligned window, a chunk run at a time */
    uint64_t win = v->fault_around << PAGE_SHIFT, written = as->st.ptes_written;
    uint64_t lo = (va & ~(win - 1)) < v->start ? v->start : (va & ~(win - 1));
    uint64_t hi = lo + win > v->end ? v->end : lo + win;
    for (uint64_t a = lo; a < hi;) {
        uint64_t run, p = chunk_pfn(v, (a - v->start) >> PAGE_SHIFT, &run);
        if (p == ~0ULL)
            break;
        uint64_t n = (hi - a) >> PAGE_SHIFT, in_table = ENTRIES - ((a >> PAGE_SHIFT) & (ENTRIES - 1));
        n = n < run ? n : run;
        n = n < in_table ? n : in_table;
        around_run(as, v, a, p, n, page_mode, (a - v->start) >> PAGE_SHIFT);
        a += n << PAGE_SHIFT;
    }
    as->st.around_ptes += as->st.ptes_written - written;
    return 0;
}

/* Page references taken ahead (touch loops only): the first fast page fault
 * of a run takes the reference and map count of its page and of the pages
 * that follow it in the chunk and in its reference-lock group (up to
 * PREF_GROUP - 1), which the next faults of the run most likely map, under
 * one hold of the group's lock; a fault on a reserved page then touches no
 * shared descriptor.  They belong to the CPU slot of the touch
 * loop.  What the run did not use is given back before anything else can run
 * on this address space: before the general fault path (which may call out),
 * when a reader pauses for a writer and when the touch call returns. */
void fault_rsv_release(dmamap_as *as, struct as_cpu *c)
{
    if (!c->rsv_mask)
        return;
    dmamap_machine *m = as->m;   /* (the reserved pages are in one reference-lock group) */
    page_drop_mask(m, &m->pages[c->rsv_pfn - m->ram_base_pfn], c->rsv_mask, PAGE_REF1 | PAGE_MAP1);
    c->rsv_mask = 0;
}

/* Take the reference and map count a PTE of pfn holds (run: pages of the chunk
 * from pfn on, for references taken ahead).  0 when pfn may not be mapped. */
static int fast_page_ref(dmamap_as *as, struct as_cpu *c, uint64_t pfn, uint64_t run, int batch)
{
    dmamap_machine *m = as->m;
    if (rsv_take(c, pfn))
        return 1;
    if (!dmamap_pfn_is_ram(m, pfn))
        return 0;
    fault_rsv_release(as, c);
    struct page_desc *p = &m->pages[pfn - m->ram_base_pfn];
    if (!batch)
        return page_map_get(m, p);
    /* ahead: the pages of the chunk run, the RAM and pfn's reference-lock group, under one hold of its lock */
    uint64_t idx = pfn - m->ram_base_pfn, n = pref_span(idx, run);
    n = n < m->ram_pages - idx ? n : m->ram_pages - idx;
    uint64_t got = page_map_get_run(m, p, n);
    if (!got)
        return 0;
    c->rsv_pfn = pfn;
    c->rsv_mask = (got >= 64 ? ~0ULL : (1ULL << got) - 1) & ~1ULL;
    return 1;
}

/* Whether VMA v's faults may take the fast case: a built-in 4 KiB page or
 * PFN handler, a read (or a shared write), no fault-around or huge fault. */
int fault_fast_vma(const struct vma *v, int is_write)
{
    int kind = v->fault_kind;
    return (kind == DMAMAP_FAULT_PAGE || kind == DMAMAP_FAULT_PFN) && !(v->large && kind == DMAMAP_FAULT_PFN) &&
           !(is_write && !(v->flags & DMAMAP_VM_SHARED)) && !(v->fault_around > 1 && !is_write) &&
           (kind == DMAMAP_FAULT_PAGE ||
            (v->flags & (DMAMAP_VM_PFNMAP | DMAMAP_VM_MIXEDMAP)) == DMAMAP_VM_PFNMAP ||
            (v->flags & (DMAMAP_VM_PFNMAP | DMAMAP_VM_MIXEDMAP)) == DMAMAP_VM_MIXEDMAP);
}

/* The pfn behind va in v and the pages of its chunk from there (*run), or ~0. */
uint64_t fault_fast_pfn(const struct vma *v, uint64_t va, uint64_t *run)
{
    uint64_t k = ((va - v->start) >> PAGE_SHIFT) + v->first_page;
    if (v->nchunks == 1 && k < v->chunk_start[1]) {
        *run = v->chunk_start[1] - k;
        return v->chunks[0].pfn + (k - v->chunk_start[0]);
    }
    return chunk_pfn(v, k - v->first_page, run);
}

/* What a fast fault of pfn needs before its PTE is written: the page
 * reference (page handler) or a memtype range already found free of
 * conflicts (PFN handler, fault_memtype_check's fast case).  0: take the
 * general path (nothing changed). */
int fault_fast_take(dmamap_as *as, struct as_cpu *c, const struct vma *v, uint64_t pfn, uint64_t run,
                    int batch)
{
    if (v->fault_kind == DMAMAP_FAULT_PAGE)
        return fast_page_ref(as, c, pfn, run, batch);
    uint64_t pa = pfn << PAGE_SHIFT;
    return v->mt_gen == atomic_load_explicit(&as->m->memtype_gen, memory_order_acquire) + 1 &&
           v->mt_prot == v->prot && pa >= v->mt_lo && pa + PAGE_SIZE <= v->mt_hi;
}

/* The 4 KiB leaf of pfn 0 a fault in v writes (special for PFN handlers).
 * Reads the leaf memo only: readers run side by side. */
uint64_t fault_fast_leaf(dmamap_as *as, const struct vma *v)
{
    int special = v->fault_kind == DMAMAP_FAULT_PFN;
    uint64_t prot = special ? v->prot | as->special_bit : v->prot;
    return as->lf_ok && as->lf_prot == prot ? as->lf_base : as->m->arch->leaf(0, prot, 0);
}

/* The common lazy fault without the general path's detours: a fault
 * fault_fast_vma allows, whose leaf table exists: slot is va's empty PTE in
 * the walk cache's leaf table.  Returns 1 with the PTE written and everything
 * counted as handle_fault would count it, or 0 having changed nothing: the
 * general path then takes the fault (and reports whatever rule it breaks). */
int fault_fast(dmamap_as *as, struct as_cpu *c, struct vma *v, uint64_t va, int is_write, uint64_t *slot,
               int batch)
{
    uint64_t run, pfn, table = c->wcp;
    if (!fault_fast_vma(v, is_write) || (va >> (PAGE_SHIFT + 9)) != c->wct ||
        (pfn = fault_fast_pfn(v, va, &run)) == ~0ULL)
        return 0;
    /* the PTE lock of the leaf table: another reader may fault the same page */
    pthread_mutex_t *ptl = &as->ptl[ptl_of(table)];
    LOCK(ptl);
    int ok = !__atomic_load_n(slot, __ATOMIC_RELAXED) &&
             fault_fast_take(as, c, v, pfn, run, batch);
    if (ok) {
        __atomic_store_n(slot, fault_fast_leaf(as, v) | (pfn << as->pfn_shift), __ATOMIC_RELAXED);
        __atomic_fetch_add(&table_desc(as->m, table)->table_used, 1, __ATOMIC_RELAXED);
    }
    UNLOCK(ptl);
    if (!ok)
        return 0;
    c->st->ptes_written++;
    c->st->faults++;
    c->st->faults_page += v->fault_kind == DMAMAP_FAULT_PAGE;
    c->st->faults_pfn += v->fault_kind == DMAMAP_FAULT_PFN;
    return 1;
}

/* Call the Python fault callback for va (flags: write, mkwrite) and look the
 * VMA up again: the callback may have closed the address space (or the machine
 * went) or unmapped its own VMA.  *r is what it returned; *vp the VMA now. */
static int call_fault_fn(dmamap_as *as, struct vma **vp, uint64_t va, int flags, uint64_t *pfn, int *r,
                         const char *by, const char *own, struct dmamap_err *err)
{
    int64_t id = (*vp)->id;
    *r = as->fault_fn(as->fault_ctx, id, va & PAGE_MASK, flags, pfn);
    if (as_dead(as))
        return dmamap_fail(err, DMAMAP_ECLOSED, va, "address space closed by %s at %#llx", by,
                           (unsigned long long)va);
    *vp = vma_get(as, id, NULL);
    if (!*vp)
        return dmamap_fail(err, DMAMAP_ESEGV, va, "VMA unmapped by its own %s at %#llx", own,
                           (unsigned long long)va);
    return 0;
}

int handle_fault(dmamap_as *as, struct vma *v, uint64_t va, int is_write, struct dmamap_err *err)
{
    fault_rsv_release(as, &as->cpu[0]);   /* the general path may call out: no references held ahead */
    as->st.faults++;
    as->st.faults_page += v->fault_kind == DMAMAP_FAULT_PAGE;
    as->st.faults_pfn += v->fault_kind == DMAMAP_FAULT_PFN;
    as->st.faults_python += v->fault_kind == DMAMAP_FAULT_PYTHON;
    switch (v->fault_kind) {
    case DMAMAP_FAULT_PAGE:
    case DMAMAP_FAULT_PFN:
        return builtin_fault(as, v, va, is_write, err);
    case DMAMAP_FAULT_PYTHON: {
        if (!as->fault_fn)
            return dmamap_fail(err, DMAMAP_ENOHANDLER, va, "VMA has a Python fault handler but no callback");
        uint64_t pfn = 0;
        int r, rc = call_fault_fn(as, &v, va, is_write, &pfn, &r, "the fault handler", "fault handler", err);
        if (rc)
            return rc;
        if (r == DMAMAP_VM_FAULT_PAGE) {
            /* finish_fault: a handler that installed the PTE itself (vm_insert_page)
             * and returned a page as well wins the race with itself; the returned
             * page is dropped and the access goes on through the PTE present. */
            uint64_t *e;
            int level;
            if (dmamap_pt_walk(as, va, &e, &level))
                return 0;
            return insert_one(as, v, va, pfn, 1, is_write, ~0ULL, err);
        }
        if (r == DMAMAP_VM_FAULT_NOPAGE) {
            uint64_t *e;
            int level;
            if (!dmamap_pt_walk(as, va, &e, &level))
                return dmamap_fail(err, DMAMAP_ESIGBUS, va, "fault handler returned VM_FAULT_NOPAGE without "
                                   "inserting a PTE at %#llx", (unsigned long long)va);
            return 0;
        }
        if (r == DMAMAP_VM_FAULT_SIGBUS)
            return dmamap_fail(err, DMAMAP_ESIGBUS, va, "fault handler returned VM_FAULT_SIGBUS at %#llx",
                               (unsigned long long)va);
        return dmamap_fail(err, r < 0 ? r : DMAMAP_EHANDLER, va, "fault handler failed at %#llx",
                           (unsigned long long)va);
    }
    default:
        return dmamap_fail(err, DMAMAP_ENOHANDLER, va, "not-present page at %#llx in VMA [%#llx, %#llx) "
                           "with no fault handler (SIGBUS)", (unsigned long long)va,
                           (unsigned long long)v->start, (unsigned long long)v->end);
    }
}

/* mm/memory.c wp_page_shared: a write met a read-only PTE of a shared
 * writable write-notify VMA.  The owner's page_mkwrite (the fault callback
 * with DMAMAP_FAULT_FLAG_MKWRITE) is asked first; if it agrees, the PTE
 * becomes writable (wp_page_reuse), its memory type and special bit kept. */
int wp_page_shared(dmamap_as *as, struct vma *v, uint64_t va, struct dmamap_err *err)
{
    fault_rsv_release(as, &as->cpu[0]);   /* calls out: no references held ahead */
    as->st.faults++;
    if (!as->fault_fn)
        return dmamap_fail(err, DMAMAP_ENOHANDLER, va, "write-notify VMA has no fault callback");
    uint64_t pfn = 0;
    int r, rc = call_fault_fn(as, &v, va, DMAMAP_FAULT_FLAG_WRITE | DMAMAP_FAULT_FLAG_MKWRITE, &pfn, &r,
                              "page_mkwrite", "page_mkwrite", err);
    if (rc)
        return rc;
    if (r == DMAMAP_VM_FAULT_SIGBUS)
        return dmamap_fail(err, DMAMAP_ESIGBUS, va, "page_mkwrite returned VM_FAULT_SIGBUS at %#llx",
                           (unsigned long long)va);
    if (r != DMAMAP_VM_FAULT_NOPAGE)
        return dmamap_fail(err, r < 0 ? r : DMAMAP_EHANDLER, va, "page_mkwrite failed at %#llx",
                           (unsigned long long)va);
    const struct dmamap_arch *a = as->m->arch;
    uint64_t *e;
    int level;
    if (!dmamap_pt_walk(as, va, &e, &level))
        return 0;   /* unmapped meanwhile (zapped by the handler): the retried access faults again */
    struct dmamap_xlate x;
    a->decode(a, *e, level, &x);
    uint64_t prot = a->prot_make(a, a->prot_flags(v->prot) | DMAMAP_PROT_WRITE, x.cache);
    *e = a->leaf(a->entry_pa(*e, level), x.special ? a->set_special(prot) : prot, level);
    dmamap_pt_kernel_sync(as);
    uint64_t span = 1ULL << (PAGE_SHIFT + 9 * level);
    dmamap_tlb_flush_range(as, va & ~(span - 1), span);
    return 0;
}
