/* Page tables in emulated RAM: fill, clear, protect and walk, generic over the
 * ISA formats in arch/.  Levels are numbered from the leaf (0 = 4 KiB). */
#include <string.h>
#include "internal.h"

static inline uint64_t level_shift(int level)
{
    return PAGE_SHIFT + 9 * (uint64_t)level;
}

static inline int pt_index(uint64_t va, int level)
{
    return (int)((va >> level_shift(level)) & (ENTRIES - 1));
}

uint64_t *dmamap_table_ptr(dmamap_machine *m, uint64_t table_pa)
{
    return dmamap_ram_table(m, table_pa);
}

/* The walk cache remembers the last table reached at each level, so a run of
 * entries under one table (4 KiB entries under one 2 MiB region, 2 MiB blocks
 * under one 1 GiB region) does not re-walk from the root.  A table only goes
 * away through drop_table (or free_all), which resets the whole cache. */
void dmamap_pt_cache_reset(dmamap_as *as)
{
    for (int l = 0; l < MAX_LEVELS; l++) {
        as->wc_tag[l] = ~0ULL;
        as->wc_pa[l] = 0;
    }
}

static inline void wc_set(dmamap_as *as, int level, uint64_t va, uint64_t table_pa)
{
    as->wc_tag[level] = va >> (PAGE_SHIFT + 9 * (uint64_t)(level + 1));
    as->wc_pa[level] = table_pa;
}

/* The deepest cached table at or below min_level on the way to va (*table),
 * and its level; the root when nothing is cached. */
static int wc_find_up(dmamap_as *as, uint64_t va, int min_level, uint64_t *table);

static inline int wc_find(dmamap_as *as, uint64_t va, int min_level, uint64_t *table)
{
    if (min_level == 0 && (va >> (PAGE_SHIFT + 9)) == as->wc_tag[0]) {   /* the common case */
        *table = as->wc_pa[0];
        return 0;
    }
    return wc_find_up(as, va, min_level ? min_level : 1, table);
}

static int wc_find_up(dmamap_as *as, uint64_t va, int min_level, uint64_t *table)
{
    int top = as->m->arch->levels - 1;
    for (int l = min_level; l < top; l++)
        if ((va >> (PAGE_SHIFT + 9 * (uint64_t)(l + 1))) == as->wc_tag[l]) {
            *table = as->wc_pa[l];
            return l;
        }
    *table = as->root;
    return top;
}

static inline struct page_desc *table_desc(dmamap_machine *m, uint64_t table_pa)
{
    return &m->pages[(table_pa >> PAGE_SHIFT) - m->ram_base_pfn];
}

/* Whether a table entry leads to a page-table page of this machine.  Tables
 * live in emulated RAM, where phys_write, device DMA or a PFN mapping of a
 * table page can scribble over them; an entry pointing anywhere else is
 * corrupt and is never followed, so no walk leaves the emulated RAM or touches
 * the bookkeeping of a page that is not a table. */
static inline int table_ok(dmamap_machine *m, uint64_t table_pa)
{
    uint64_t idx = (table_pa >> PAGE_SHIFT) - m->ram_base_pfn;
    return idx < m->ram_pages && (m->pages[idx].flags & DMAMAP_PG_TABLE);
}

static int new_table(dmamap_as *as, uint64_t *pa, struct dmamap_err *err)
{
    int rc = dmamap_alloc_table_page(as->m, pa, err);
    if (rc == 0)
        as->st.table_pages++;
    return rc;
}

static void drop_table(dmamap_as *as, uint64_t pa)
{
    dmamap_pt_cache_reset(as);
    if (!table_ok(as->m, pa))
        return;   /* already freed: reached twice through a corrupt entry */
    dmamap_free_table_page(as->m, pa);
    as->st.table_pages--;
}

/* Replace the block entry *e at level (> 0) by a table of next-level entries
 * mapping the same memory with the same attributes. */
static int split_block(dmamap_as *as, uint64_t *e, int level, struct dmamap_err *err)
{
    const struct dmamap_arch *a = as->m->arch;
    uint64_t child;
    int rc = new_table(as, &child, err);
    if (rc)
        return rc;
    uint64_t *t = dmamap_table_ptr(as->m, child);
    uint64_t pa = a->entry_pa(*e, level);
    uint64_t prot = a->leaf_prot(*e, level);
    uint64_t step = 1ULL << level_shift(level - 1);
    for (int i = 0; i < ENTRIES; i++)
        t[i] = a->leaf(pa + (uint64_t)i * step, prot, level - 1);
    table_desc(as->m, child)->table_used = ENTRIES;
    *e = a->table_entry(child, as->kernel);
    return 0;
}

