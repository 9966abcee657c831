/* The emulated machine: physical memory map, page descriptors (RAM only),
 * page allocator, port/MMIO dispatch, memtype tracking and device DMA. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "internal.h"

int dmamap_fail(struct dmamap_err *err, int code, uint64_t addr, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        err->code = code;
        err->addr = addr;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

void dmamap_err_clear(struct dmamap_err *err)
{
    if (err) {
        err->code = 0;
        err->addr = 0;
        err->aux = 0;
        err->msg[0] = 0;
    }
}

const struct dmamap_arch *dmamap_arch_get(int isa)
{
    switch (isa) {
    case DMAMAP_ISA_X86_64:
        return &dmamap_arch_x86_64;
    case DMAMAP_ISA_AARCH64:
        return &dmamap_arch_aarch64;
    default:
        return NULL;
    }
}

/* ---- arch queries ---- */

int dmamap_isa_levels(int isa)
{
    const struct dmamap_arch *a = dmamap_arch_get(isa);
    return a ? a->levels : DMAMAP_EINVAL;
}

int dmamap_isa_va_bits(int isa)
{
    const struct dmamap_arch *a = dmamap_arch_get(isa);
    return a ? a->va_bits : DMAMAP_EINVAL;
}

const char *dmamap_cache_name(int isa, int cache)
{
    const struct dmamap_arch *a = dmamap_arch_get(isa);
    if (!a || cache < 0 || cache >= a->ncache)
        return NULL;
    return a->cache_names[cache];
}

int dmamap_cache_count(int isa)
{
    const struct dmamap_arch *a = dmamap_arch_get(isa);
    return a ? a->ncache : DMAMAP_EINVAL;
}

int dmamap_cache_is_cacheable(int isa, int cache)
{
    const struct dmamap_arch *a = dmamap_arch_get(isa);
    if (!a || cache < 0 || cache >= a->ncache)
        return DMAMAP_EINVAL;
    return a->cache_cacheable[cache];
}

int dmamap_cache_is_device(int isa, int cache)
{
    const struct dmamap_arch *a = dmamap_arch_get(isa);
    if (!a || cache < 0 || cache >= a->ncache)
        return DMAMAP_EINVAL;
    return a->cache_device[cache];
}

uint64_t dmamap_prot_make(int isa, unsigned flags, int cache)
{
    const struct dmamap_arch *a = dmamap_arch_get(isa);
    if (!a || cache < 0 || cache >= a->ncache)
        return 0;
    return a->prot_make(flags, cache);
}

int dmamap_prot_cache(int isa, uint64_t prot)
{
    const struct dmamap_arch *a = dmamap_arch_get(isa);
    return a ? a->prot_cache(prot) : DMAMAP_EINVAL;
}

uint64_t dmamap_prot_set_cache(int isa, uint64_t prot, int cache)
{
    const struct dmamap_arch *a = dmamap_arch_get(isa);
    if (!a || cache < 0 || cache >= a->ncache)
        return prot;
    return a->prot_set_cache(prot, cache);
}

unsigned dmamap_prot_flags(int isa, uint64_t prot)
{
    const struct dmamap_arch *a = dmamap_arch_get(isa);
    return a ? a->prot_flags(prot) : 0;
}

int dmamap_cache_by_pat_index(int isa, int index)
{
    const struct dmamap_arch *a = dmamap_arch_get(isa);
    if (!a || index < 0 || index >= a->ncache)
        return DMAMAP_EINVAL;
    return a->prot_cache(a->prot_set_cache(0, index));
}

/* ---- machine lifetime ---- */

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
    pthread_mutex_init(&m->lock, NULL);
    pthread_mutex_init(&m->region_lock, NULL);
    pthread_mutex_init(&m->cache_lock, NULL);
    return m;
}

void dmamap_machine_free(dmamap_machine *m)
{
    if (!m)
        return;
    free(m->pages);
    free(m->bitmap);
    free(m->memtypes);
    free(m->table_cache);
    free(m->cache);
    pthread_mutex_destroy(&m->lock);
    pthread_mutex_destroy(&m->region_lock);
    pthread_mutex_destroy(&m->cache_lock);
    free(m);
}

