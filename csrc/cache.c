/* Write-back, write-allocate, set-associative data cache with 64-byte lines,
 * sitting between CPU accesses through cacheable mappings and memory on
 * non-coherent machines.  Device DMA bypasses it (no snooping).  Physically
 * indexed, or (cache_vipt) virtually indexed and physically tagged: when a way
 * is larger than a page, two virtual aliases of one physical line with
 * different colours live in different sets and can disagree (ARMv6-era cores).
 * Maintenance by physical address reaches every alias. */
#include <string.h>
#include "internal.h"

#define LINE_MASK (~(uint64_t)(CACHE_LINE - 1))

static void writeback(dmamap_machine *m, struct cache_line *l)
{
    uint64_t pa = l->tag & LINE_MASK;
    uint8_t *host = dmamap_host_ptr(m, pa, CACHE_LINE, NULL);
    if (host)
        memcpy(host, l->data, CACHE_LINE);
    l->dirty = 0;
    m->cache_wb++;
}

/* The line holding pa (reached at va), filled from memory on a miss. host points at pa. */
static struct cache_line *lookup(dmamap_machine *m, uint64_t va, uint64_t pa, const uint8_t *host)
{
    uint64_t line = pa & LINE_MASK;
    uint64_t index = m->cache_vipt ? va : pa;
    int set = (int)((index / CACHE_LINE) & (uint64_t)(m->cache_sets - 1));
    struct cache_line *ways = &m->cache[(size_t)set * m->cache_ways];
    struct cache_line *victim = NULL;
    for (int w = 0; w < m->cache_ways; w++) {
        struct cache_line *l = &ways[w];
        if (l->tag == (line | 1)) {
            l->lru = ++m->cache_clock;
            m->cache_hits++;
            return l;
        }
        if (!victim || ((victim->tag & 1) && (!(l->tag & 1) || l->lru < victim->lru)))
            victim = l;   /* an invalid way, else the least recently used */
    }
    if ((victim->tag & 1) && victim->dirty)
        writeback(m, victim);
    memcpy(victim->data, host - (pa - line), CACHE_LINE);
    victim->tag = line | 1;
    victim->dirty = 0;
    victim->lru = ++m->cache_clock;
    m->cache_misses++;
    return victim;
}

void dmamap_cache_read(dmamap_machine *m, uint64_t va, uint64_t pa, uint8_t *host, void *buf, uint64_t n)
{
    uint8_t *b = buf;
    LOCK(&m->cache_lock);
    while (n) {
        uint64_t off = pa & (CACHE_LINE - 1);
        uint64_t chunk = CACHE_LINE - off < n ? CACHE_LINE - off : n;
        struct cache_line *l = lookup(m, va, pa, host);
        memcpy(b, l->data + off, chunk);
        b += chunk;
        host += chunk;
        pa += chunk;
        va += chunk;
        n -= chunk;
    }
    UNLOCK(&m->cache_lock);
}

void dmamap_cache_write(dmamap_machine *m, uint64_t va, uint64_t pa, uint8_t *host, const void *buf, uint64_t n)
{
    const uint8_t *b = buf;
    LOCK(&m->cache_lock);
    while (n) {
        uint64_t off = pa & (CACHE_LINE - 1);
        uint64_t chunk = CACHE_LINE - off < n ? CACHE_LINE - off : n;
        struct cache_line *l = lookup(m, va, pa, host);
        memcpy(l->data + off, b, chunk);
        l->dirty = 1;
        b += chunk;
        host += chunk;
        pa += chunk;
        va += chunk;
        n -= chunk;
    }
    UNLOCK(&m->cache_lock);
}

void dmamap_cache_maint(dmamap_machine *m, uint64_t pa, uint64_t size, int clean, int inval)
{
    if (!m->cache || size == 0)
        return;
    uint64_t end = pa + size < pa ? ~0ULL : pa + size;
    m->cache_maint_lines += (end - (pa & LINE_MASK) + CACHE_LINE - 1) / CACHE_LINE;
    LOCK(&m->cache_lock);
    size_t nlines = (size_t)m->cache_sets * m->cache_ways;
    for (size_t i = 0; i < nlines; i++) {
        struct cache_line *l = &m->cache[i];
        uint64_t lpa = l->tag & LINE_MASK;
        if (!(l->tag & 1) || lpa + CACHE_LINE <= pa || lpa >= end)
            continue;
        if (clean && l->dirty)
            writeback(m, l);
        if (inval) {
            l->tag = 0;
            l->dirty = 0;
        }
    }
    UNLOCK(&m->cache_lock);
}

static int maint(dmamap_machine *m, uint64_t pa, uint64_t size, int clean, int inval, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    if (!m || m->closed)
        return dmamap_fail(err, DMAMAP_ECLOSED, pa, "machine is closed");
    if (pa + size < pa)
        return dmamap_fail(err, DMAMAP_EINVAL, pa, "cache maintenance range %#llx+%#llx wraps",
                           (unsigned long long)pa, (unsigned long long)size);
    dmamap_cache_maint(m, pa, size, clean, inval);
    return 0;
}

int dmamap_flush_dcache_range(dmamap_machine *m, uint64_t pa, uint64_t size, struct dmamap_err *err)
{
    return maint(m, pa, size, 1, 1, err);
}

int dmamap_invalidate_dcache_range(dmamap_machine *m, uint64_t pa, uint64_t size, struct dmamap_err *err)
{
    return maint(m, pa, size, 0, 1, err);
}

int dmamap_clean_dcache_range(dmamap_machine *m, uint64_t pa, uint64_t size, struct dmamap_err *err)
{
    return maint(m, pa, size, 1, 0, err);
}

int dmamap_machine_set_vipt(dmamap_machine *m, int vipt, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    if (!m || m->closed)
        return dmamap_fail(err, DMAMAP_ECLOSED, 0, "machine is closed");
    if (!m->cache)
        return dmamap_fail(err, DMAMAP_EINVAL, 0, "a coherent machine has no cache model to index virtually");
    LOCK(&m->cache_lock);
    /* the lines already cached were placed by physical index: write them back and start afresh */
    size_t nlines = (size_t)m->cache_sets * m->cache_ways;
    for (size_t i = 0; i < nlines; i++) {
        if ((m->cache[i].tag & 1) && m->cache[i].dirty)
            writeback(m, &m->cache[i]);
        m->cache[i].tag = 0;
    }
    m->cache_vipt = !!vipt;
    UNLOCK(&m->cache_lock);
    return 0;
}