/* Entry slot for va at `level`, creating tables on the way down; *table_out is
 * the table page holding the slot.  Fails with EBUSY if a block above `level`
 * already covers va. */
static int descend(dmamap_as *as, uint64_t va, int level, uint64_t **slot, uint64_t *table_out,
                   struct dmamap_err *err)
{
    const struct dmamap_arch *a = as->m->arch;
    uint64_t table;
    for (int l = wc_find(as, va, level, &table); l > level; l--) {
        uint64_t *e = &dmamap_table_ptr(as->m, table)[pt_index(va, l)];
        if (*e == 0) {
            uint64_t child;
            int rc = new_table(as, &child, err);
            if (rc)
                return rc;
            *e = a->table_entry(child, as->kernel);
            table_desc(as->m, table)->table_used++;
        } else if (!a->is_table(*e, l)) {
            return dmamap_fail(err, DMAMAP_EBUSY, va, "prefault into a non-empty entry: %#llx is "
                               "already mapped by a %s block", (unsigned long long)va,
                               l == 2 ? "1 GiB" : "2 MiB");
        } else if (!table_ok(as->m, a->table_pa(*e))) {
            return dmamap_fail(err, DMAMAP_EBUSY, va, "corrupt level-%d entry %#llx on the way to %#llx: it "
                               "points at no page-table page", l, (unsigned long long)*e,
                               (unsigned long long)va);
        }
        table = a->table_pa(*e);
        wc_set(as, l - 1, va, table);
    }
    *slot = &dmamap_table_ptr(as->m, table)[pt_index(va, level)];
    *table_out = table;
    return 0;
}

static void ref_pages(dmamap_as *as, uint64_t pa, uint64_t n);

static int pt_fill(dmamap_as *as, uint64_t va, uint64_t pfn, uint64_t npages, uint64_t prot,
                   int large, int special, struct dmamap_err *err)
{
    const struct dmamap_arch *a = as->m->arch;
    uint64_t start = va;
    uint64_t pa = pfn << PAGE_SHIFT;
    if (special)
        prot = a->set_special(prot);
    while (npages) {
        int level = 0;
        if (large && special) {   /* normal pages are mapped 4 KiB at a time */
            for (int l = a->max_block_level; l > 0; l--) {
                uint64_t span = 1ULL << level_shift(l);
                if (!((va | pa) & (span - 1)) && (npages << PAGE_SHIFT) >= span) {
                    level = l;
                    break;
                }
            }
        }
        uint64_t *slot, table;
        int rc = descend(as, va, level, &slot, &table, err);
        while (rc == 0 && level > 0 && *slot != 0)   /* a table lives there: go smaller */
            rc = descend(as, va, --level, &slot, &table, err);
        if (rc) {
            /* Out of memory part-way down leaves fresh, empty tables on the path
             * to va; nothing maps va then, so clearing its page frees them too.
             * EBUSY means another mapping covers va: leave it alone. */
            uint64_t end = rc == DMAMAP_EBUSY ? va : va + PAGE_SIZE;
            dmamap_pt_clear(as, start, (end - start) >> PAGE_SHIFT);
            return rc;
        }
        struct page_desc *td = table_desc(as->m, table);
        uint64_t n = level > 0 ? 1 : ENTRIES - (uint64_t)pt_index(va, 0);
        if (level == 0 && npages < n)
            n = npages;
        uint64_t step = 1ULL << level_shift(level);
        uint64_t e = a->leaf(pa, prot, level);
        /* Two branch-free passes (check, then store) instead of one loop with
         * an early exit: both run at store-loop speed. */
        uint64_t any = 0, ok = n;
        for (uint64_t i = 0; i < n; i++)
            any |= slot[i];
        if (any)
            for (ok = 0; !slot[ok]; ok++)
                ;
        for (uint64_t i = 0; i < ok; i++)
            slot[i] = e + i * step;
        if (ok < n) {
            uint64_t i = ok;
            if (!special)
                ref_pages(as, pa, i);
            td->table_used += (uint32_t)i;
            as->st.ptes_written += i;
            uint64_t busy = va + i * step;
            dmamap_pt_clear(as, start, (busy - start) >> PAGE_SHIFT);
            return dmamap_fail(err, DMAMAP_EBUSY, busy, "prefault into a non-empty PTE at %#llx "
                               "(partial remap rolled back)", (unsigned long long)busy);
        }
        if (!special)
            ref_pages(as, pa, n);
        td->table_used += (uint32_t)n;
        as->st.ptes_written += n;
        va += n * step;
        pa += n * step;
        npages -= n * (step >> PAGE_SHIFT);
    }
    return 0;
}

