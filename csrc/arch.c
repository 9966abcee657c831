/* The table of ISAs (one descriptor per arch/ directory) and the queries the binding layer asks of it. */
#include "internal.h"

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