/* ---- backing memory and closing ----
 * The backing is a shared mapping of a memfd.  Closing a machine retires it:
 * the range is replaced by anonymous, never-committed memory, so the memfd's
 * pages go back to the host at once while a call still running on another
 * thread reads zeros instead of touching unmapped memory.  The small C state
 * is freed later, when no caller can hold it (dmamap_machine_free). */

int dmamap_backing_map(int fd, uint64_t size, void **out, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    if (!out || fd < 0 || size == 0 || (size & (PAGE_SIZE - 1)))
        return dmamap_fail(err, DMAMAP_EINVAL, size, "backing needs a file descriptor, an out pointer and a "
                           "non-zero page-multiple size");
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
    if (p == MAP_FAILED)
        return dmamap_fail(err, DMAMAP_ENOMEM, size, "host mmap of %#llx bytes of backing failed: %s",
                           (unsigned long long)size, strerror(errno));
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
    struct cache_line *c = calloc((size_t)sets * ways, sizeof *c);
    if (!c)
        return dmamap_fail(err, DMAMAP_ENOMEM, size, "host out of memory for the cache model");
    LOCK(&m->cache_lock);
    free(m->cache);
    m->cache = c;
    m->cache_sets = sets;
    m->cache_ways = ways;
    UNLOCK(&m->cache_lock);
    return 0;
}

/* ---- physical memory map ---- */

/* The region holding pa, copied out under the region lock: a device removed
 * on another thread can never tear the entry read here. */
int dmamap_region_lookup(dmamap_machine *m, uint64_t pa, struct dmamap_region *out)
{
    int found = 0;
    if (!m)
        return 0;
    LOCK(&m->region_lock);
    for (int i = 0; i < m->nregions; i++) {
        const struct dmamap_region *r = &m->regions[i];
        if (pa >= r->base && pa - r->base < r->size) {
            *out = *r;
            found = 1;
            break;
        }
    }
    UNLOCK(&m->region_lock);
    return found;
}

int dmamap_region_of(dmamap_machine *m, uint64_t pa)
{
    struct dmamap_region r;
    return dmamap_region_lookup(m, pa, &r) ? r.type : 0;
}

int dmamap_regions(dmamap_machine *m, struct dmamap_region *out, int max)
{
    if (!m || !out || max <= 0)
        return 0;
    LOCK(&m->region_lock);
    int n = m->nregions < max ? m->nregions : max;
    memcpy(out, m->regions, (size_t)n * sizeof *out);
    UNLOCK(&m->region_lock);
    return n;
}

