/* Page descriptors (RAM only: pfn_valid) and the page allocator, including the
 * page-table pages every address space draws from. */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "internal.h"

int dmamap_pfn_is_ram(dmamap_machine *m, uint64_t pfn)
{
    return m->pages && pfn >= m->ram_base_pfn && pfn - m->ram_base_pfn < m->ram_pages;
}

int dmamap_pfn_valid(dmamap_machine *m, uint64_t pfn)
{
    return m && dmamap_pfn_is_ram(m, pfn);
}

struct page_desc *dmamap_page(dmamap_machine *m, uint64_t pfn)
{
    return dmamap_pfn_is_ram(m, pfn) ? &m->pages[pfn - m->ram_base_pfn] : NULL;
}

int dmamap_page_info(dmamap_machine *m, uint64_t pfn, struct dmamap_page_info *out, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    if (!m || m->closed)
        return dmamap_fail(err, DMAMAP_ECLOSED, 0, "machine is closed");
    if (!out)
        return dmamap_fail(err, DMAMAP_EINVAL, 0, "NULL output");
    struct page_desc *p = dmamap_page(m, pfn);
    if (!p)
        return dmamap_fail(err, DMAMAP_EBADPAGE, pfn << PAGE_SHIFT, "pfn %#llx has no page descriptor "
                           "(not RAM: pfn_valid() is false)", (unsigned long long)pfn);
    LOCK(&m->lock);
    out->flags = page_flags(p);
    uint64_t c = page_counts(p);
    out->refcount = counts_refs(c);
    out->mapcount = counts_maps(c);
    out->table_used = p->table_used;
    UNLOCK(&m->lock);
    return 0;
}

/* A free page's descriptor made allocated (machine lock held): the counts
 * last, so a page_get_unless_zero that sees the reference sees the flags. */
static void desc_alloc(struct page_desc *p, uint32_t flags)
{
    p->table_used = 0;
    __atomic_store_n(&p->flags, flags, __ATOMIC_RELAXED);
    __atomic_store_n(&p->counts, PAGE_REF1, __ATOMIC_RELEASE);
}

/* An allocated descriptor made free (machine lock held; its count is 0 already). */
static void desc_free(struct page_desc *p)
{
    __atomic_store_n(&p->counts, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&p->flags, 0, __ATOMIC_RELAXED);
    p->table_used = 0;
}

static inline int bit_test(const uint64_t *bm, uint64_t i)
{
    return (int)((bm[i >> 6] >> (i & 63)) & 1);
}

static void bits_set(uint64_t *bm, uint64_t i, uint64_t n, int v)
{
    for (uint64_t k = i; k < i + n;) {
        if ((k & 63) == 0 && k + 64 <= i + n) {
            bm[k >> 6] = v ? ~0ULL : 0;
            k += 64;
            continue;
        }
        if (v)
            bm[k >> 6] |= 1ULL << (k & 63);
        else
            bm[k >> 6] &= ~(1ULL << (k & 63));
        k++;
    }
}

/* First free bit at or after i whose run up to n is free; returns the index of
 * the first used bit in [i, i+n), or i+n when the run is free. */
static uint64_t first_used(const uint64_t *bm, uint64_t i, uint64_t n)
{
    uint64_t end = i + n;
    while (i < end) {
        if ((i & 63) == 0 && i + 64 <= end) {
            uint64_t w = bm[i >> 6];
            if (!w) {
                i += 64;
                continue;
            }
            return i + (uint64_t)__builtin_ctzll(w);
        }
        if (bit_test(bm, i))
            return i;
        i++;
    }
    return end;
}

static int find_run(dmamap_machine *m, uint64_t npages, uint64_t align, uint64_t start, uint64_t limit,
                    uint64_t *out)
{
    uint64_t base = m->ram_base_pfn;
    uint64_t i = start;
    while (1) {
        uint64_t abs = base + i;
        uint64_t aligned = (abs + align - 1) / align * align;
        i = aligned - base;
        if (i + npages > limit || i + npages < i)
            return 0;
        uint64_t u = first_used(m->bitmap, i, npages);
        if (u == i + npages) {
            *out = i;
            return 1;
        }
        /* skip past the used run */
        i = u + 1;
        while (i < limit && bit_test(m->bitmap, i)) {
            if ((i & 63) == 0 && m->bitmap[i >> 6] == ~0ULL)
                i += 64;
            else
                i++;
        }
    }
}

static int alloc_below(dmamap_machine *m, uint64_t npages, uint64_t align, uint32_t flags, uint64_t limit,
                       uint64_t *pfn_out, struct dmamap_err *err);

static int alloc_locked(dmamap_machine *m, uint64_t npages, uint64_t align, uint32_t flags,
                        uint64_t *pfn_out, struct dmamap_err *err)
{
    return alloc_below(m, npages, align, flags, m->ram_pages, pfn_out, err);
}

