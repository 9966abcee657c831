/* What the MMU makes of an address, read from the tables in memory (no
 * caches): translate() and count_present(). */
#include <string.h>
#include "internal.h"

/* Physical address of a table slot (tables always live in RAM). */
static uint64_t slot_pa(dmamap_machine *m, const uint64_t *slot)
{
    return (m->ram_base_pfn << PAGE_SHIFT) + (uint64_t)((const uint8_t *)slot - m->ram_host);
}

static void fill_xlate(dmamap_as *as, uint64_t va, uint64_t *e, int level, struct dmamap_xlate *x)
{
    const struct dmamap_arch *a = as->m->arch;
    memset(x, 0, sizeof *x);
    x->page_size = 1ULL << (PAGE_SHIFT + 9 * level);
    x->pa = a->entry_pa(*e, level) + (va & (x->page_size - 1));
    x->entry = *e;
    x->entry_pa = slot_pa(as->m, e);
    a->decode(a, *e, level, x);
    x->cacheable = a->cache_cacheable[x->cache];
    x->device = a->cache_device[x->cache];
    x->region = dmamap_region_of(as->m, x->pa);
}

int dmamap_translate(dmamap_as *as, uint64_t va, struct dmamap_xlate *out, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, va);
    if (!out)
        return dmamap_fail(err, DMAMAP_EINVAL, va, "NULL output");
    if (!va_ok(as, va, 1))
        return dmamap_fail(err, DMAMAP_ERANGE, va, "%#llx is outside the %s address range",
                           (unsigned long long)va, as->kernel ? "kernel" : "user");
    AS_LOCK(as, err, va);
    uint64_t *e;
    int level;
    int found = dmamap_pt_walk_mem(as, va, &e, &level) && as->m->arch->is_valid(as->m->arch, *e, level);
    if (found)
        fill_xlate(as, va, e, level, out);
    return as_unlock(as, found, err);
}

int dmamap_count_present(dmamap_as *as, uint64_t va, uint64_t size, uint64_t *out, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, va);
    if (!out || va + size < va)
        return dmamap_fail(err, DMAMAP_EINVAL, va, "bad range");
    uint64_t n = 0, cur = va & PAGE_MASK, end = va + size;
    uint64_t lo, hi;
    dmamap_as_va_range(as, &lo, &hi);
    if (cur < lo)   /* nothing outside the address space is present: do not alias into it */
        cur = lo;
    if (hi != ~0ULL && end > hi)
        end = hi;
    AS_LOCK(as, err, va);
    const struct dmamap_arch *a = as->m->arch;
    while (cur < end) {
        uint64_t *e;
        int level;
        int found = dmamap_pt_walk_mem(as, cur, &e, &level);
        if (level == 0) {   /* scan the rest of this leaf table in one go */
            uint64_t next = (cur | ((PAGE_SIZE << 9) - 1)) + 1;
            if (next > end || next <= cur)
                next = end;
            for (uint64_t i = 0; i < (next - cur + PAGE_SIZE - 1) >> PAGE_SHIFT; i++)
                n += e[i] && a->is_valid(a, e[i], 0);
            cur = next;
            continue;
        }
        uint64_t span = 1ULL << (PAGE_SHIFT + 9 * level);
        uint64_t next = (cur & ~(span - 1)) + span;
        if (next > end || next <= cur)
            next = end;
        if (found && a->is_valid(a, *e, level))
            n += (next - cur + PAGE_SIZE - 1) >> PAGE_SHIFT;
        cur = next;
    }
    UNLOCK(&as->lock);
    *out = n;
    return 0;
}