int dmamap_add_region(dmamap_machine *m, const struct dmamap_region *r, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    if (!m || m->closed)
        return dmamap_fail(err, DMAMAP_ECLOSED, 0, "machine is closed");
    if (!r)
        return dmamap_fail(err, DMAMAP_EINVAL, 0, "NULL region");
    if (r->type < DMAMAP_MEM_RAM || r->type > DMAMAP_MEM_IOWIN)
        return dmamap_fail(err, DMAMAP_EINVAL, r->base, "unknown region type %d", r->type);
    if (!r->size || (r->base | r->size) & (PAGE_SIZE - 1))
        return dmamap_fail(err, DMAMAP_EINVAL, r->base, "region base and size must be page-aligned "
                           "and non-zero");
    if (r->base + r->size < r->base || r->base + r->size > (1ULL << 48))
        return dmamap_fail(err, DMAMAP_EINVAL, r->base, "region wraps or exceeds 48-bit physical space");
    int memory = r->type == DMAMAP_MEM_RAM || r->type == DMAMAP_MEM_SRAM;
    if (memory && (r->backing_offset & (PAGE_SIZE - 1) || r->backing_offset > m->backing_size ||
                   r->size > m->backing_size - r->backing_offset))
        return dmamap_fail(err, DMAMAP_EINVAL, r->base, "region backing [%#llx+%#llx) outside the "
                           "host backing of %#llx bytes", (unsigned long long)r->backing_offset,
                           (unsigned long long)r->size, (unsigned long long)m->backing_size);
    int rc = 0;
    LOCK(&m->lock);
    if (m->nregions >= MAX_REGIONS) {
        rc = dmamap_fail(err, DMAMAP_EINVAL, r->base, "too many regions (max %d)", MAX_REGIONS);
        goto out;
    }
    for (int i = 0; i < m->nregions; i++) {
        const struct dmamap_region *o = &m->regions[i];
        if (r->base < o->base + o->size && o->base < r->base + r->size) {
            rc = dmamap_fail(err, DMAMAP_EINVAL, r->base, "region [%#llx, %#llx) overlaps [%#llx, %#llx)",
                             (unsigned long long)r->base, (unsigned long long)(r->base + r->size),
                             (unsigned long long)o->base, (unsigned long long)(o->base + o->size));
            goto out;
        }
        if (memory && (o->type == DMAMAP_MEM_RAM || o->type == DMAMAP_MEM_SRAM) &&
            r->backing_offset < o->backing_offset + o->size &&
            o->backing_offset < r->backing_offset + r->size) {
            rc = dmamap_fail(err, DMAMAP_EINVAL, r->base, "region backing overlaps another region's");
            goto out;
        }
    }
    if (r->type == DMAMAP_MEM_RAM) {
        if (m->pages) {
            rc = dmamap_fail(err, DMAMAP_EINVAL, r->base, "only one RAM region is supported");
            goto out;
        }
        uint64_t n = r->size >> PAGE_SHIFT;
        m->pages = calloc(n, sizeof *m->pages);
        m->bitmap = calloc((n + 63) / 64, sizeof(uint64_t));
        if (!m->pages || !m->bitmap) {
            free(m->pages);
            free(m->bitmap);
            m->pages = NULL;
            m->bitmap = NULL;
            rc = dmamap_fail(err, DMAMAP_ENOMEM, r->base, "host out of memory for page descriptors");
            goto out;
        }
        m->ram_base_pfn = r->base >> PAGE_SHIFT;
        m->ram_pages = n;
        m->ram_host = m->backing + r->backing_offset;
    }
    if (r->type == DMAMAP_MEM_SRAM && !m->sram_host) {
        m->sram_base = r->base;
        m->sram_size = r->size;
        m->sram_host = m->backing + r->backing_offset;
    }
    LOCK(&m->region_lock);
    m->regions[m->nregions++] = *r;
    UNLOCK(&m->region_lock);
out:
    UNLOCK(&m->lock);
    return dmamap_m_done(m, rc, err);
}

int dmamap_remove_region(dmamap_machine *m, uint64_t base, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    if (!m || m->closed)
        return dmamap_fail(err, DMAMAP_ECLOSED, base, "machine is closed");
    int rc = dmamap_fail(err, DMAMAP_EINVAL, base, "no region starts at %#llx", (unsigned long long)base);
    LOCK(&m->lock);
    for (int i = 0; i < m->nregions; i++) {
        if (m->regions[i].base != base)
            continue;
        if (m->regions[i].type != DMAMAP_MEM_MMIO) {
            rc = dmamap_fail(err, DMAMAP_EINVAL, base, "only MMIO regions can be removed");
            break;
        }
        LOCK(&m->region_lock);
        memmove(&m->regions[i], &m->regions[i + 1], (size_t)(m->nregions - i - 1) * sizeof m->regions[0]);
        m->nregions--;
        UNLOCK(&m->region_lock);
        dmamap_err_clear(err);
        rc = 0;
        break;
    }
    UNLOCK(&m->lock);
    return dmamap_m_done(m, rc, err);
}

int dmamap_region_count(dmamap_machine *m)
{
    if (!m)
        return 0;
    LOCK(&m->region_lock);
    int n = m->nregions;
    UNLOCK(&m->region_lock);
    return n;
}

int dmamap_region_get(dmamap_machine *m, int i, struct dmamap_region *out)
{
    if (!m || !out)
        return DMAMAP_EINVAL;
    int rc = DMAMAP_EINVAL;
    LOCK(&m->region_lock);
    if (i >= 0 && i < m->nregions) {
        *out = m->regions[i];
        rc = 0;
    }
    UNLOCK(&m->region_lock);
    return rc;
}

/* Host pointer for [pa, pa+n) if it lies inside one memory region. */
uint8_t *dmamap_host_ptr(dmamap_machine *m, uint64_t pa, uint64_t n, int *type)
{
    /* RAM first, without scanning the memory map: the hot case. */
    uint64_t roff = pa - (m->ram_base_pfn << PAGE_SHIFT), rsize = m->ram_pages << PAGE_SHIFT;
    if (m->ram_host && roff < rsize && n <= rsize - roff) {
        if (type)
            *type = DMAMAP_MEM_RAM;
        return m->ram_host + roff;
    }
    struct dmamap_region r;
    int found = dmamap_region_lookup(m, pa, &r);
    if (type)
        *type = found ? r.type : 0;
    if (!found || (r.type != DMAMAP_MEM_RAM && r.type != DMAMAP_MEM_SRAM))
        return NULL;
    if (n > r.size - (pa - r.base))
        return NULL;
    return m->backing + r.backing_offset + (pa - r.base);
}