/* As alloc_locked, from RAM pages [0, limit) only (below a DMA mask). */
static int alloc_below(dmamap_machine *m, uint64_t npages, uint64_t align, uint32_t flags, uint64_t limit,
                       uint64_t *pfn_out, struct dmamap_err *err)
{
    uint64_t idx;
    if (limit > m->ram_pages)
        limit = m->ram_pages;
    if (!find_run(m, npages, align, m->alloc_hint, limit, &idx) &&
        !find_run(m, npages, align, 0, limit, &idx))
        return dmamap_fail(err, DMAMAP_ENOMEM, npages << PAGE_SHIFT, "out of emulated RAM: no free run "
                           "of %llu pages (%llu of %llu pages in use)", (unsigned long long)npages,
                           (unsigned long long)m->pages_used, (unsigned long long)m->ram_pages);
    bits_set(m->bitmap, idx, npages, 1);
    for (uint64_t k = 0; k < npages; k++) {
        desc_alloc(&m->pages[idx + k], flags);
    }
    m->pages_used += npages;
    m->alloc_hint = idx + npages < m->ram_pages ? idx + npages : 0;
    *pfn_out = m->ram_base_pfn + idx;
    return 0;
}

int dmamap_alloc_pages(dmamap_machine *m, uint64_t npages, uint64_t align_pages, uint32_t flags,
                       uint64_t *pfn_out, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    if (!m || m->closed)
        return dmamap_fail(err, DMAMAP_ECLOSED, 0, "machine is closed");
    if (!pfn_out)
        return dmamap_fail(err, DMAMAP_EINVAL, 0, "NULL pfn_out");
    if (!m->pages)
        return dmamap_fail(err, DMAMAP_ENOMEM, 0, "machine has no RAM");
    if (npages == 0 || npages > m->ram_pages)
        return dmamap_fail(err, npages ? DMAMAP_ENOMEM : DMAMAP_EINVAL, npages << PAGE_SHIFT,
                           "cannot allocate %llu pages (RAM has %llu)", (unsigned long long)npages,
                           (unsigned long long)m->ram_pages);
    if (align_pages == 0)
        align_pages = 1;
    if (align_pages & (align_pages - 1))
        return dmamap_fail(err, DMAMAP_EINVAL, align_pages, "alignment %llu pages is not a power of two",
                           (unsigned long long)align_pages);
    if (flags & ~(uint32_t)(DMAMAP_PG_RESERVED | DMAMAP_PG_ANON | DMAMAP_PG_DMA))
        return dmamap_fail(err, DMAMAP_EINVAL, 0, "page flags %#x are not allocatable", flags);
    LOCK(&m->lock);
    int rc = alloc_locked(m, npages, align_pages, flags, pfn_out, err);
    UNLOCK(&m->lock);
    return dmamap_m_done(m, rc, err);
}

int dmamap_alloc_pages_below(dmamap_machine *m, uint64_t npages, uint64_t align_pages, uint32_t flags,
                             uint64_t max_pa, uint64_t *pfn_out, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    if (!m || m->closed)
        return dmamap_fail(err, DMAMAP_ECLOSED, 0, "machine is closed");
    if (!pfn_out || npages == 0 || (align_pages & (align_pages - 1)))
        return dmamap_fail(err, DMAMAP_EINVAL, 0, "bad allocation request");
    if (flags & ~(uint32_t)(DMAMAP_PG_RESERVED | DMAMAP_PG_ANON | DMAMAP_PG_DMA))
        return dmamap_fail(err, DMAMAP_EINVAL, 0, "page flags %#x are not allocatable", flags);
    if (!m->pages)
        return dmamap_fail(err, DMAMAP_ENOMEM, 0, "machine has no RAM");
    uint64_t top = (max_pa >> PAGE_SHIFT) + 1;   /* first pfn above max_pa */
    if (max_pa == ~0ULL)
        top = ~0ULL >> PAGE_SHIFT;
    if (top <= m->ram_base_pfn)
        return dmamap_fail(err, DMAMAP_ENOMEM, max_pa, "no RAM at or below %#llx", (unsigned long long)max_pa);
    LOCK(&m->lock);
    int rc = alloc_below(m, npages, align_pages ? align_pages : 1, flags, top - m->ram_base_pfn, pfn_out, err);
    UNLOCK(&m->lock);
    return dmamap_m_done(m, rc, err);
}

