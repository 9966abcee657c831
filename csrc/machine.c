/* The machine's lifetime: creation, backing memory (a memfd mapping), closing,
 * configuration and machine-wide statistics. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "internal.h"

dmamap_machine *dmamap_machine_new(int isa, void *backing, uint64_t backing_size, int coherent,
                                   struct dmamap_err *err)
{
    dmamap_err_clear(err);
    const struct dmamap_arch *a = dmamap_arch_get(isa);
    if (!a) {
        dmamap_fail(err, DMAMAP_EINVAL, 0, "unknown ISA %d", isa);
        return NULL;
    }
    if ((backing_size & (PAGE_SIZE - 1)) || (backing_size && !backing)) {
        dmamap_fail(err, DMAMAP_EINVAL, backing_size, "backing must be page-sized and non-NULL");
        return NULL;
    }
    dmamap_machine *m = calloc(1, sizeof *m);
    if (!m) {
        dmamap_fail(err, DMAMAP_ENOMEM, 0, "host out of memory");
        return NULL;
    }
    m->arch = a;
    m->backing = backing;
    m->backing_size = backing_size;
    m->coherent = coherent;
    pthread_mutexattr_t at;   /* held briefly (a leaf table's pages at most): spin before sleeping */
    pthread_mutexattr_init(&at);
    pthread_mutexattr_settype(&at, PTHREAD_MUTEX_ADAPTIVE_NP);
    pthread_mutex_init(&m->lock, &at);
    pthread_mutexattr_destroy(&at);
    pthread_mutex_init(&m->region_lock, NULL);
    pthread_mutex_init(&m->cache_lock, NULL);
    pthread_mutex_init(&m->own_lock, NULL);
    pthread_mutex_init(&m->wcb_lock, NULL);
    return m;
}

void dmamap_machine_free(dmamap_machine *m)
{
    if (!m)
        return;
    free(m->pages);
    free(m->pref_locks);
    free(m->bitmap);
    free(m->memtypes);
    free(m->table_cache);
    free(m->cache);
    free(m->users);
    free(m->own);
    free(m->own_log);
    pthread_mutex_destroy(&m->own_lock);
    pthread_mutex_destroy(&m->wcb_lock);
    pthread_mutex_destroy(&m->lock);
    pthread_mutex_destroy(&m->region_lock);
    pthread_mutex_destroy(&m->cache_lock);
    free(m);
}

/* Emulated memory's backing: one sparse private anonymous mapping (nothing is
 * committed until touched), 2 MiB-aligned and in host huge pages where the
 * host allows them (MADV_HUGEPAGE): an emulated access to a page it has not
 * touched lately then misses no host TLB, where 4 KiB backing would miss on
 * every page of a sequential walk. */
int dmamap_backing_map(uint64_t size, void **out, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    if (!out || size == 0 || (size & (PAGE_SIZE - 1)) || size > (1ULL << 47))
        return dmamap_fail(err, DMAMAP_EINVAL, size, "backing needs an out pointer and a non-zero page-multiple "
                           "size below 128 TiB");
    const uint64_t huge = 1ULL << 21;
    uint64_t pad = size >= huge ? huge - PAGE_SIZE : 0;
    uint8_t *p = mmap(NULL, size + pad, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return dmamap_fail(err, DMAMAP_ENOMEM, size, "host mmap of %#llx bytes of backing failed: %s",
                           (unsigned long long)size, strerror(errno));
    uint64_t lead = (huge - ((uintptr_t)p & (huge - 1))) & (huge - 1);
    lead = lead > pad ? 0 : lead;
    if (lead)
        munmap(p, lead);
    if (pad - lead)
        munmap(p + lead + size, pad - lead);
    p += lead;
    (void)madvise(p, size, MADV_HUGEPAGE);   /* a hint: hosts without THP keep 4 KiB pages */
    *out = p;
    return 0;
}

void dmamap_backing_retire(void *p, uint64_t size)
{
    if (p && size)
        mmap(p, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
}

void dmamap_backing_unmap(void *p, uint64_t size)
{
    if (p && size)
        munmap(p, size);
}

void dmamap_machine_close(dmamap_machine *m)
{
    if (!m)
        return;
    LOCK(&m->lock);
    m->closed = 1;
    UNLOCK(&m->lock);
}

void dmamap_machine_set_io(dmamap_machine *m, dmamap_io_fn fn, void *ctx)
{
    if (!m)
        return;
    LOCK(&m->lock);
    m->io_fn = fn;
    m->io_ctx = ctx;
    UNLOCK(&m->lock);
}

void dmamap_machine_set_memtype_policy(dmamap_machine *m, int policy)
{
    /* unknown policies are ignored: there is no error channel */
    if (!m || (policy != DMAMAP_MEMTYPE_STRICT && policy != DMAMAP_MEMTYPE_REPORT))
        return;
    LOCK(&m->lock);
    m->memtype_policy = policy;
    UNLOCK(&m->lock);
}

int dmamap_machine_set_cache(dmamap_machine *m, uint64_t size, int ways, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    if (!m || m->closed)
        return dmamap_fail(err, DMAMAP_ECLOSED, 0, "machine is closed");
    if (ways <= 0 || ways > 64 || size == 0 || size % ((uint64_t)ways * CACHE_LINE) ||
        size > (64ULL << 20))
        return dmamap_fail(err, DMAMAP_EINVAL, size, "cache size %llu with %d ways is not a "
                           "multiple of ways*64 bytes up to 64 MiB", (unsigned long long)size, ways);
    int sets = (int)(size / ((uint64_t)ways * CACHE_LINE));
    if (sets & (sets - 1))
        return dmamap_fail(err, DMAMAP_EINVAL, size, "cache set count %d is not a power of two", sets);
    uint8_t *data;
    struct cache_line *c = dmamap_cache_alloc(sets, ways, &data);
    if (!c)
        return dmamap_fail(err, DMAMAP_ENOMEM, size, "host out of memory for the cache model");
    LOCK(&m->cache_lock);
    free(m->cache);
    m->cache = c;
    m->cache_data = data;
    m->cache_sets = sets;
    m->cache_ways = ways;
    UNLOCK(&m->cache_lock);
    return 0;
}

void dmamap_machine_stats(dmamap_machine *m, struct dmamap_machine_stats *out)
{
    if (!out)
        return;
    if (!m) {
        memset(out, 0, sizeof *out);
        return;
    }
    LOCK(&m->lock);
    out->ram_pages = m->ram_pages;
    out->ram_pages_used = m->pages_used;
    out->table_pages = m->table_pages;
    out->memtype_reports = m->nreports;
    UNLOCK(&m->lock);
    out->dma_bytes_read = m->dma_read;
    out->dma_bytes_written = m->dma_written;
    out->cache_hits = m->cache_hits;
    out->cache_misses = m->cache_misses;
    out->cache_writebacks = m->cache_wb;
    out->mmio_accesses = m->mmio_accesses;
    out->port_accesses = m->port_accesses;
    out->port_master_aborts = m->port_master_aborts;
    out->cache_lines_maintained = m->cache_maint_lines;
}