static int phys_rw(dmamap_machine *m, uint64_t pa, void *buf, uint64_t n, int is_write,
                   struct dmamap_err *err)
{
    dmamap_err_clear(err);
    if (!m || m->closed)
        return dmamap_fail(err, DMAMAP_ECLOSED, pa, "machine is closed");
    if (n && !buf)
        return dmamap_fail(err, DMAMAP_EINVAL, pa, "NULL buffer");
    if (pa + n < pa)
        return dmamap_fail(err, DMAMAP_EPHYS, pa, "physical range %#llx+%#llx wraps",
                           (unsigned long long)pa, (unsigned long long)n);
    uint8_t *b = buf;
    while (n) {
        struct dmamap_region r;
        int found = dmamap_region_lookup(m, pa, &r);
        uint8_t *host = found && (r.type == DMAMAP_MEM_RAM || r.type == DMAMAP_MEM_SRAM)
                            ? m->backing + r.backing_offset + (pa - r.base) : NULL;
        if (!host)
            return dmamap_fail(err, DMAMAP_EPHYS, pa, "physical address %#llx is not memory (%s)",
                               (unsigned long long)pa, found ? "MMIO or I/O window" : "no region");
        uint64_t chunk = r.size - (pa - r.base);
        if (chunk > n)
            chunk = n;
        if (is_write)
            memcpy(host, b, chunk);
        else
            memcpy(b, host, chunk);
        b += chunk;
        pa += chunk;
        n -= chunk;
    }
    return 0;
}

int dmamap_phys_read(dmamap_machine *m, uint64_t pa, void *buf, uint64_t n, struct dmamap_err *err)
{
    return dmamap_m_done(m, phys_rw(m, pa, buf, n, 0, err), err);
}

int dmamap_phys_write(dmamap_machine *m, uint64_t pa, const void *buf, uint64_t n, struct dmamap_err *err)
{
    return dmamap_m_done(m, phys_rw(m, pa, (void *)buf, n, 1, err), err);
}

/* ---- page descriptors and allocator ---- */

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
    out->flags = p->flags;
    out->refcount = p->refcount;
    out->mapcount = p->mapcount;
    out->table_used = p->table_used;
    UNLOCK(&m->lock);
    return 0;
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

