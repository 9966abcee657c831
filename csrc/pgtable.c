/* Page tables in emulated RAM, generic over the ISA formats in arch/: the walk
 * (with its paging-structure cache), descending with table allocation, fills and
 * single inserts.  Levels are numbered from the leaf (0 = 4 KiB). */
#include <stdlib.h>
#include <string.h>
#include "internal.h"

uint64_t *dmamap_table_ptr(dmamap_machine *m, uint64_t table_pa)
{
    return dmamap_ram_table(m, table_pa);
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

/* The walk cache remembers the last table reached at each level, so a run of
 * entries under one table (4 KiB entries under one 2 MiB region, 2 MiB blocks
 * under one 1 GiB region) does not re-walk from the root, and up to
 * LEAF_CACHE leaf tables besides, so that scattered accesses do not either.
 * A table only goes away through drop_table (or free_all), which resets the
 * whole cache; resetting the leaf tables is a new generation. */
void dmamap_pt_cache_reset(dmamap_as *as)
{
    for (int l = 0; l < MAX_LEVELS; l++) {
        as->wc_tag[l] = ~0ULL;
        as->wc_pa[l] = 0;
    }
    for (int k = 0; k < AS_CPUS; k++) {   /* the first level, every CPU's (exclusive caller) */
        as->cpu[k].wct = ~0ULL;
        as->cpu[k].wcp = 0;
    }
    if (++as->lc_gen >= 1ULL << (64 - LC_GEN_SHIFT)) {   /* generations wrapped: forget them all */
        memset(as->lc, 0, sizeof as->lc);
        for (int k = 0; k < AS_CPUS; k++)
            memset(as->cpu[k].lc, 0, sizeof as->cpu[k].lc);
        as->lc_gen = 1;
    }
}

static inline void wc_set(dmamap_as *as, int level, uint64_t va, uint64_t table_pa)
{
    as->wc_tag[level] = va >> (PAGE_SHIFT + 9 * (uint64_t)(level + 1));
    as->wc_pa[level] = table_pa;
    if (level == 0) {
        as->cpu[0].wct = as->wc_tag[0];
        as->cpu[0].wcp = table_pa;
        uint64_t k = va >> (PAGE_SHIFT + 9);
        as->lc[k % LEAF_CACHE].tag = lc_tag(as, k);
        as->lc[k % LEAF_CACHE].pa = table_pa;
    }
}

static inline int wc_find(dmamap_as *as, uint64_t va, int min_level, uint64_t *table)
{
    if (min_level == 0 && leaf_cached(as, va, table)) {   /* the common case */
        wc_set(as, 0, va, *table);
        return 0;
    }
    return wc_find_up(as, va, min_level ? min_level : 1, table);
}

/* The leaf table of va for touch-loop CPU slot c, which may run in reader mode
 * beside other readers (1), or 0 when the general path must take it.  What the
 * caches do not answer is walked with atomic loads; with alloc (the caller
 * found va in a VMA whose faults the fast case takes), a missing table is
 * allocated and installed with a compare-and-swap, the loser freeing its page,
 * as Linux's __pte_alloc installs a new table under the PMD lock beside other
 * faulting threads.  Only the slot's own walk-cache entry is updated.  The
 * kernel address space's upper tables are published to every user root, which
 * only the exclusive path does. */
int pt_leaf_cpu(dmamap_as *as, struct as_cpu *c, uint64_t va, int alloc, uint64_t *table_out)
{
    if (leaf_cached_cpu(as, c, va, table_out))
        return 1;
    if (as->kernel)
        return 0;
    dmamap_machine *m = as->m;
    const struct dmamap_arch *a = m->arch;
    uint64_t table = as->root;
    for (int l = a->levels - 1; l > 0; l--) {
        uint64_t *e = &dmamap_ram_table(m, table)[pt_index(va, l)];
        uint64_t ent = __atomic_load_n(e, __ATOMIC_ACQUIRE);
        if (!ent) {
            uint64_t child;
            if (!alloc || dmamap_alloc_table_page(m, &child, NULL))
                return 0;
            uint64_t want = a->table_entry(child, 0);
            if (__atomic_compare_exchange_n(e, &ent, want, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
                __atomic_fetch_add(&table_desc(m, table)->table_used, 1, __ATOMIC_RELAXED);
                c->st->table_pages++;
                ent = want;
            } else {
                dmamap_free_table_page(m, child);   /* another reader installed one first: ent is it */
            }
        }
        if (!a->is_table(ent, l) || !table_ok(m, a->table_pa(ent)))
            return 0;   /* a block, or a corrupt entry: the general path says which */
        table = a->table_pa(ent);
    }
    uint64_t k = va >> (PAGE_SHIFT + 9);
    c->wct = k;
    c->wcp = table;
    c->lc[k % LEAF_CACHE].tag = lc_tag(as, k);
    c->lc[k % LEAF_CACHE].pa = table;
    *table_out = table;
    return 1;
}

static int new_table(dmamap_as *as, uint64_t *pa, struct dmamap_err *err)
{
    int rc = dmamap_alloc_table_page(as->m, pa, err);
    if (rc == 0)
        as->st.table_pages++;
    return rc;
}

void drop_table(dmamap_as *as, uint64_t pa)
{
    dmamap_pt_cache_reset(as);
    if (!table_ok(as->m, pa))
        return;   /* already freed: reached twice through a corrupt entry */
    dmamap_free_table_page(as->m, pa);
    as->st.table_pages--;
}

/* Replace the block entry *e at level (> 0) by a table of next-level entries
 * mapping the same memory with the same attributes. */
int split_block(dmamap_as *as, uint64_t *e, int level, struct dmamap_err *err)
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
 * the table page holding the slot, and *fresh (when given) says whether this
 * call created it: a new table page is all zeros (the allocator's contract).
 * Fails with EBUSY if a block above `level` already covers va. */
static int descend(dmamap_as *as, uint64_t va, int level, uint64_t **slot, uint64_t *table_out,
                   int *fresh, struct dmamap_err *err)
{
    const struct dmamap_arch *a = as->m->arch;
    uint64_t table;
    int made = 0;
    for (int l = wc_find(as, va, level, &table); l > level; l--) {
        uint64_t *e = &dmamap_table_ptr(as->m, table)[pt_index(va, l)];
        if (*e == 0) {
            uint64_t child;
            int rc = new_table(as, &child, err);
            if (rc)
                return rc;
            *e = a->table_entry(child, as->kernel);
            table_desc(as->m, table)->table_used++;
            made = l - 1 == level;
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
    if (fresh)
        *fresh = made;
    return 0;
}

/* Take the references that n normal 4 KiB PTEs of RAM pages from pa hold
 * (the caller holds the pages: checked by page_get or just allocated). */
static void ref_pages(dmamap_as *as, uint64_t pa, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        struct page_desc *p = dmamap_page(as->m, (pa >> PAGE_SHIFT) + i);
        if (p) {
            page_hold_add(as->m, p, PAGE_REF1 | PAGE_MAP1);
        }
    }
}

/* slot[i] = e + i * step for i < n, two entries per vector store where the
 * run allows (GCC vector extensions: SSE2 on x86-64, NEON on AArch64). */
static void store_run(uint64_t *slot, uint64_t n, uint64_t e, uint64_t step)
{
    typedef uint64_t v2 __attribute__((vector_size(16), aligned(8), may_alias));
    uint64_t i = 0;
    if (n >= 8) {
        v2 a = {e, e + step}, b = {e + 2 * step, e + 3 * step};
        v2 inc = {4 * step, 4 * step};
        for (; i + 4 <= n; i += 4) {
            *(v2 *)&slot[i] = a;
            *(v2 *)&slot[i + 2] = b;
            a += inc;
            b += inc;
        }
    }
    for (; i < n; i++)
        slot[i] = e + i * step;
}

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
        int fresh;
        int rc = descend(as, va, level, &slot, &table, &fresh, err);
        while (rc == 0 && level > 0 && *slot != 0)   /* a table lives there: go smaller */
            rc = descend(as, va, --level, &slot, &table, &fresh, err);
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
        uint64_t estep = (step >> PAGE_SHIFT) << as->pfn_shift;   /* the entry's output address per step */
        uint64_t e = a->leaf(pa, prot, level);
        /* A table this fill created is empty; any other is checked first, in a
         * branch-free pass, rather than in one loop with an early exit. */
        uint64_t any = 0, ok = n;
        if (!fresh)
            for (uint64_t i = 0; i < n; i++)
                any |= slot[i];
        if (any)
            for (ok = 0; !slot[ok]; ok++)
                ;
        store_run(slot, ok, e, estep);
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
static int pt_insert(dmamap_as *as, uint64_t va, uint64_t pfn, uint64_t prot, int special,
                     struct dmamap_err *err)
{
    const struct dmamap_arch *a = as->m->arch;
    uint64_t *slot, table;
    int rc = descend(as, va, 0, &slot, &table, NULL, err);
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
    *slot = as->lf_base | (pfn << as->pfn_shift);
    table_desc(as->m, table)->table_used++;
    as->st.ptes_written++;
    return 0;
}

int dmamap_pt_insert(dmamap_as *as, uint64_t va, uint64_t pfn, uint64_t prot, int special,
                     struct dmamap_err *err)
{
    int rc = pt_insert(as, va, pfn, prot, special, err);
    dmamap_pt_kernel_sync(as);
    return rc;
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
    dmamap_pt_kernel_sync(as);
    return rc;
}

/* For batched fault-path inserts (fault-around): the level-0 slot of va with
 * the tables on the way created (NULL and err on failure, e.g. EBUSY under a
 * block), the 4 KiB leaf encoding of pfn 0 with prot, and the accounting of
 * entries the caller wrote into the leaf table. */
static uint64_t *pt_slot(dmamap_as *as, uint64_t va, uint64_t *table_pa, struct dmamap_err *err)
{
    uint64_t *slot;
    int rc = descend(as, va, 0, &slot, table_pa, NULL, err);
    if (rc && rc != DMAMAP_EBUSY)
        dmamap_pt_clear(as, va & PAGE_MASK, 1);   /* free the fresh, empty tables on the way */
    return rc ? NULL : slot;
}

uint64_t *dmamap_pt_slot(dmamap_as *as, uint64_t va, uint64_t *table_pa, struct dmamap_err *err)
{
    uint64_t *slot = pt_slot(as, va, table_pa, err);
    dmamap_pt_kernel_sync(as);
    return slot;
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
    uint64_t table;
    if (leaf_cached(as, va, &table)) {   /* the common case: a cached leaf table */
        wc_set(as, 0, va, table);
        uint64_t *e = &dmamap_ram_table(as->m, table)[pt_index(va, 0)];
        *entry_out = e;
        *level_out = 0;
        return *e != 0;
    }
    int l = wc_find_up(as, va, 1, &table);
    return walk_from(as, va, l, table, entry_out, level_out, 1);
}

/* For prefetching: the slot of va's entry in the lowest table the walk cache
 * and the tables reach, changing nothing (no cache fill, no counter).  With
 * load_leaf 0 the level-0 entry itself is not read, so that its line can be
 * prefetched first.  NULL when the walk meets a corrupt entry. */
const uint64_t *dmamap_pt_peek(dmamap_as *as, uint64_t va, int load_leaf, int *level_out)
{
    const struct dmamap_arch *a = as->m->arch;
    uint64_t table;
    int l = leaf_cached(as, va, &table) ? 0 : wc_find_up(as, va, 1, &table);
    for (;; l--) {
        const uint64_t *e = &dmamap_ram_table(as->m, table)[pt_index(va, l)];
        uint64_t x;
        if (l == 0 && !load_leaf) {
            *level_out = 0;
            return e;
        }
        x = *e;
        if (l == 0 || !x || !a->is_table(x, l)) {
            *level_out = l;
            return e;
        }
        table = a->table_pa(x);
        if (!table_ok(as->m, table))
            return NULL;
    }
}

/* A walk of the tables as they are in memory now, from the root, touching no
 * cache: for translate() and count_present(), which show the memory's truth. */
int dmamap_pt_walk_mem(dmamap_as *as, uint64_t va, uint64_t **entry_out, int *level_out)
{
    return walk_from(as, va, as->m->arch->levels - 1, as->root, entry_out, level_out, 0);
}