/* The fault path's insert: fill the one empty 4 KiB PTE of va.  Unlike
 * dmamap_pt_fill it takes no page references (the caller holds them) and
 * reuses the walk cache, so a run of faults under one leaf table never walks
 * from the root. */
int dmamap_pt_insert(dmamap_as *as, uint64_t va, uint64_t pfn, uint64_t prot, int special,
                     struct dmamap_err *err)
{
    const struct dmamap_arch *a = as->m->arch;
    uint64_t *slot, table;
    int rc = descend(as, va, 0, &slot, &table, err);
    if (rc) {
        if (rc != DMAMAP_EBUSY)
            dmamap_pt_clear(as, va, 1);   /* free the fresh, empty tables on the way */
        return rc;
    }
    if (*slot)
        return dmamap_fail(err, DMAMAP_EBUSY, va, "prefault into a non-empty PTE at %#llx "
                           "(partial remap rolled back)", (unsigned long long)va);
    if (special)
        prot |= as->special_bit;
    if (!as->lf_ok || as->lf_prot != prot) {   /* a leaf is (output address | attributes) */
        as->lf_base = a->leaf(0, prot, 0);
        as->lf_prot = prot;
        as->lf_ok = 1;
    }
    *slot = as->lf_base | (pfn << PAGE_SHIFT);
    table_desc(as->m, table)->table_used++;
    as->st.ptes_written++;
    return 0;
}

/* A fill that fails is rolled back completely, counters included: the state is
 * as if it had never been tried. */
int dmamap_pt_fill(dmamap_as *as, uint64_t va, uint64_t pfn, uint64_t npages, uint64_t prot,
                   int large, int special, struct dmamap_err *err)
{
    uint64_t written = as->st.ptes_written, cleared = as->st.ptes_cleared;
    int rc = pt_fill(as, va, pfn, npages, prot, large, special, err);
    if (rc) {
        as->st.ptes_written = written;
        as->st.ptes_cleared = cleared;
    }
    return rc;
}

/* For batched fault-path inserts (fault-around): the level-0 slot of va with
 * the tables on the way created (NULL and err on failure, e.g. EBUSY under a
 * block), the 4 KiB leaf encoding of pfn 0 with prot, and the accounting of
 * entries the caller wrote into the leaf table. */
uint64_t *dmamap_pt_slot(dmamap_as *as, uint64_t va, uint64_t *table_pa, struct dmamap_err *err)
{
    uint64_t *slot;
    int rc = descend(as, va, 0, &slot, table_pa, err);
    if (rc && rc != DMAMAP_EBUSY)
        dmamap_pt_clear(as, va & PAGE_MASK, 1);   /* free the fresh, empty tables on the way */
    return rc ? NULL : slot;
}

uint64_t dmamap_pt_leaf_base(dmamap_as *as, uint64_t prot, int special)
{
    if (special)
        prot |= as->special_bit;
    if (!as->lf_ok || as->lf_prot != prot) {   /* a leaf is (output address | attributes) */
        as->lf_base = as->m->arch->leaf(0, prot, 0);
        as->lf_prot = prot;
        as->lf_ok = 1;
    }
    return as->lf_base;
}

void dmamap_pt_added(dmamap_as *as, uint64_t table_pa, uint64_t n)
{
    table_desc(as->m, table_pa)->table_used += (uint32_t)n;
    as->st.ptes_written += n;
}

/* Take the references that n normal 4 KiB PTEs of RAM pages from pa hold. */
static void ref_pages(dmamap_as *as, uint64_t pa, uint64_t n)
{
    LOCK(&as->m->lock);
    for (uint64_t i = 0; i < n; i++) {
        struct page_desc *p = dmamap_page(as->m, (pa >> PAGE_SHIFT) + i);
        if (p) {
            p->mapcount++;
            p->refcount++;
        }
    }
    UNLOCK(&as->m->lock);
}

/* Drop the page references the normal (non-special) 4 KiB PTEs among
 * t[0..n) hold, under one hold of the machine lock. */
