/* Memory-type tracking (x86 arch/x86/mm/pat/memtype.c; ARM mismatched
 * attributes): reservations, conflicts by the ISA's rule, attribute reports, the
 * reservations a VMA holds until unmap, and the fault path's cached check. */
#include <stdlib.h>
#include "internal.h"

static int memtype_compatible(dmamap_machine *m, int a, int b)
{
    return m->arch->memtype_compatible(m->arch, a, b);
}

/* Whether [pa, pa+size) conflicts with a reservation for `cache`, without
 * reporting or failing.  Caller holds m->lock. */
static struct memtype_entry *first_conflict(dmamap_machine *m, uint64_t pa, uint64_t size, int cache);

int dmamap_memtype_conflict(dmamap_machine *m, uint64_t pa, uint64_t size, int cache)
{
    return first_conflict(m, pa, size, cache) != NULL;
}


static void record_report(dmamap_machine *m, uint64_t pa, uint64_t size, int existing, int requested)
{
    struct dmamap_memtype_report *r = &m->reports[m->nreports % MAX_MEMTYPE_REPORTS];
    *r = (struct dmamap_memtype_report){pa, pa + size, existing, requested};
    m->nreports++;
}

/* The first reservation overlapping [pa, pa+size) that `cache` conflicts with. */
static struct memtype_entry *first_conflict(dmamap_machine *m, uint64_t pa, uint64_t size, int cache)
{
    for (int i = 0; i < m->nmemtypes; i++) {
        struct memtype_entry *e = &m->memtypes[i];
        if (pa < e->end && e->start < pa + size && !memtype_compatible(m, e->cache, cache))
            return e;
    }
    return NULL;
}

int dmamap_memtype_check(dmamap_machine *m, uint64_t pa, uint64_t size, int cache, struct dmamap_err *err)
{
    struct memtype_entry *e = first_conflict(m, pa, size, cache);
    if (!e)
        return 0;
    if (m->memtype_policy == DMAMAP_MEMTYPE_REPORT) {
        record_report(m, pa, size, e->cache, cache);
        return 0;
    }
    if (err)
        err->aux = (uint64_t)e->cache;
    return dmamap_fail(err, DMAMAP_EMEMTYPE, pa, "conflicting memory types: [%#llx, %#llx) requested "
                       "%s but [%#llx, %#llx) is %s", (unsigned long long)pa,
                       (unsigned long long)(pa + size), m->arch->cache_names[cache],
                       (unsigned long long)e->start, (unsigned long long)e->end,
                       m->arch->cache_names[e->cache]);
}

/* x86 reserve_pfn_range / memtype_check_conflict with a new_type: a PFN map of
 * non-RAM whose overlapping reservations all have one type takes that type
 * when the ISA allows it (is_new_memtype_allowed).  Returns the cache type to
 * map with.  Caller holds m->lock. */
static int adopt_cache(dmamap_machine *m, uint64_t pa, uint64_t size, int cache)
{
    if (!m->arch->memtype_adopt || dmamap_pfn_is_ram(m, pa >> PAGE_SHIFT) ||
        dmamap_pfn_is_ram(m, (pa + size - 1) >> PAGE_SHIFT))
        return cache;
    int found = -1;
    for (int i = 0; i < m->nmemtypes; i++) {
        struct memtype_entry *e = &m->memtypes[i];
        if (pa < e->end && e->start < pa + size) {
            if (found >= 0 && e->cache != found)
                return cache;   /* two types over the range: a conflict, as memtype_check_conflict */
            found = e->cache;
        }
    }
    if (found < 0 || found == cache || !m->arch->memtype_adopt(m->arch, cache, found))
        return cache;
    return found;
}

/* The one attribute check of every path that puts a PTE in place: the cache
 * type of *prot against the kernel's own reservations of [pa, pa+size) (the
 * coherent allocator's alias, set_memory_uc/wc, MMIO mappings).  A PFN insert
 * may adopt the reserved type (x86 PAT; *prot is updated); a page-descriptor
 * insert (MT_PAGE) of a conflicting type is reported where the ISA does not
 * track pages (x86), else reported or refused by the machine's policy.
 * Without MT_REPORT a conflict only answers nonzero.  Caller holds m->lock. */
