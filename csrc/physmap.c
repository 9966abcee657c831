/* The physical memory map: regions (RAM, SRAM, MMIO, I/O window), their host
 * backing, and physical reads and writes that bypass the CPU cache. */
#include <stdlib.h>
#include <string.h>
#include "internal.h"

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
        m->pref_locks = calloc((n + PREF_GROUP - 1) >> PREF_SHIFT, sizeof *m->pref_locks);
        if (!m->pages || !m->bitmap || !m->pref_locks) {
            free(m->pages);
            free(m->bitmap);
            free(m->pref_locks);
            m->pages = NULL;
            m->bitmap = NULL;
            m->pref_locks = NULL;
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
