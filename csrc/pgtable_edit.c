/* Changing page tables in place: clearing ranges (dropping page references and
 * emptied tables), re-protecting, splitting blocks at a range's edges, freeing all. */
#include <string.h>
#include "internal.h"

/* Drop the page references the normal (non-special) 4 KiB PTEs among
 * t[0..n) hold (atomics: the machine lock only when a last one frees a page). */
static void unref_run(dmamap_as *as, const uint64_t *t, uint64_t n)
{
    const struct dmamap_arch *a = as->m->arch;
    dmamap_machine *m = as->m;
    uint64_t last_attr = ~0ULL;
    int last_valid = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t e = t[i];
        if (!e || (e & as->special_bit))
            continue;
        uint64_t attr = e & ~as->pa_mask[0];
        if (attr != last_attr) {   /* validity depends on the attribute bits only */
            last_attr = attr;
            last_valid = a->is_valid(a, e, 0);
        }
        uint64_t pfn = (e & as->pa_mask[0]) >> as->pfn_shift;
        struct page_desc *p = last_valid ? dmamap_page(m, pfn) : NULL;
        if (!p)
            continue;
        page_map_put(m, p);   /* the last reference of an anonymous (COW) page frees it */
    }
}

static void clear_table(dmamap_as *as, uint64_t table, int level, uint64_t va, uint64_t end)
{
    const struct dmamap_arch *a = as->m->arch;
    uint64_t *t = dmamap_table_ptr(as->m, table);
    struct page_desc *td = table_desc(as->m, table);
    if (level == 0) {   /* a run of 4 KiB entries: count, drop page references, zero */
        if (end <= va)
            return;
        uint64_t lo = (uint64_t)pt_index(va, 0);
        uint64_t cnt = (end - va + PAGE_SIZE - 1) >> PAGE_SHIFT;
        if (cnt > ENTRIES - lo)
            cnt = ENTRIES - lo;
        uint64_t smask = as->special_bit, used = 0, normal = 0;
        for (uint64_t i = lo; i < lo + cnt; i++) {
            used += t[i] != 0;
            normal += (t[i] != 0) & !(t[i] & smask);
        }
        if (normal)
            unref_run(as, &t[lo], cnt);
        memset(&t[lo], 0, cnt * sizeof *t);
        td->table_used -= (uint32_t)used;
        as->st.ptes_cleared += used;
        return;
    }
    uint64_t span = 1ULL << level_shift(level);
    uint64_t cur = va;
    while (cur < end) {
        uint64_t ent_start = cur & ~(span - 1);
        uint64_t ent_end = ent_start + span;
        uint64_t stop = ent_end < end && ent_end > ent_start ? ent_end : end;
        uint64_t *e = &t[pt_index(cur, level)];
        if (*e) {
            if (level > 0 && a->is_table(*e, level) && !table_ok(as->m, a->table_pa(*e))) {
                *e = 0;   /* corrupt: not followed, just cleared */
                if (td->table_used)
                    td->table_used--;
            } else if (level > 0 && a->is_table(*e, level)) {
                uint64_t child = a->table_pa(*e);
                clear_table(as, child, level - 1, cur, stop);
                if (table_desc(as->m, child)->table_used == 0) {
                    *e = 0;
                    td->table_used--;
                    drop_table(as, child);
                }
            } else if (cur == ent_start && stop == ent_end) {   /* a whole block (level > 0 here) */
                *e = 0;
                td->table_used--;
                as->st.ptes_cleared++;
            } else {
                struct dmamap_err err;
                if (split_block(as, e, level, &err) == 0)
                    continue;   /* now a table: clear inside it */
            }
        }
        cur = stop;
    }
}

/* The root entries [0, own_hi) this address space owns: a user root holds the
 * kernel's shared half too, which it must never clear, free or count. */
static int own_hi(dmamap_as *as)
{
    int half = as->m->arch->kernel_half;
    return !as->kernel && half > 0 ? half : ENTRIES;
}