int insert_memtype_check(dmamap_machine *m, uint64_t pa, uint64_t size, int flags, uint64_t *prot,
                         struct dmamap_err *err)
{
    int cache = m->arch->prot_cache(m->arch, *prot);
    struct memtype_entry *e = first_conflict(m, pa, size, cache);
    if (!e)
        return 0;
    if (!(flags & MT_PAGE)) {
        int got = adopt_cache(m, pa, size, cache);
        if (got != cache) {
            *prot = m->arch->prot_set_cache(m->arch, *prot, got);
            return 0;
        }
    }
    if (!(flags & MT_REPORT))
        return 1;
    if ((flags & MT_PAGE) && m->arch->page_alias_reported) {
        record_report(m, pa, size, e->cache, cache);
        return 0;
    }
    return dmamap_memtype_check(m, pa, size, cache, err);
}

int dmamap_memtype_reserve(dmamap_machine *m, uint64_t pa, uint64_t size, int cache, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    if (!m || m->closed)
        return dmamap_fail(err, DMAMAP_ECLOSED, pa, "machine is closed");
    if (cache < 0 || cache >= m->arch->ncache)
        return dmamap_fail(err, DMAMAP_EINVAL, pa, "unknown cache type %d", cache);
    if (size == 0 || pa + size < pa)
        return dmamap_fail(err, DMAMAP_EINVAL, pa, "bad memtype range %#llx+%#llx", (unsigned long long)pa,
                           (unsigned long long)size);
    cache = m->arch->prot_cache(m->arch, m->arch->prot_set_cache(m->arch, 0, cache));
    int rc = 0;
    LOCK(&m->lock);
    rc = dmamap_memtype_check(m, pa, size, cache, err);
    if (rc)
        goto out;
    for (int i = 0; i < m->nmemtypes; i++) {
        struct memtype_entry *e = &m->memtypes[i];
        if (e->start == pa && e->end == pa + size && e->cache == cache) {
            e->refs++;
            goto out;
        }
    }
    if (m->nmemtypes == m->capmemtypes) {
        int cap = m->capmemtypes ? m->capmemtypes * 2 : 16;
        struct memtype_entry *n = realloc(m->memtypes, (size_t)cap * sizeof *n);
        if (!n) {
            rc = dmamap_fail(err, DMAMAP_ENOMEM, pa, "host out of memory for memtype tracking");
            goto out;
        }
        m->memtypes = n;
        m->capmemtypes = cap;
    }
    m->memtypes[m->nmemtypes++] = (struct memtype_entry){pa, pa + size, cache, 1};
    m->memtype_gen++;
out:
    UNLOCK(&m->lock);
    return dmamap_m_done(m, rc, err);
}

int dmamap_memtype_free(dmamap_machine *m, uint64_t pa, uint64_t size, int cache, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    if (!m || m->closed)
        return dmamap_fail(err, DMAMAP_ECLOSED, pa, "machine is closed");
    if (cache < 0 || cache >= m->arch->ncache)
        return dmamap_fail(err, DMAMAP_EINVAL, pa, "unknown cache type %d", cache);
    cache = m->arch->prot_cache(m->arch, m->arch->prot_set_cache(m->arch, 0, cache));
    int rc = dmamap_fail(err, DMAMAP_EINVAL, pa, "no memtype reservation [%#llx, %#llx) of that type",
                         (unsigned long long)pa, (unsigned long long)(pa + size));
    LOCK(&m->lock);
    for (int i = 0; i < m->nmemtypes; i++) {
        struct memtype_entry *e = &m->memtypes[i];
        if (e->start == pa && e->end == pa + size && e->cache == cache) {
            m->memtype_gen++;
            if (--e->refs == 0)
                m->memtypes[i] = m->memtypes[--m->nmemtypes];
            dmamap_err_clear(err);
            rc = 0;
            break;
        }
    }
    UNLOCK(&m->lock);
    return dmamap_m_done(m, rc, err);
}

int dmamap_memtype_lookup(dmamap_machine *m, uint64_t pa)
{
    int c = -1;
    if (!m)
        return c;
    LOCK(&m->lock);
    for (int i = 0; i < m->nmemtypes; i++)
        if (pa >= m->memtypes[i].start && pa < m->memtypes[i].end) {
            c = m->memtypes[i].cache;
            break;
        }
    UNLOCK(&m->lock);
    return c;
}