static void unref_run(dmamap_as *as, const uint64_t *t, uint64_t n)
{
    const struct dmamap_arch *a = as->m->arch;
    dmamap_machine *m = as->m;
    uint64_t last_attr = ~0ULL;
    int last_valid = 0;
    LOCK(&m->lock);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t e = t[i];
        if (!e || (e & as->special_bit))
            continue;
        uint64_t attr = e & ~as->pa_mask[0];
        if (attr != last_attr) {   /* validity depends on the attribute bits only */
            last_attr = attr;
            last_valid = a->is_valid(e, 0);
        }
        uint64_t pfn = (e & as->pa_mask[0]) >> PAGE_SHIFT;
        struct page_desc *p = last_valid ? dmamap_page(m, pfn) : NULL;
        if (!p)
            continue;
        p->mapcount--;
        p->refcount--;
        if (p->refcount == 0) {   /* last reference of an anonymous (COW) page */
            struct dmamap_err err;
            p->refcount = 1;
            UNLOCK(&m->lock);
            dmamap_free_pages(m, pfn, 1, &err);
            LOCK(&m->lock);
        }
    }
    UNLOCK(&m->lock);
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

void dmamap_pt_clear(dmamap_as *as, uint64_t va, uint64_t npages)
{
    if (npages == 0)
        return;
    /* Tables may go, or (with scribbled memory) be cut loose without going:
     * start the walk cache afresh either way. */
    dmamap_pt_cache_reset(as);
    clear_table(as, as->root, as->m->arch->levels - 1, va, va + (npages << PAGE_SHIFT));
}

static int walk_from(dmamap_as *as, uint64_t va, int l, uint64_t table, uint64_t **entry_out, int *level_out,
                     int cache)
{
    const struct dmamap_arch *a = as->m->arch;
    for (; l >= 0; l--) {
        uint64_t *e = &dmamap_table_ptr(as->m, table)[pt_index(va, l)];
        *entry_out = e;
        *level_out = l;
        if (*e == 0)
            return 0;
        if (l > 0 && a->is_table(*e, l)) {
            table = a->table_pa(*e);
            if (!table_ok(as->m, table))
                return 0;   /* corrupt entry: translates to nothing */
            if (cache)
                wc_set(as, l - 1, va, table);
            continue;
        }
        return 1;
    }
    return 0;
}

/* The MMU's walk, with its paging-structure (walk) cache: what faults and
 * accesses use.  The cache is flushed with the TLB, as hardware's is. */
int dmamap_pt_walk(dmamap_as *as, uint64_t va, uint64_t **entry_out, int *level_out)
{
    if ((va >> (PAGE_SHIFT + 9)) == as->wc_tag[0]) {   /* the common case: a cached leaf table */
        uint64_t *e = &dmamap_ram_table(as->m, as->wc_pa[0])[pt_index(va, 0)];
        *entry_out = e;
        *level_out = 0;
        return *e != 0;
    }
    uint64_t table;
    int l = wc_find_up(as, va, 1, &table);
    return walk_from(as, va, l, table, entry_out, level_out, 1);
}

/* A walk of the tables as they are in memory now, from the root, touching no
 * cache: for translate() and count_present(), which show the memory's truth. */
int dmamap_pt_walk_mem(dmamap_as *as, uint64_t va, uint64_t **entry_out, int *level_out)
{
    return walk_from(as, va, as->m->arch->levels - 1, as->root, entry_out, level_out, 0);
}

int dmamap_pt_protect(dmamap_as *as, uint64_t va, uint64_t npages, uint64_t prot, struct dmamap_err *err)
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
            a->decode(*e, level, &x);
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
int dmamap_pt_split_edges(dmamap_as *as, uint64_t va, uint64_t end, struct dmamap_err *err)
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

static void free_tables(dmamap_as *as, uint64_t table, int level)
{
    const struct dmamap_arch *a = as->m->arch;
    if (level > 0) {
        uint64_t *t = dmamap_table_ptr(as->m, table);
        for (int i = 0; i < ENTRIES; i++)
            if (t[i] && a->is_table(t[i], level) && table_ok(as->m, a->table_pa(t[i])))
                free_tables(as, a->table_pa(t[i]), level - 1);
    }
    drop_table(as, table);
}

void dmamap_pt_free_all(dmamap_as *as)
{
    if (as->st.table_pages)   /* the root is still allocated; it may be pfn 0, so test the count */
        free_tables(as, as->root, as->m->arch->levels - 1);
    as->root = 0;
}