static void scrub(dmamap_machine *m, uint64_t pfn, uint64_t npages)
{
    uint8_t *host = dmamap_host_ptr(m, pfn << PAGE_SHIFT, npages << PAGE_SHIFT, NULL);
    if (!host)
        return;
    if (m->cache)
        dmamap_cache_maint(m, pfn << PAGE_SHIFT, npages << PAGE_SHIFT, 0, 1);
    /* Give large frees back to the host; small ones are cheaper to clear. */
    if (npages < 16 || madvise(host, npages << PAGE_SHIFT, MADV_DONTNEED) != 0)
        memset(host, 0, npages << PAGE_SHIFT);
}

/* Each of p[0..n)'s owner reference (count 1, map count 0) dropped to 0, a
 * reference-lock group at a time: how many before the first still in use
 * (*busy: its counts), which stops it. */
static uint64_t unref_owned(dmamap_machine *m, struct page_desc *p, uint64_t n, uint64_t *busy)
{
    uint64_t idx = (uint64_t)(p - m->pages);
    for (uint64_t j = 0, k; j < n; j += k) {
        k = pref_span(idx + j, n - j);
        uint32_t *l = pref_lock_of(m, &p[j]);
        pref_lock(l);
        for (uint64_t i = j; i < j + k; i++) {
            uint64_t c = __atomic_load_n(&p[i].counts, __ATOMIC_ACQUIRE);
            if (c != PAGE_REF1) {
                pref_unlock(l);
                *busy = c;
                return i;
            }
            __atomic_store_n(&p[i].counts, 0, __ATOMIC_RELAXED);
        }
        pref_unlock(l);
    }
    return n;
}

int dmamap_free_pages(dmamap_machine *m, uint64_t pfn, uint64_t npages, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    if (!m || m->closed)
        return dmamap_fail(err, DMAMAP_ECLOSED, 0, "machine is closed");
    if (npages == 0 || !dmamap_pfn_is_ram(m, pfn) || pfn + npages < pfn ||
        !dmamap_pfn_is_ram(m, pfn + npages - 1))
        return dmamap_fail(err, DMAMAP_EINVAL, pfn << PAGE_SHIFT, "free of pfn range %#llx+%llu outside RAM",
                           (unsigned long long)pfn, (unsigned long long)npages);
    int rc = 0;
    LOCK(&m->lock);
    uint64_t idx = pfn - m->ram_base_pfn, k;
    for (k = 0; k < npages; k++) {
        struct page_desc *p = &m->pages[idx + k];
        if (!bit_test(m->bitmap, idx + k) || page_refs(p) <= 0) {
            rc = dmamap_fail(err, DMAMAP_EINVAL, (pfn + k) << PAGE_SHIFT,
                             "double free: pfn %#llx is not allocated", (unsigned long long)(pfn + k));
            goto out;
        }
        if (page_flags(p) & DMAMAP_PG_TABLE) {   /* only its address space frees a page table */
            rc = dmamap_fail(err, DMAMAP_EBADPAGE, (pfn + k) << PAGE_SHIFT,
                             "pfn %#llx is a page-table page in use", (unsigned long long)(pfn + k));
            goto out;
        }
    }
    /* The owner's lone reference (1, map count 0) goes to 0 as one step, so
     * no reference can be taken (page_get_unless_zero) once the page is found
     * unused; a page still referenced or mapped is refused and the ones
     * before it restored. */
    uint64_t c = 0;
    k = unref_owned(m, &m->pages[idx], npages, &c);
    if (k < npages) {
        for (uint64_t j = 0; j < k; j++)   /* (at 0 nobody else writes them) */
            __atomic_store_n(&m->pages[idx + j].counts, PAGE_REF1, __ATOMIC_RELEASE);
        rc = dmamap_fail(err, DMAMAP_EBUSY, (pfn + k) << PAGE_SHIFT,
                         "pfn %#llx is still mapped (mapcount %d, refcount %d)",
                         (unsigned long long)(pfn + k), counts_maps(c), counts_refs(c));
        goto out;
    }
    for (k = 0; k < npages; k++)
        desc_free(&m->pages[idx + k]);
    bits_set(m->bitmap, idx, npages, 0);
    m->pages_used -= npages;
    scrub(m, pfn, npages);
out:
    UNLOCK(&m->lock);
    return dmamap_m_done(m, rc, err);
}

void page_free_last(dmamap_machine *m, struct page_desc *p)
{
    /* nobody can take a reference any more (page_get_unless_zero) */
    uint64_t idx = (uint64_t)(p - m->pages);
    LOCK(&m->lock);
    if (!m->closed && bit_test(m->bitmap, idx)) {   /* a closed machine frees nothing (as free_pages) */
        desc_free(p);
        bits_set(m->bitmap, idx, 1, 0);
        m->pages_used--;
        scrub(m, m->ram_base_pfn + idx, 1);
    }
    UNLOCK(&m->lock);
}

