/* The table of ISAs: the built-in descriptors listed in arch/arches.h, and
 * ISA variants registered at run time from a data description (no C on the
 * porter's side), plus the exported per-ISA queries. */
#include <stdlib.h>
#include <string.h>
#include "internal.h"

#define DMAMAP_ARCH(n) extern const struct dmamap_arch dmamap_arch_##n;
#include "../arch/arches.h"
#undef DMAMAP_ARCH

static const struct dmamap_arch *const builtin[] = {
#define DMAMAP_ARCH(n) &dmamap_arch_##n,
#include "../arch/arches.h"
#undef DMAMAP_ARCH
};
#define NBUILTIN ((int)(sizeof builtin / sizeof builtin[0]))
#define MAX_VARIANTS 32

/* A registered variant: a copy of its base descriptor pointing at its own
 * memory-type tables.  Never freed, so pointers to it stay valid for the
 * life of the process, as the built-in ones do. */
struct variant {
    struct dmamap_arch arch;
    char name[DMAMAP_ISA_NAME_MAX];
    char cache_name[DMAMAP_CACHE_MAX][DMAMAP_ISA_NAME_MAX];
    const char *names[DMAMAP_CACHE_MAX];
    unsigned char cacheable[DMAMAP_CACHE_MAX], device[DMAMAP_CACHE_MAX];
    uint64_t enc[DMAMAP_CACHE_MAX];
    struct dmamap_isa_variant desc;   /* as registered, to recognise a repeat */
};

static pthread_mutex_t variants_lock = PTHREAD_MUTEX_INITIALIZER;
static struct variant *variants[MAX_VARIANTS];
static _Atomic int nvariants;

const struct dmamap_arch *dmamap_arch_get(int isa)
{
    for (int i = 0; i < NBUILTIN; i++)
        if (builtin[i]->isa == isa)
            return builtin[i];
    int i = isa - DMAMAP_ISA_VARIANT_FIRST;
    if (i >= 0 && i < nvariants)   /* published after it is complete */
        return &variants[i]->arch;
    return NULL;
}

static const struct dmamap_arch *arch_at(int index)
{
    if (index >= 0 && index < NBUILTIN)
        return builtin[index];
    index -= NBUILTIN;
    return index >= 0 && index < nvariants ? &variants[index]->arch : NULL;
}

/* ---- shared rules and encodings ---- */

/* x86 PAT: any two differing types of one range conflict. */
int dmamap_memtype_exact(const struct dmamap_arch *a, int x, int y)
{
    (void)a;
    return x == y;
}

/* ARM / RISC-V: mismatched attributes are about cacheability and Normal vs
 * Device (I/O); two types of one class may alias. */
int dmamap_memtype_by_class(const struct dmamap_arch *a, int x, int y)
{
    if (x == y)
        return 1;
    if (a->cache_cacheable[x] && a->cache_cacheable[y])
        return 1;
    return a->cache_device[x] && a->cache_device[y];
}

int dmamap_mt_prot_cache(const struct dmamap_arch *a, uint64_t prot)
{
    uint64_t v = prot & a->mt_mask;
    for (int c = 0; c < a->ncache; c++)
        if (a->mt_enc[c] == v)
            return c;
    return -1;
}

uint64_t dmamap_mt_prot_set_cache(const struct dmamap_arch *a, uint64_t prot, int cache)
{
    return (prot & ~a->mt_mask) | a->mt_enc[cache];
}

/* ---- the exported table ---- */

int dmamap_isa_count(void)
{
    return NBUILTIN + nvariants;
}