static void pt_clear(dmamap_as *as, uint64_t va, uint64_t npages)
{
    if (npages == 0)
        return;
    int top = as->m->arch->levels - 1;
    uint64_t limit = (uint64_t)own_hi(as) << level_shift(top);
    if (own_hi(as) < ENTRIES) {   /* user VAs are below the kernel half; never reach into it */
        if (va >= limit)
            return;
        if (npages > (limit - va) >> PAGE_SHIFT)
            npages = (limit - va) >> PAGE_SHIFT;
    }
    /* Tables may go, or (with scribbled memory) be cut loose without going:
     * start the walk cache afresh either way. */
    dmamap_pt_cache_reset(as);
    clear_table(as, as->root, as->m->arch->levels - 1, va, va + (npages << PAGE_SHIFT));
}

void dmamap_pt_clear(dmamap_as *as, uint64_t va, uint64_t npages)
{
    pt_clear(as, va, npages);
    dmamap_pt_kernel_sync(as);
}

static int pt_protect(dmamap_as *as, uint64_t va, uint64_t npages, uint64_t prot, struct dmamap_err *err)
{
    const struct dmamap_arch *a = as->m->arch;
    uint64_t end = va + (npages << PAGE_SHIFT);
    uint64_t cur = va;
    while (cur < end) {
        uint64_t *e;
        int level;
        int found = dmamap_pt_walk(as, cur, &e, &level);
        uint64_t span = 1ULL << level_shift(level);
        uint64_t ent_start = cur & ~(span - 1);
        uint64_t stop = ent_start + span < end ? ent_start + span : end;
        if (found) {
            if (level > 0 && (cur != ent_start || stop != ent_start + span)) {
                int rc = split_block(as, e, level, err);
                if (rc)
                    return rc;
                continue;
            }
            struct dmamap_xlate x;
            a->decode(a, *e, level, &x);
            uint64_t p = x.special ? a->set_special(prot) : prot;
            *e = a->leaf(a->entry_pa(*e, level), p, level);
        }
        cur = stop;
    }
    return 0;
}

/* Split the large blocks that straddle either edge of [va, end), so that
 * clearing or re-protecting the range never needs a table page part-way
 * through.  All or nothing: if a split runs out of memory, the splits already
 * done are merged back and the tables are as they were. */
static int pt_split_edges(dmamap_as *as, uint64_t va, uint64_t end, struct dmamap_err *err)
{
    const struct dmamap_arch *a = as->m->arch;
    struct {
        uint64_t *e;
        uint64_t block;
    } undo[2 * MAX_LEVELS];
    int n = 0;
    uint64_t edges[2] = {va, end};
    for (int k = 0; k < 2; k++) {
        for (;;) {
            uint64_t *e;
            int level;
            if (!dmamap_pt_walk_mem(as, edges[k], &e, &level) || level == 0 ||
                !(edges[k] & ((1ULL << level_shift(level)) - 1)) || n == 2 * MAX_LEVELS)
                break;
            uint64_t block = *e;
            int rc = split_block(as, e, level, err);
            if (rc) {
                while (n--) {
                    uint64_t child = a->table_pa(*undo[n].e);
                    *undo[n].e = undo[n].block;
                    drop_table(as, child);
                }
                return rc;
            }
            undo[n].e = e;
            undo[n].block = block;
            n++;
        }
    }
    return 0;
}

int dmamap_pt_protect(dmamap_as *as, uint64_t va, uint64_t npages, uint64_t prot, struct dmamap_err *err)
{
    int rc = pt_protect(as, va, npages, prot, err);
    dmamap_pt_kernel_sync(as);
    return rc;
}

int dmamap_pt_split_edges(dmamap_as *as, uint64_t va, uint64_t end, struct dmamap_err *err)
{
    int rc = pt_split_edges(as, va, end, err);
    dmamap_pt_kernel_sync(as);
    return rc;
}

static void free_tables(dmamap_as *as, uint64_t table, int level, int nentries)
{
    const struct dmamap_arch *a = as->m->arch;
    if (level > 0) {
        uint64_t *t = dmamap_table_ptr(as->m, table);
        for (int i = 0; i < nentries; i++)
            if (t[i] && a->is_table(t[i], level) && table_ok(as->m, a->table_pa(t[i])))
                free_tables(as, a->table_pa(t[i]), level - 1, ENTRIES);
    }
    drop_table(as, table);
}

void dmamap_pt_free_all(dmamap_as *as)
{
    if (as->st.table_pages)   /* the root is still allocated; it may be pfn 0, so test the count */
        free_tables(as, as->root, as->m->arch->levels - 1, own_hi(as));
    as->root = 0;
}
