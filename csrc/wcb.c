/* The write-combining buffer: stores through WC (x86 PAT) or Normal-NC (arm)
 * mappings of memory gather in a few 64-byte lines, merging stores to one line,
 * and reach memory only at a barrier (wmb/mb/dma_wmb), after an uncached access
 * (which itself is not ordered after them), or when a line is evicted for a new
 * one.  A device DMA in between sees memory without them. */
#include <string.h>
#include "internal.h"

#define LINE_MASK (~(uint64_t)(CACHE_LINE - 1))

static void flush_entry(dmamap_machine *m, struct wcb_entry *e)
{
    uint8_t *host = dmamap_host_ptr(m, e->line, CACHE_LINE, NULL);
    if (host)
        for (int i = 0; i < CACHE_LINE; i++)
            if (e->mask >> i & 1)
                host[i] = e->data[i];
    e->valid = 0;
    e->mask = 0;
}

static void drain_locked(dmamap_machine *m)
{
    /* oldest first, as the lines were allocated */
    for (;;) {
        struct wcb_entry *old = NULL;
        for (int i = 0; i < m->wcb_n; i++)
            if (m->wcb[i].valid && (!old || m->wcb[i].age < old->age))
                old = &m->wcb[i];
        if (!old)
            return;
        flush_entry(m, old);
    }
}

void dmamap_wcb_store(dmamap_machine *m, uint64_t pa, const void *buf, uint64_t n)
{
    const uint8_t *b = buf;
    LOCK(&m->wcb_lock);
    while (n) {
        uint64_t line = pa & LINE_MASK, off = pa - line;
        uint64_t chunk = CACHE_LINE - off < n ? CACHE_LINE - off : n;
        struct wcb_entry *e = NULL, *victim = NULL;
        for (int i = 0; i < m->wcb_n; i++) {
            struct wcb_entry *c = &m->wcb[i];
            if (c->valid && c->line == line) {
                e = c;
                break;
            }
            if (!victim || (victim->valid && (!c->valid || c->age < victim->age)))
                victim = c;
        }
        if (e) {
            m->wcb_merges++;
        } else {
            if (victim->valid) {
                flush_entry(m, victim);
                m->wcb_evictions++;
            }
            e = victim;
            e->valid = 1;
            e->line = line;
            e->mask = 0;
            e->age = ++m->wcb_clock;
        }
        memcpy(e->data + off, b, chunk);
        e->mask |= (chunk == 64 ? ~0ULL : ((1ULL << chunk) - 1)) << off;
        b += chunk;
        pa += chunk;
        n -= chunk;
    }
    UNLOCK(&m->wcb_lock);
}

void dmamap_wcb_drain_all(dmamap_machine *m)
{
    if (!m->wcb_n)
        return;
    LOCK(&m->wcb_lock);
    drain_locked(m);
    m->wcb_drains++;
    UNLOCK(&m->wcb_lock);
}

int dmamap_wcb_drain(dmamap_machine *m, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    if (!m || m->closed)
        return dmamap_fail(err, DMAMAP_ECLOSED, 0, "machine is closed");
    dmamap_wcb_drain_all(m);
    return 0;
}

int dmamap_machine_set_wcb(dmamap_machine *m, int entries, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    if (!m || m->closed)
        return dmamap_fail(err, DMAMAP_ECLOSED, 0, "machine is closed");
    if (entries < 0 || entries > WCB_MAX)
        return dmamap_fail(err, DMAMAP_EINVAL, (uint64_t)entries, "write-combining buffer of %d lines: "
                           "0 (off) to %d", entries, WCB_MAX);
    LOCK(&m->wcb_lock);
    drain_locked(m);
    m->wcb_n = entries;
    UNLOCK(&m->wcb_lock);
    return 0;
}

void dmamap_wcb_stats(dmamap_machine *m, uint64_t *out3)
{
    if (!m || !out3)
        return;
    out3[0] = m->wcb_drains;
    out3[1] = m->wcb_merges;
    out3[2] = m->wcb_evictions;
}