int dmamap_isa_info(int index, struct dmamap_isa_info *out)
{
    const struct dmamap_arch *a = arch_at(index);
    if (!a || !out)
        return DMAMAP_EINVAL;
    memset(out, 0, sizeof *out);
    out->id = a->isa;
    strncpy(out->name, a->name, sizeof out->name - 1);
    out->base = a->isa;
    if (a->isa >= DMAMAP_ISA_VARIANT_FIRST)
        out->base = variants[a->isa - DMAMAP_ISA_VARIANT_FIRST]->desc.base;
    out->levels = a->levels;
    out->va_bits = a->va_bits;
    out->ncache = a->ncache;
    out->noncached = a->noncached;
    out->writecombine = a->writecombine;
    out->dmacoherent = a->dmacoherent;
    out->cached = a->cached;
    out->device_align_fault = a->device_align_fault;
    out->faulting_store_partial = a->faulting_store_partial;
    out->kernel_half = a->kernel_half;
    out->user_lo = a->user_lo;
    out->user_hi = a->user_hi;
    out->kern_lo = a->kern_lo;
    out->kern_hi = a->kern_hi;
    out->page_offset = a->page_offset;
    out->vmalloc_start = a->vmalloc_start;
    out->vmalloc_end = a->vmalloc_end;
    out->ram_base = a->ram_base;
    out->ram_max = a->ram_max;
    out->sram_base = a->sram_base;
    out->sram_max = a->sram_max;
    out->mmio_base = a->mmio_base;
    out->mmio_size = a->mmio_size;
    out->iowin_base = a->iowin_base;
    out->mt_field = a->mt_field;
    out->mt_mask = a->mt_mask;
    return 0;
}

static int name_ok(const char *s)
{
    size_t n = strnlen(s, DMAMAP_ISA_NAME_MAX);
    if (n == 0 || n == DMAMAP_ISA_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '_' || s[i] == '-'))
            return 0;
    return 1;
}

static int variant_check(const struct dmamap_isa_variant *v, const struct dmamap_arch *base, struct dmamap_err *err)
{
    if (!base)
        return dmamap_fail(err, DMAMAP_EINVAL, 0, "variant base ISA %d is unknown", v->base);
    if (!base->mt_field || base->isa >= DMAMAP_ISA_VARIANT_FIRST)
        return dmamap_fail(err, DMAMAP_EINVAL, 0, "ISA %s has no memory-type field a variant may redefine",
                           base->name);
    if (!name_ok(v->name))
        return dmamap_fail(err, DMAMAP_EINVAL, 0, "variant name must be 1-%d characters of [A-Za-z0-9_-]",
                           DMAMAP_ISA_NAME_MAX - 1);
    if (!v->mt_mask || (v->mt_mask & ~base->mt_field))
        return dmamap_fail(err, DMAMAP_EINVAL, v->mt_mask, "memory-type mask %#llx is empty or outside the "
                           "%s memory-type field %#llx", (unsigned long long)v->mt_mask, base->name,
                           (unsigned long long)base->mt_field);
    if (v->ncache < 1 || v->ncache > DMAMAP_CACHE_MAX)
        return dmamap_fail(err, DMAMAP_EINVAL, 0, "a variant has 1 to %d memory types, not %d", DMAMAP_CACHE_MAX,
                           v->ncache);
    for (int c = 0; c < v->ncache; c++) {
        const struct dmamap_memtype_desc *d = &v->cache[c];
        if (!name_ok(d->name))
            return dmamap_fail(err, DMAMAP_EINVAL, 0, "memory type %d has no valid name", c);
        if (d->bits & ~v->mt_mask)
            return dmamap_fail(err, DMAMAP_EINVAL, d->bits, "memory type %s encodes bits %#llx outside the mask "
                               "%#llx", d->name, (unsigned long long)d->bits, (unsigned long long)v->mt_mask);
        if ((d->cacheable != 0 && d->cacheable != 1) || (d->device != 0 && d->device != 1) ||
            (d->cacheable && d->device))
            return dmamap_fail(err, DMAMAP_EINVAL, 0, "memory type %s: cacheable and device are 0/1 and not both",
                               d->name);
        for (int k = 0; k < c; k++)
            if (v->cache[k].bits == d->bits || !strncmp(v->cache[k].name, d->name, DMAMAP_ISA_NAME_MAX))
                return dmamap_fail(err, DMAMAP_EINVAL, d->bits, "memory types %s and %s share a name or an "
                                   "encoding", v->cache[k].name, d->name);
    }
    const int picks[4] = {v->noncached, v->writecombine, v->dmacoherent, v->cached};
    for (int k = 0; k < 4; k++)
        if (picks[k] < 0 || picks[k] >= v->ncache)
            return dmamap_fail(err, DMAMAP_EINVAL, 0, "kernel cache choice %d is not one of the %d memory types",
                               picks[k], v->ncache);
    if (!v->cache[v->cached].cacheable)
        return dmamap_fail(err, DMAMAP_EINVAL, 0, "the cached type %s is not cacheable", v->cache[v->cached].name);
    return 0;
}