int dmamap_memtype_reports(dmamap_machine *m, struct dmamap_memtype_report *out, int max)
{
    if (!m || !out || max <= 0)
        return 0;
    LOCK(&m->lock);
    uint64_t n = m->nreports < MAX_MEMTYPE_REPORTS ? m->nreports : MAX_MEMTYPE_REPORTS;
    uint64_t first = m->nreports - n;
    int k = 0;
    for (uint64_t i = first; i < m->nreports && k < max; i++)
        out[k++] = m->reports[i % MAX_MEMTYPE_REPORTS];
    UNLOCK(&m->lock);
    return k;
}

/* Check the cache type of [pa, pa+size) against the tracked memtypes and keep a
 * reservation on the VMA until it is unmapped (x86 track_pfn_remap); *prot
 * takes the adopted type when PAT adopts one (reserve_pfn_range). */
int track_pfn(dmamap_as *as, struct vma *v, uint64_t pa, uint64_t size, uint64_t *prot,
                     struct dmamap_err *err)
{
    dmamap_machine *m = as->m;
    LOCK(&m->lock);
    int want = m->arch->prot_cache(m->arch, *prot), cache = adopt_cache(m, pa, size, want);
    UNLOCK(&m->lock);
    if (v->nmemtypes == v->capmemtypes) {
        int cap = v->capmemtypes ? v->capmemtypes * 2 : 4;
        struct memtype_entry *n = realloc(v->memtypes, (size_t)cap * sizeof *n);
        if (!n)
            return dmamap_fail(err, DMAMAP_ENOMEM, pa, "host out of memory for memtype tracking");
        v->memtypes = n;
        v->capmemtypes = cap;
    }
    int rc = dmamap_memtype_reserve(m, pa, size, cache, err);
    if (rc == 0) {
        v->memtypes[v->nmemtypes++] = (struct memtype_entry){pa, pa + size, cache, 1};
        if (cache != want)
            *prot = m->arch->prot_set_cache(m->arch, *prot, cache);
    }
    return rc;
}

void untrack_last(dmamap_as *as, struct vma *v)
{
    struct dmamap_err e;
    struct memtype_entry *t = &v->memtypes[--v->nmemtypes];
    dmamap_memtype_free(as->m, t->start, t->end - t->start, t->cache, &e);
}

void untrack(dmamap_as *as, struct vma *v)
{
    struct dmamap_err e;
    for (int i = 0; i < v->nmemtypes; i++)
        dmamap_memtype_free(as->m, v->memtypes[i].start, v->memtypes[i].end - v->memtypes[i].start,
                            v->memtypes[i].cache, &e);
    v->nmemtypes = 0;
}

/* The memtype check of a fault-path insert (insert_memtype_check with a
 * cache).  The VMA remembers the chunk it last found free of conflicts (for
 * its cache type, at the reservations' generation), so a run of faults in one
 * chunk takes no machine lock.  idx is the chunk-list page of pa, or ~0 when pa
 * is not from the chunk list.  *prot starts as the VMA's and may take an
 * adopted type. */
int fault_memtype_check(dmamap_as *as, struct vma *v, uint64_t pa, uint64_t size, uint64_t idx,
                        int flags, uint64_t *prot, struct dmamap_err *err)
{
    dmamap_machine *m = as->m;
    uint64_t gen = atomic_load_explicit(&m->memtype_gen, memory_order_acquire);
    *prot = v->prot;
    if (v->mt_gen == gen + 1 && v->mt_prot == v->prot && pa >= v->mt_lo && pa + size <= v->mt_hi)
        return 0;
    int cache = m->arch->prot_cache(m->arch, v->prot);
    uint64_t lo = pa, hi = pa + size;
    int c = idx == ~0ULL ? -1 : chunk_find(v, idx);
    if (c >= 0 && pa >= v->chunks[c].pfn << PAGE_SHIFT &&
        pa + size <= (v->chunks[c].pfn + v->chunks[c].npages) << PAGE_SHIFT) {
        lo = v->chunks[c].pfn << PAGE_SHIFT;
        hi = (v->chunks[c].pfn + v->chunks[c].npages) << PAGE_SHIFT;
    }
    int rc = 0;
    LOCK(&m->lock);
    if (!dmamap_memtype_conflict(m, lo, hi - lo, cache)) {
        v->mt_lo = lo;
        v->mt_hi = hi;
        v->mt_prot = v->prot;
        v->mt_gen = m->memtype_gen + 1;
    } else {
        rc = insert_memtype_check(m, pa, size, flags, prot, err);
    }
    UNLOCK(&m->lock);
    return rc;
}