/* get_page / put_page's prologue: a live machine and a RAM pfn. */
static struct page_desc *page_ref_enter(dmamap_machine *m, uint64_t pfn, struct dmamap_err *err, int *rc)
{
    dmamap_err_clear(err);
    if (!m || m->closed) {
        *rc = dmamap_fail(err, DMAMAP_ECLOSED, 0, "machine is closed");
        return NULL;
    }
    struct page_desc *p = dmamap_page(m, pfn);
    if (!p) {
        *rc = dmamap_fail(err, DMAMAP_EBADPAGE, pfn << PAGE_SHIFT, "pfn %#llx has no page descriptor",
                          (unsigned long long)pfn);
        return NULL;
    }
    *rc = 0;
    return p;
}

int dmamap_get_page(dmamap_machine *m, uint64_t pfn, struct dmamap_err *err)
{
    int rc;
    struct page_desc *p = page_ref_enter(m, pfn, err, &rc);
    if (!p)
        return rc;
    if (!page_get_unless_zero(m, p, PAGE_REF1))
        rc = dmamap_fail(err, DMAMAP_EBADPAGE, pfn << PAGE_SHIFT, "get_page on free pfn %#llx",
                         (unsigned long long)pfn);
    else if (page_flags(p) & DMAMAP_PG_TABLE) {
        page_put(m, p);
        rc = dmamap_fail(err, DMAMAP_EBADPAGE, pfn << PAGE_SHIFT, "get_page on page-table page %#llx",
                         (unsigned long long)pfn);
    }
    return dmamap_m_done(m, rc, err);
}

int dmamap_put_page(dmamap_machine *m, uint64_t pfn, struct dmamap_err *err)
{
    int rc;
    struct page_desc *p = page_ref_enter(m, pfn, err, &rc);
    if (!p)
        return rc;
    uint32_t *l = pref_lock_of(m, p);
    pref_lock(l);
    if (page_refs(p) > 1)
        counts_add_locked(p, -PAGE_REF1);
    else
        rc = dmamap_fail(err, DMAMAP_EBADPAGE, pfn << PAGE_SHIFT, "put_page would drop the last "
                         "reference of pfn %#llx; free it instead", (unsigned long long)pfn);
    pref_unlock(l);
    return dmamap_m_done(m, rc, err);
}

int dmamap_alloc_table_page(dmamap_machine *m, uint64_t *pa_out, struct dmamap_err *err)
{
    uint64_t pfn;
    int rc = 1;
    LOCK(&m->lock);
    /* Reuse a recently freed table page: it is zero and already backed by host
     * memory, as a kernel's hot per-CPU page lists.  Entries whose page was
     * taken by the general allocator meanwhile are skipped. */
    while (rc && m->ntable_cache) {
        uint64_t idx = m->table_cache[--m->ntable_cache] - m->ram_base_pfn;
        if (bit_test(m->bitmap, idx))
            continue;
        bits_set(m->bitmap, idx, 1, 1);
        desc_alloc(&m->pages[idx], DMAMAP_PG_TABLE | DMAMAP_PG_RESERVED);
        m->pages_used++;
        pfn = m->ram_base_pfn + idx;
        rc = 0;
    }
    if (rc)
        rc = m->pages ? alloc_locked(m, 1, 1, DMAMAP_PG_TABLE | DMAMAP_PG_RESERVED, &pfn, err)
                      : dmamap_fail(err, DMAMAP_ENOMEM, 0, "machine has no RAM for page tables");
    if (rc == 0)
        m->table_pages++;
    UNLOCK(&m->lock);
    if (rc == 0)
        *pa_out = pfn << PAGE_SHIFT;
    return rc;
}

void dmamap_free_table_page(dmamap_machine *m, uint64_t pa)
{
    uint64_t pfn = pa >> PAGE_SHIFT;
    LOCK(&m->lock);
    uint64_t idx = pfn - m->ram_base_pfn;
    if (idx >= m->ram_pages || !(page_flags(&m->pages[idx]) & DMAMAP_PG_TABLE)) {
        UNLOCK(&m->lock);   /* not a table page (any more): never free it twice */
        return;
    }
    desc_free(&m->pages[idx]);
    bits_set(m->bitmap, idx, 1, 0);
    m->pages_used--;
    m->table_pages--;
    memset(dmamap_host_ptr(m, pa, PAGE_SIZE, NULL), 0, PAGE_SIZE);
    if (m->ntable_cache == m->captable_cache && m->captable_cache < (1 << 20)) {
        int cap = m->captable_cache ? m->captable_cache * 2 : 1024;
        uint64_t *n = realloc(m->table_cache, (size_t)cap * sizeof *n);
        if (n) {
            m->table_cache = n;
            m->captable_cache = cap;
        }
    }
    if (m->ntable_cache < m->captable_cache)
        m->table_cache[m->ntable_cache++] = pfn;
    UNLOCK(&m->lock);
}