static int same_variant(const struct dmamap_isa_variant *a, const struct dmamap_isa_variant *b)
{
    if (strncmp(a->name, b->name, DMAMAP_ISA_NAME_MAX) || a->base != b->base || a->mt_mask != b->mt_mask ||
        a->ncache != b->ncache || a->noncached != b->noncached || a->writecombine != b->writecombine ||
        a->dmacoherent != b->dmacoherent || a->cached != b->cached)
        return 0;
    for (int c = 0; c < a->ncache; c++)
        if (strncmp(a->cache[c].name, b->cache[c].name, DMAMAP_ISA_NAME_MAX) || a->cache[c].bits != b->cache[c].bits ||
            a->cache[c].cacheable != b->cache[c].cacheable || a->cache[c].device != b->cache[c].device)
            return 0;
    return 1;
}

int dmamap_isa_register_variant(const struct dmamap_isa_variant *v, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    if (!v)
        return dmamap_fail(err, DMAMAP_EINVAL, 0, "no variant description");
    int rc = variant_check(v, dmamap_arch_get(v->base), err);
    if (rc)
        return rc;
    LOCK(&variants_lock);
    for (int i = 0; i < NBUILTIN + nvariants; i++) {
        const struct dmamap_arch *a = arch_at(i);
        if (strncmp(a->name, v->name, DMAMAP_ISA_NAME_MAX))
            continue;
        if (a->isa >= DMAMAP_ISA_VARIANT_FIRST && same_variant(&variants[a->isa - DMAMAP_ISA_VARIANT_FIRST]->desc, v))
            rc = a->isa;
        else
            rc = dmamap_fail(err, DMAMAP_EINVAL, 0, "an ISA named %s already exists and differs", a->name);
        goto out;
    }
    if (nvariants == MAX_VARIANTS) {
        rc = dmamap_fail(err, DMAMAP_ENOMEM, 0, "no room for more than %d ISA variants", MAX_VARIANTS);
        goto out;
    }
    struct variant *n = calloc(1, sizeof *n);
    if (!n) {
        rc = dmamap_fail(err, DMAMAP_ENOMEM, 0, "host out of memory");
        goto out;
    }
    n->desc = *v;
    n->arch = *dmamap_arch_get(v->base);
    memcpy(n->name, v->name, DMAMAP_ISA_NAME_MAX - 1);
    for (int c = 0; c < v->ncache; c++) {
        memcpy(n->cache_name[c], v->cache[c].name, DMAMAP_ISA_NAME_MAX - 1);
        n->names[c] = n->cache_name[c];
        n->cacheable[c] = (unsigned char)v->cache[c].cacheable;
        n->device[c] = (unsigned char)v->cache[c].device;
        n->enc[c] = v->cache[c].bits;
    }
    n->arch.isa = DMAMAP_ISA_VARIANT_FIRST + nvariants;
    n->arch.name = n->name;
    n->arch.ncache = v->ncache;
    n->arch.cache_names = n->names;
    n->arch.cache_cacheable = n->cacheable;
    n->arch.cache_device = n->device;
    n->arch.noncached = v->noncached;
    n->arch.writecombine = v->writecombine;
    n->arch.dmacoherent = v->dmacoherent;
    n->arch.cached = v->cached;
    n->arch.mt_mask = v->mt_mask;
    n->arch.mt_enc = n->enc;
    /* the rest of the field is reserved in this variant (prot_check refuses it) */
    n->arch.reserved = (n->arch.reserved | n->arch.mt_field) & ~v->mt_mask;
    variants[nvariants] = n;
    rc = n->arch.isa;
    nvariants++;   /* publish */
out:
    UNLOCK(&variants_lock);
    return rc;
}

/* ---- per-ISA queries ---- */

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
    return a->prot_make(a, flags, cache);
}

int dmamap_prot_cache(int isa, uint64_t prot)
{
    const struct dmamap_arch *a = dmamap_arch_get(isa);
    return a ? a->prot_cache(a, prot) : DMAMAP_EINVAL;
}

uint64_t dmamap_prot_set_cache(int isa, uint64_t prot, int cache)
{
    const struct dmamap_arch *a = dmamap_arch_get(isa);
    if (!a || cache < 0 || cache >= a->ncache)
        return prot;
    return a->prot_set_cache(a, prot, cache);
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
    return a->prot_cache(a, a->prot_set_cache(a, 0, index));
}
