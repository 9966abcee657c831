/* Streaming-DMA ownership, as CONFIG_DMA_API_DEBUG and KMSAN track it: the
 * physical ranges a device owns between a dma_map or a sync for the device
 * and a sync for the CPU or the unmap.  The CPU access path checks cacheable RAM
 * accesses against them (one atomic load when nothing is mapped). */
#include <stdlib.h>
#include "internal.h"

#define OWN_LOG_MAX 1024

int dmamap_dma_own_add(dmamap_machine *m, uint64_t pa, uint64_t size, int64_t tag, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    if (!m || m->closed)
        return dmamap_fail(err, DMAMAP_ECLOSED, pa, "machine is closed");
    if (size == 0 || pa + size < pa)
        return dmamap_fail(err, DMAMAP_EINVAL, pa, "bad ownership range %#llx+%#llx", (unsigned long long)pa,
                           (unsigned long long)size);
    LOCK(&m->own_lock);
    if (m->nown == m->capown) {
        int cap = m->capown ? 2 * m->capown : 16;
        struct dma_own_range *n = realloc(m->own, (size_t)cap * sizeof *n);
        if (!n) {
            UNLOCK(&m->own_lock);
            return dmamap_fail(err, DMAMAP_ENOMEM, pa, "host out of memory");
        }
        m->own = n;
        m->capown = cap;
    }
    m->own[m->nown] = (struct dma_own_range){pa, pa + size, tag};
    m->nown++;
    UNLOCK(&m->own_lock);
    return 0;
}

int dmamap_dma_own_remove(dmamap_machine *m, uint64_t pa, uint64_t size, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    if (!m || m->closed)
        return dmamap_fail(err, DMAMAP_ECLOSED, pa, "machine is closed");
    LOCK(&m->own_lock);
    for (int i = 0; i < m->nown; i++) {
        if (m->own[i].pa == pa && m->own[i].end == pa + size) {
            m->own[i] = m->own[m->nown - 1];
            m->nown--;
            UNLOCK(&m->own_lock);
            return 0;
        }
    }
    UNLOCK(&m->own_lock);
    return dmamap_fail(err, DMAMAP_EINVAL, pa, "no device-owned range %#llx+%#llx", (unsigned long long)pa,
                       (unsigned long long)size);
}

void dmamap_dma_own_set_record(dmamap_machine *m, int record)
{
    if (!m)
        return;
    LOCK(&m->own_lock);
    m->own_record = !!record;
    UNLOCK(&m->own_lock);
}

int dmamap_dma_own_drain(dmamap_machine *m, struct dmamap_dma_own_event *out, int max, uint64_t *dropped)
{
    if (!m || !out || max <= 0)
        return 0;
    LOCK(&m->own_lock);
    int n = m->nown_log < max ? m->nown_log : max;
    for (int i = 0; i < n; i++)
        out[i] = m->own_log[i];
    for (int i = n; i < m->nown_log; i++)
        m->own_log[i - n] = m->own_log[i];
    m->nown_log -= n;
    if (dropped) {
        *dropped = m->own_dropped;
        m->own_dropped = 0;
    }
    UNLOCK(&m->own_lock);
    return n;
}

int dmamap_dma_own_check(dmamap_machine *m, uint64_t pa, uint64_t n, int is_write, struct dmamap_err *err)
{
    if (!m->nown)
        return 0;
    int rc = 0;
    LOCK(&m->own_lock);
    for (int i = 0; i < m->nown; i++) {
        const struct dma_own_range *r = &m->own[i];
        if (pa + n <= r->pa || pa >= r->end)
            continue;
        uint64_t at = pa > r->pa ? pa : r->pa;
        if (m->own_record) {
            if (!m->own_log)
                m->own_log = calloc(OWN_LOG_MAX, sizeof *m->own_log);
            if (m->own_log && m->nown_log < OWN_LOG_MAX)
                m->own_log[m->nown_log++] = (struct dmamap_dma_own_event){at, r->pa, r->end - r->pa, r->tag,
                                                                          is_write};
            else
                m->own_dropped++;
            break;
        }
        rc = dmamap_fail(err, DMAMAP_EDMAOWN, at, "CPU %s of %#llx inside a streaming DMA buffer %#llx+%#llx "
                         "the device owns (missing dma_sync_*_for_cpu or use before dma_unmap_*)",
                         is_write ? "write" : "read", (unsigned long long)at, (unsigned long long)r->pa,
                         (unsigned long long)(r->end - r->pa));
        break;
    }
    UNLOCK(&m->own_lock);
    return rc;
}