static int alloc_locked(dmamap_machine *m, uint64_t npages, uint64_t align, uint32_t flags,
                        uint64_t *pfn_out, struct dmamap_err *err)
{
    uint64_t idx;
    if (!find_run(m, npages, align, m->alloc_hint, m->ram_pages, &idx) &&
        !find_run(m, npages, align, 0, m->ram_pages, &idx))
        return dmamap_fail(err, DMAMAP_ENOMEM, npages << PAGE_SHIFT, "out of emulated RAM: no free run "
                           "of %llu pages (%llu of %llu pages in use)", (unsigned long long)npages,
                           (unsigned long long)m->pages_used, (unsigned long long)m->ram_pages);
    bits_set(m->bitmap, idx, npages, 1);
    for (uint64_t k = 0; k < npages; k++) {
        struct page_desc *p = &m->pages[idx + k];
        p->flags = flags;
        p->refcount = 1;
        p->mapcount = 0;
        p->table_used = 0;
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

static void scrub(dmamap_machine *m, uint64_t pfn, uint64_t npages)
{
    uint8_t *host = dmamap_host_ptr(m, pfn << PAGE_SHIFT, npages << PAGE_SHIFT, NULL);
    if (!host)
        return;
    if (m->cache)
        dmamap_cache_maint(m, pfn << PAGE_SHIFT, npages << PAGE_SHIFT, 0, 1);
    /* Give large frees back to the host; small ones are cheaper to clear. */
    if (npages < 16 || madvise(host, npages << PAGE_SHIFT, MADV_REMOVE) != 0)
        memset(host, 0, npages << PAGE_SHIFT);
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
    uint64_t idx = pfn - m->ram_base_pfn;
    for (uint64_t k = 0; k < npages; k++) {
        struct page_desc *p = &m->pages[idx + k];
        if (!bit_test(m->bitmap, idx + k) || p->refcount <= 0) {
            rc = dmamap_fail(err, DMAMAP_EINVAL, (pfn + k) << PAGE_SHIFT,
                             "double free: pfn %#llx is not allocated", (unsigned long long)(pfn + k));
            goto out;
        }
        if (p->flags & DMAMAP_PG_TABLE) {   /* only its address space frees a page table */
            rc = dmamap_fail(err, DMAMAP_EBADPAGE, (pfn + k) << PAGE_SHIFT,
                             "pfn %#llx is a page-table page in use", (unsigned long long)(pfn + k));
            goto out;
        }
        if (p->mapcount > 0 || p->refcount > 1) {
            rc = dmamap_fail(err, DMAMAP_EBUSY, (pfn + k) << PAGE_SHIFT,
                             "pfn %#llx is still mapped (mapcount %d, refcount %d)",
                             (unsigned long long)(pfn + k), p->mapcount, p->refcount);
            goto out;
        }
    }
    for (uint64_t k = 0; k < npages; k++)
        memset(&m->pages[idx + k], 0, sizeof m->pages[0]);
    bits_set(m->bitmap, idx, npages, 0);
    m->pages_used -= npages;
    scrub(m, pfn, npages);
out:
    UNLOCK(&m->lock);
    return dmamap_m_done(m, rc, err);
}

int dmamap_get_page(dmamap_machine *m, uint64_t pfn, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    if (!m || m->closed)
        return dmamap_fail(err, DMAMAP_ECLOSED, 0, "machine is closed");
    struct page_desc *p = dmamap_page(m, pfn);
    if (!p)
        return dmamap_fail(err, DMAMAP_EBADPAGE, pfn << PAGE_SHIFT, "pfn %#llx has no page descriptor",
                           (unsigned long long)pfn);
    int rc = 0;
    LOCK(&m->lock);
    if (p->refcount <= 0)
        rc = dmamap_fail(err, DMAMAP_EBADPAGE, pfn << PAGE_SHIFT, "get_page on free pfn %#llx",
                         (unsigned long long)pfn);
    else if (p->flags & DMAMAP_PG_TABLE)
        rc = dmamap_fail(err, DMAMAP_EBADPAGE, pfn << PAGE_SHIFT, "get_page on page-table page %#llx",
                         (unsigned long long)pfn);
    else
        p->refcount++;
    UNLOCK(&m->lock);
    return dmamap_m_done(m, rc, err);
}

int dmamap_put_page(dmamap_machine *m, uint64_t pfn, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    if (!m || m->closed)
        return dmamap_fail(err, DMAMAP_ECLOSED, 0, "machine is closed");
    struct page_desc *p = dmamap_page(m, pfn);
    if (!p)
        return dmamap_fail(err, DMAMAP_EBADPAGE, pfn << PAGE_SHIFT, "pfn %#llx has no page descriptor",
                           (unsigned long long)pfn);
    int rc = 0;
    LOCK(&m->lock);
    if (p->refcount <= 1)
        rc = dmamap_fail(err, DMAMAP_EBADPAGE, pfn << PAGE_SHIFT, "put_page would drop the last "
                         "reference of pfn %#llx; free it instead", (unsigned long long)pfn);
    else
        p->refcount--;
    UNLOCK(&m->lock);
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
        m->pages[idx] = (struct page_desc){.flags = DMAMAP_PG_TABLE | DMAMAP_PG_RESERVED, .refcount = 1};
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
    if (idx >= m->ram_pages || !(m->pages[idx].flags & DMAMAP_PG_TABLE)) {
        UNLOCK(&m->lock);   /* not a table page (any more): never free it twice */
        return;
    }
    memset(&m->pages[idx], 0, sizeof m->pages[0]);
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

/* ---- MMIO, I/O window and port space ---- */

int dmamap_port_access(dmamap_machine *m, uint64_t port, int size, int is_write, uint64_t *value,
                       struct dmamap_err *err)
{
    dmamap_err_clear(err);
    if (!m || m->closed)
        return dmamap_fail(err, DMAMAP_ECLOSED, port, "machine is closed");
    if (!value)
        return dmamap_fail(err, DMAMAP_EINVAL, port, "NULL value");
    if (size != 1 && size != 2 && size != 4)
        return dmamap_fail(err, DMAMAP_EINVAL, port, "port access width %d is not 1, 2 or 4", size);
    if (port > 0xffff || port + (uint64_t)size > 0x10000)
        return dmamap_fail(err, DMAMAP_EIO, port, "port %#llx+%d outside the 64 KiB port space",
                           (unsigned long long)port, size);
    if (!m->io_fn)
        return dmamap_fail(err, DMAMAP_EIO, port, "no device claims port %#llx", (unsigned long long)port);
    m->port_accesses++;
    int rc = m->io_fn(m->io_ctx, DMAMAP_IO_PORT, -1, -1, port, size, is_write, value);
    if (rc == DMAMAP_EIO)
        rc = dmamap_fail(err, rc, port, "no device claims port %#llx", (unsigned long long)port);
    else if (rc)
        rc = dmamap_fail(err, rc, port, "port %#llx handler failed", (unsigned long long)port);
    return dmamap_m_done(m, rc, err);
}

int dmamap_iowin_map(dmamap_machine *m, uint64_t pa, uint64_t size, uint64_t port, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    if (!m || m->closed)
        return dmamap_fail(err, DMAMAP_ECLOSED, pa, "machine is closed");
    struct dmamap_region reg, *r = dmamap_region_lookup(m, pa, &reg) ? &reg : NULL;
    if (!r || r->type != DMAMAP_MEM_IOWIN || size == 0 || size > r->size - (pa - r->base))
        return dmamap_fail(err, DMAMAP_EINVAL, pa, "%#llx+%#llx is not inside the I/O window",
                           (unsigned long long)pa, (unsigned long long)size);
    if (port + size > 0x10000 || port + size < port)
        return dmamap_fail(err, DMAMAP_EINVAL, port, "ports %#llx+%#llx outside the port space",
                           (unsigned long long)port, (unsigned long long)size);
    int rc = 0, slot = -1;
    LOCK(&m->lock);
    for (int i = 0; i < MAX_IOWIN; i++) {
        struct iowin_slot *s = &m->iowin[i];
        if (!s->live) {
            if (slot < 0)
                slot = i;
        } else if (pa < s->pa + s->size && s->pa < pa + size) {
            rc = dmamap_fail(err, DMAMAP_EBUSY, pa, "I/O window range %#llx already translated",
                             (unsigned long long)pa);
            goto out;
        }
    }
    if (slot < 0)
        rc = dmamap_fail(err, DMAMAP_EBUSY, pa, "all %d I/O window translation slots in use", MAX_IOWIN);
    else
        m->iowin[slot] = (struct iowin_slot){.pa = pa, .size = size, .port = port, .live = 1};
out:
    UNLOCK(&m->lock);
    return dmamap_m_done(m, rc, err);
}

int dmamap_iowin_unmap(dmamap_machine *m, uint64_t pa, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    if (!m || m->closed)
        return dmamap_fail(err, DMAMAP_ECLOSED, pa, "machine is closed");
    int rc = dmamap_fail(err, DMAMAP_EINVAL, pa, "no I/O window translation at %#llx", (unsigned long long)pa);
    LOCK(&m->lock);
    for (int i = 0; i < MAX_IOWIN; i++) {
        if (m->iowin[i].live && m->iowin[i].pa == pa) {
            m->iowin[i].live = 0;
            dmamap_err_clear(err);
            rc = 0;
            break;
        }
    }
    UNLOCK(&m->lock);
    return dmamap_m_done(m, rc, err);
}

int dmamap_io_access(dmamap_machine *m, uint64_t pa, int size, int is_write, uint64_t *value,
                     struct dmamap_err *err)
{
    struct dmamap_region reg, *r = dmamap_region_lookup(m, pa, &reg) ? &reg : NULL;
    if (!r)
        return dmamap_fail(err, DMAMAP_EPHYS, pa, "physical address %#llx is in no region",
                           (unsigned long long)pa);
    if (pa + (uint64_t)size - r->base > r->size)
        return dmamap_fail(err, DMAMAP_EPHYS, pa, "access %#llx+%d crosses the end of its region",
                           (unsigned long long)pa, size);
    if (r->type == DMAMAP_MEM_IOWIN) {
        uint64_t port = 0;
        int found = 0;
        LOCK(&m->lock);
        for (int i = 0; i < MAX_IOWIN; i++) {
            struct iowin_slot *s = &m->iowin[i];
            if (s->live && pa >= s->pa && pa - s->pa < s->size) {
                port = s->port + (pa - s->pa);
                found = 1;
                break;
            }
        }
        UNLOCK(&m->lock);
        if (!found)
            return dmamap_fail(err, DMAMAP_EIO, pa, "I/O window address %#llx has no port translation",
                               (unsigned long long)pa);
        return dmamap_port_access(m, port, size, is_write, value, err);
    }
    if (r->type != DMAMAP_MEM_MMIO)
        return dmamap_fail(err, DMAMAP_EINVAL, pa, "%#llx is memory, not MMIO", (unsigned long long)pa);
    if (!m->io_fn)
        return dmamap_fail(err, DMAMAP_EIO, pa, "no handler for MMIO at %#llx", (unsigned long long)pa);
    m->mmio_accesses++;
    int rc = m->io_fn(m->io_ctx, DMAMAP_IO_MMIO, r->owner, r->bar, pa - r->base, size, is_write, value);
    if (rc)
        return dmamap_fail(err, rc, pa, "MMIO handler at %#llx failed", (unsigned long long)pa);
    return 0;
}

/* ---- device DMA ---- */

int dmamap_dma_rw(dmamap_machine *m, uint64_t pa, void *buf, uint64_t n, int is_write, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    if (!m || m->closed)
        return dmamap_fail(err, DMAMAP_ECLOSED, pa, "machine is closed");
    if (n == 0)
        return 0;
    if (!buf || pa + n < pa)
        return dmamap_fail(err, DMAMAP_EINVAL, pa, "bad DMA range %#llx+%#llx", (unsigned long long)pa,
                           (unsigned long long)n);
    uint8_t *host = dmamap_host_ptr(m, pa, n, NULL);
    if (!host)
        return dmamap_fail(err, DMAMAP_EPHYS, pa, "DMA to %#llx+%#llx does not hit one memory region",
                           (unsigned long long)pa, (unsigned long long)n);
    /* A coherent (snooping) machine has no cache model, so memory is the truth. */
    if (is_write) {
        memcpy(host, buf, n);
        m->dma_written += n;
    } else {
        memcpy(buf, host, n);
        m->dma_read += n;
    }
    return 0;
}

/* ---- memtype tracking ---- */

static int memtype_compatible(dmamap_machine *m, int a, int b);

/* Whether [pa, pa+size) conflicts with a reservation for `cache`, without
 * reporting or failing.  Caller holds m->lock. */
int dmamap_memtype_conflict(dmamap_machine *m, uint64_t pa, uint64_t size, int cache)
{
    for (int i = 0; i < m->nmemtypes; i++) {
        struct memtype_entry *e = &m->memtypes[i];
        if (pa < e->end && e->start < pa + size && !memtype_compatible(m, e->cache, cache))
            return 1;
    }
    return 0;
}

static int memtype_compatible(dmamap_machine *m, int a, int b)
{
    if (a == b)
        return 1;
    if (m->arch->isa == DMAMAP_ISA_X86_64)
        return 0;   /* PAT: any differing type conflicts */
    /* ARM: mismatched attributes are about cacheability and Normal vs Device. */
    const struct dmamap_arch *ar = m->arch;
    if (ar->cache_cacheable[a] && ar->cache_cacheable[b])
        return 1;
    return ar->cache_device[a] && ar->cache_device[b];
}

int dmamap_memtype_check(dmamap_machine *m, uint64_t pa, uint64_t size, int cache, struct dmamap_err *err)
{
    for (int i = 0; i < m->nmemtypes; i++) {
        struct memtype_entry *e = &m->memtypes[i];
        if (pa < e->end && e->start < pa + size && !memtype_compatible(m, e->cache, cache)) {
            if (m->memtype_policy == DMAMAP_MEMTYPE_REPORT) {
                struct dmamap_memtype_report *r = &m->reports[m->nreports % MAX_MEMTYPE_REPORTS];
                *r = (struct dmamap_memtype_report){pa, pa + size, e->cache, cache};
                m->nreports++;
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
    }
    return 0;
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
    cache = m->arch->prot_cache(m->arch->prot_set_cache(0, cache));
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
    cache = m->arch->prot_cache(m->arch->prot_set_cache(0, cache));
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
    out->cache_lines_maintained = m->cache_maint_lines;
}
