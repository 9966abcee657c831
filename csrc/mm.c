/* Address spaces, VMAs, the fault path, the kernel's PTE-insertion rules
 * (mm/memory.c) and CPU accesses through a software TLB. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "internal.h"

#define ID_SLOT_BITS 20
#define ID_SLOT(id) ((int)((id) & ((1 << ID_SLOT_BITS) - 1)))
#define ID_GEN_MASK ((1ULL << (63 - ID_SLOT_BITS)) - 1)

/* Entry points accept any pointer the caller holds, including NULL.  An
 * address space lives until dmamap_as_free (called when no caller can hold it
 * any more); closing it only tears its mappings down and marks it closed, so a
 * call racing a close finds a closed address space, never freed memory. */
static inline int as_dead(const dmamap_as *as)
{
    return atomic_load_explicit(&as->closed, memory_order_acquire) ||
           atomic_load_explicit(&as->m->closed, memory_order_acquire);
}

#define AS_OK(as) ((as) && (as)->m && !as_dead(as))
#define AS_CHECK(as, err, addr)                                                         \
    do {                                                                                \
        if (!AS_OK(as))                                                                 \
            return dmamap_fail(err, DMAMAP_ECLOSED, addr, "address space or machine is " \
                               "closed (NULL)");                                        \
    } while (0)

/* The entry points' prologue: take the lock, then check again that the address
 * space is live (a close on another thread may have won the race for it). */
#define AS_LOCK(as, err, addr)                                                          \
    do {                                                                                \
        LOCK(&(as)->lock);                                                              \
        if (as_dead(as)) {                                                              \
            UNLOCK(&(as)->lock);                                                        \
            return dmamap_fail(err, DMAMAP_ECLOSED, addr, "address space or machine is " \
                               "closed");                                               \
        }                                                                               \
    } while (0)

/* ...and the epilogue: a call that failed because the address space or the
 * machine was closed under it (from a callback, or by another thread while
 * the machine retired its memory) says so, whatever it tripped over. */
static int as_unlock(dmamap_as *as, int rc, struct dmamap_err *err)
{
    if (rc < 0 && rc != DMAMAP_ECLOSED && as_dead(as))
        rc = dmamap_fail(err, DMAMAP_ECLOSED, err ? err->addr : 0, "address space or machine was closed "
                         "during the call");
    UNLOCK(&as->lock);
    return rc;
}

/* A protection value must hold attribute bits only: no output-address bits (nor
 * AArch64's RES0 bits 49:48), and it must not encode physical page 0 as an
 * empty entry at any level. */
static int prot_check(dmamap_as *as, uint64_t prot, struct dmamap_err *err)
{
    const struct dmamap_arch *a = as->m->arch;
    uint64_t res0 = a->isa == DMAMAP_ISA_AARCH64 ? (3ULL << 48) : 0;
    if (a->entry_pa(prot, 0) || (prot & res0))
        return dmamap_fail(err, DMAMAP_EINVAL, 0, "protection %#llx has physical-address or reserved bits "
                           "set", (unsigned long long)prot);
    for (int l = 0; l <= a->max_block_level; l++)
        if (a->leaf(0, prot, l) == 0)
            return dmamap_fail(err, DMAMAP_EINVAL, 0, "protection %#llx encodes no attribute bits",
                               (unsigned long long)prot);
    return 0;
}

/* ---- lifetime ---- */

dmamap_as *dmamap_as_new(dmamap_machine *m, int kernel, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    if (!m || m->closed) {
        dmamap_fail(err, DMAMAP_ECLOSED, 0, "machine is closed");
        return NULL;
    }
    dmamap_as *as = calloc(1, sizeof *as);
    if (!as) {
        dmamap_fail(err, DMAMAP_ENOMEM, 0, "host out of memory");
        return NULL;
    }
    as->m = m;
    as->kernel = !!kernel;
    as->last_vma = -1;
    dmamap_pt_cache_reset(as);
    for (int l = 0; l < m->arch->levels && l < MAX_LEVELS; l++)
        as->pa_mask[l] = m->arch->entry_pa(~0ULL, l);
    as->special_bit = m->arch->set_special(0);
    as->va_lo = as->kernel ? m->arch->kern_lo : m->arch->user_lo;
    as->va_hi = as->kernel ? m->arch->kern_hi : m->arch->user_hi;
    as->dm_level = -1;
    pthread_mutexattr_t at;
    pthread_mutexattr_init(&at);
    pthread_mutexattr_settype(&at, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&as->lock, &at);
    pthread_mutexattr_destroy(&at);
    for (int i = 0; i < TLB_SIZE; i++)
        as->tlb[i].vpn = ~0ULL;
    if (dmamap_alloc_table_page(m, &as->root, err)) {
        pthread_mutex_destroy(&as->lock);
        free(as);
        return NULL;
    }
    as->st.table_pages = 1;
    return as;
}

static void vma_release(struct vma *v)
{
    free(v->chunks);
    free(v->chunk_start);
    free(v->memtypes);
    memset(v, 0, sizeof *v);
}

static void untrack(dmamap_as *as, struct vma *v)
{
    struct dmamap_err e;
    for (int i = 0; i < v->nmemtypes; i++)
        dmamap_memtype_free(as->m, v->memtypes[i].start, v->memtypes[i].end - v->memtypes[i].start,
                            v->memtypes[i].cache, &e);
    v->nmemtypes = 0;
}

/* Tear down every mapping and free the page tables; later calls get
 * DMAMAP_ECLOSED.  Idempotent, and safe from a fault or I/O callback running
 * inside a call on this address space (the lock is recursive): that call ends
 * with DMAMAP_ECLOSED.  On a closed machine nothing is torn down: its memory is
 * gone already. */
void dmamap_as_close(dmamap_as *as)
{
    if (!as)
        return;
    LOCK(&as->lock);
    if (!atomic_load_explicit(&as->closed, memory_order_relaxed)) {
        atomic_store_explicit(&as->closed, 1, memory_order_release);
        if (!atomic_load_explicit(&as->m->closed, memory_order_acquire)) {
            for (int i = 0; i < as->nvmas; i++) {
                struct vma *v = &as->vmas[i];
                if (!v->live)
                    continue;
                dmamap_pt_clear(as, v->start, (v->end - v->start) >> PAGE_SHIFT);
                untrack(as, v);
            }
            dmamap_pt_free_all(as);
        }
        for (int i = 0; i < as->nvmas; i++) {   /* the generations stay: ids never repeat */
            uint64_t gen = as->vmas[i].gen;
            vma_release(&as->vmas[i]);
            as->vmas[i].gen = gen;
        }
        as->last_vma = -1;
        dmamap_tlb_flush_range(as, 0, (uint64_t)TLB_SIZE << PAGE_SHIFT);
    }
    UNLOCK(&as->lock);
}

int dmamap_as_closed(dmamap_as *as)
{
    return !AS_OK(as);
}

/* Free the address space itself (closing it first if needed).  The caller
 * guarantees no call on it is running or can start: in Python, when the
 * AddressSpace object is garbage, or when its machine's C state is released. */
void dmamap_as_free(dmamap_as *as)
{
    if (!as)
        return;
    dmamap_as_close(as);
    free(as->vmas);
    pthread_mutex_destroy(&as->lock);
    free(as);
}

uint64_t dmamap_as_root(dmamap_as *as)
{
    return as ? as->root : 0;
}

void dmamap_as_set_fault_cb(dmamap_as *as, dmamap_fault_fn fn, void *ctx)
{
    if (!as)
        return;
    LOCK(&as->lock);
    as->fault_fn = fn;
    as->fault_ctx = ctx;
    UNLOCK(&as->lock);
}

void dmamap_as_stats(dmamap_as *as, struct dmamap_as_stats *out)
{
    if (!out)
        return;
    if (!as) {
        memset(out, 0, sizeof *out);
        return;
    }
    LOCK(&as->lock);
    *out = as->st;
    UNLOCK(&as->lock);
}

int dmamap_as_va_range(dmamap_as *as, uint64_t *lo, uint64_t *hi)
{
    if (!AS_OK(as))
        return DMAMAP_ECLOSED;
    const struct dmamap_arch *a = as->m->arch;
    if (lo)
        *lo = as->kernel ? a->kern_lo : a->user_lo;
    if (hi)
        *hi = as->kernel ? a->kern_hi : a->user_hi;
    return 0;
}

/* ---- TLB ---- */

void dmamap_tlb_flush_range(dmamap_as *as, uint64_t va, uint64_t size)
{
    as->st.tlb_flushes++;
    dmamap_pt_cache_reset(as);   /* invalidation drops paging-structure caches too (INVLPG, TLBI) */
    uint64_t n = size >> PAGE_SHIFT;
    if (n >= TLB_SIZE) {
        for (int i = 0; i < TLB_SIZE; i++)
            as->tlb[i].vpn = ~0ULL;
        return;
    }
    for (uint64_t vpn = va >> PAGE_SHIFT; vpn < (va >> PAGE_SHIFT) + n; vpn++) {
        struct tlb_entry *t = &as->tlb[vpn % TLB_SIZE];
        if (t->vpn == vpn)
            t->vpn = ~0ULL;
    }
}

void dmamap_tlb_flush_all(dmamap_as *as)
{
    if (!as)
        return;
    LOCK(&as->lock);
    dmamap_tlb_flush_range(as, 0, (uint64_t)TLB_SIZE << PAGE_SHIFT);
    UNLOCK(&as->lock);
}

/* ---- VMAs ---- */

static int va_ok(dmamap_as *as, uint64_t va, uint64_t len)
{
    uint64_t lo = as->va_lo, hi = as->va_hi;
    if (va < lo || va + len < va)
        return 0;
    return hi == ~0ULL ? 1 : va + len <= hi;
}

static struct vma *vma_get(dmamap_as *as, int64_t id, struct dmamap_err *err)
{
    int slot = ID_SLOT(id);
    if (id < 0 || slot >= as->nvmas || !as->vmas[slot].live || as->vmas[slot].id != id) {
        dmamap_fail(err, DMAMAP_ENOVMA, 0, "VMA %lld is not mapped (already unmapped or never created)",
                    (long long)id);
        return NULL;
    }
    return &as->vmas[slot];
}

/* vma_get for a call about addr: the error of a stale VMA names the address. */
static struct vma *vma_get_at(dmamap_as *as, int64_t id, uint64_t addr, struct dmamap_err *err)
{
    struct vma *v = vma_get(as, id, err);
    if (!v)
        dmamap_fail(err, DMAMAP_ENOVMA, addr, "VMA %lld at %#llx is not mapped (already unmapped or "
                    "never created)", (long long)id, (unsigned long long)addr);
    return v;
}

static struct vma *vma_find(dmamap_as *as, uint64_t va)
{
    if (as->last_vma >= 0) {
        struct vma *v = &as->vmas[as->last_vma];
        if (v->live && va >= v->start && va < v->end)
            return v;
    }
    for (int i = 0; i < as->nvmas; i++) {
        struct vma *v = &as->vmas[i];
        if (v->live && va >= v->start && va < v->end) {
            as->last_vma = i;
            return v;
        }
    }
    return NULL;
}

int64_t dmamap_vma_find(dmamap_as *as, uint64_t va)
{
    if (!AS_OK(as))
        return -1;
    LOCK(&as->lock);
    struct vma *v = as_dead(as) ? NULL : vma_find(as, va);
    int64_t id = v ? v->id : -1;
    UNLOCK(&as->lock);
    return id;
}

static int overlaps(dmamap_as *as, uint64_t start, uint64_t end)
{
    for (int i = 0; i < as->nvmas; i++) {
        struct vma *v = &as->vmas[i];
        if (v->live && start < v->end && v->start < end)
            return 1;
    }
    return 0;
}

static int find_gap(dmamap_as *as, uint64_t length, uint64_t align, uint64_t *out)
{
    const struct dmamap_arch *a = as->m->arch;
    uint64_t lo = as->kernel ? a->vmalloc_start : 0x10000000ULL;
    uint64_t hi = as->kernel ? a->vmalloc_end : a->user_hi;
    if (lo + align - 1 < lo)
        return 0;   /* the alignment alone wraps the address space */
    uint64_t cand = (lo + align - 1) & ~(align - 1);
    for (;;) {
        if (cand < lo || cand + length < cand || cand + length > hi)
            return 0;
        uint64_t bump = 0;
        for (int i = 0; i < as->nvmas; i++) {
            struct vma *v = &as->vmas[i];
            /* a guard page between neighbours keeps overruns visible */
            if (v->live && cand < v->end + PAGE_SIZE && v->start < cand + length + PAGE_SIZE && v->end > bump)
                bump = v->end;
        }
        if (!bump) {
            *out = cand;
            return 1;
        }
        uint64_t next = (bump + PAGE_SIZE + align - 1) & ~(align - 1);
        if (next <= cand || bump + PAGE_SIZE + align - 1 < bump)
            return 0;   /* wrapped */
        cand = next;
    }
}

int dmamap_mmap(dmamap_as *as, uint64_t addr, uint64_t length, uint64_t vm_flags, uint64_t prot,
                uint64_t align, int64_t *id_out, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, addr);
    if (!id_out)
        return dmamap_fail(err, DMAMAP_EINVAL, addr, "NULL id_out");
    if (length == 0 || (length & (PAGE_SIZE - 1)))
        return dmamap_fail(err, DMAMAP_EINVAL, addr, "mmap length %#llx is zero or not page-aligned",
                           (unsigned long long)length);
    if (align < PAGE_SIZE)
        align = PAGE_SIZE;
    if (align & (align - 1))
        return dmamap_fail(err, DMAMAP_EINVAL, align, "mmap alignment %#llx is not a power of two",
                           (unsigned long long)align);
    uint64_t known = DMAMAP_VM_READ | DMAMAP_VM_WRITE | DMAMAP_VM_EXEC | DMAMAP_VM_SHARED | DMAMAP_VM_IO |
                     DMAMAP_VM_DONTEXPAND | DMAMAP_VM_PFNMAP | DMAMAP_VM_MIXEDMAP | DMAMAP_VM_DONTDUMP;
    if (vm_flags & ~known)
        return dmamap_fail(err, DMAMAP_EINVAL, addr, "unknown vm_flags %#llx",
                           (unsigned long long)(vm_flags & ~known));
    if ((vm_flags & (DMAMAP_VM_PFNMAP | DMAMAP_VM_MIXEDMAP)) == (DMAMAP_VM_PFNMAP | DMAMAP_VM_MIXEDMAP))
        return dmamap_fail(err, DMAMAP_EVMAKIND, addr, "mmap at %#llx: a VMA cannot be both VM_PFNMAP and "
                           "VM_MIXEDMAP", (unsigned long long)addr);
    if (prot_check(as, prot, err))
        return DMAMAP_EINVAL;
    int rc = 0;
    AS_LOCK(as, err, addr);
    if (addr) {
        if ((addr & (PAGE_SIZE - 1)) || (addr & (align - 1)) || !va_ok(as, addr, length)) {
            rc = dmamap_fail(err, DMAMAP_ERANGE, addr, "fixed mmap address %#llx+%#llx is misaligned or "
                             "outside the %s address range", (unsigned long long)addr,
                             (unsigned long long)length, as->kernel ? "kernel" : "user");
            goto out;
        }
        if (overlaps(as, addr, addr + length)) {
            rc = dmamap_fail(err, DMAMAP_EBUSY, addr, "fixed mmap at %#llx overlaps an existing VMA",
                             (unsigned long long)addr);
            goto out;
        }
    } else if (!find_gap(as, length, align, &addr)) {
        rc = dmamap_fail(err, DMAMAP_ENOMEM, length, "no free virtual range of %#llx bytes",
                         (unsigned long long)length);
        goto out;
    }
    int slot = -1;
    for (int i = 0; i < as->nvmas; i++)
        if (!as->vmas[i].live) {
            slot = i;
            break;
        }
    if (slot < 0) {
        if (as->nvmas >= (1 << ID_SLOT_BITS)) {
            rc = dmamap_fail(err, DMAMAP_ENOMEM, addr, "too many VMAs");
            goto out;
        }
        if (as->nvmas == as->capvmas) {
            int cap = as->capvmas ? as->capvmas * 2 : 16;
            struct vma *n = realloc(as->vmas, (size_t)cap * sizeof *n);
            if (!n) {
                rc = dmamap_fail(err, DMAMAP_ENOMEM, addr, "host out of memory for VMAs");
                goto out;
            }
            memset(n + as->capvmas, 0, (size_t)(cap - as->capvmas) * sizeof *n);
            as->vmas = n;
            as->capvmas = cap;
        }
        slot = as->nvmas++;
    }
    struct vma *v = &as->vmas[slot];
    uint64_t gen = v->gen + 1;
    memset(v, 0, sizeof *v);
    v->gen = gen & ID_GEN_MASK;   /* 2^43 reuses of one slot before an id repeats */
    v->id = (int64_t)((uint64_t)slot | (v->gen << ID_SLOT_BITS));
    v->start = addr;
    v->end = addr + length;
    v->flags = vm_flags;
    v->prot = prot;
    v->live = 1;
    *id_out = v->id;
out:
    return as_unlock(as, rc, err);
}

int dmamap_munmap(dmamap_as *as, int64_t id, struct dmamap_err *err)
{
    return dmamap_munmap_flags(as, id, 0, err);
}

int dmamap_munmap_flags(dmamap_as *as, int64_t id, int flags, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, 0);
    AS_LOCK(as, err, 0);
    struct vma *v = vma_get(as, id, err);
    int rc = v ? 0 : DMAMAP_ENOVMA;
    if (v) {
        dmamap_pt_clear(as, v->start, (v->end - v->start) >> PAGE_SHIFT);
        if (!(flags & DMAMAP_MUNMAP_NOFLUSH))
            dmamap_tlb_flush_range(as, v->start, v->end - v->start);
        untrack(as, v);
        uint64_t gen = v->gen;
        vma_release(v);
        v->gen = gen;
    }
    return as_unlock(as, rc, err);
}

int dmamap_vma_info(dmamap_as *as, int64_t id, struct dmamap_vma_info *out, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, 0);
    if (!out)
        return dmamap_fail(err, DMAMAP_EINVAL, 0, "NULL output");
    AS_LOCK(as, err, 0);
    struct vma *v = vma_get(as, id, err);
    if (v)
        *out = (struct dmamap_vma_info){v->start, v->end, v->flags, v->prot, v->fault_kind, 1};
    return as_unlock(as, v ? 0 : DMAMAP_ENOVMA, err);
}

int dmamap_vma_set_flags(dmamap_as *as, int64_t id, uint64_t set, uint64_t clear, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, 0);
    uint64_t known = DMAMAP_VM_READ | DMAMAP_VM_WRITE | DMAMAP_VM_EXEC | DMAMAP_VM_SHARED | DMAMAP_VM_IO |
                     DMAMAP_VM_DONTEXPAND | DMAMAP_VM_PFNMAP | DMAMAP_VM_MIXEDMAP | DMAMAP_VM_DONTDUMP;
    if ((set | clear) & ~known)
        return dmamap_fail(err, DMAMAP_EINVAL, 0, "unknown vm_flags %#llx",
                           (unsigned long long)((set | clear) & ~known));
    int rc = 0;
    AS_LOCK(as, err, 0);
    struct vma *v = vma_get(as, id, err);
    if (!v) {
        rc = DMAMAP_ENOVMA;
    } else {
        uint64_t f = (v->flags | set) & ~clear;
        if ((f & (DMAMAP_VM_PFNMAP | DMAMAP_VM_MIXEDMAP)) == (DMAMAP_VM_PFNMAP | DMAMAP_VM_MIXEDMAP))
            rc = dmamap_fail(err, DMAMAP_EVMAKIND, v->start, "VMA [%#llx, %#llx) cannot be both VM_PFNMAP "
                             "and VM_MIXEDMAP", (unsigned long long)v->start, (unsigned long long)v->end);
        else
            v->flags = f;
    }
    return as_unlock(as, rc, err);
}

int dmamap_vma_set_prot(dmamap_as *as, int64_t id, uint64_t prot, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, 0);
    if (prot_check(as, prot, err))
        return DMAMAP_EINVAL;
    AS_LOCK(as, err, 0);
    struct vma *v = vma_get(as, id, err);
    if (v)
        v->prot = prot;
    return as_unlock(as, v ? 0 : DMAMAP_ENOVMA, err);
}

int dmamap_vma_set_fault(dmamap_as *as, int64_t id, int kind, const struct dmamap_chunk *chunks, int nchunks,
                         uint64_t first_page, uint64_t fault_around, int large, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, 0);
    if (kind < DMAMAP_FAULT_NONE || kind > DMAMAP_FAULT_PIO)
        return dmamap_fail(err, DMAMAP_EINVAL, 0, "unknown fault handler kind %d", kind);
    int needs_chunks = kind == DMAMAP_FAULT_PAGE || kind == DMAMAP_FAULT_PFN;
    if (needs_chunks && (nchunks <= 0 || !chunks))
        return dmamap_fail(err, DMAMAP_EINVAL, 0, "a built-in fault handler needs at least one chunk");
    if (nchunks < 0 || fault_around > 512)
        return dmamap_fail(err, DMAMAP_EINVAL, 0, "fault_around %llu is above 512 pages",
                           (unsigned long long)fault_around);
    if (kind == DMAMAP_FAULT_PIO && first_page > 0xffff)
        return dmamap_fail(err, DMAMAP_EINVAL, first_page, "port %#llx outside the port space",
                           (unsigned long long)first_page);
    struct dmamap_chunk *c = NULL;
    uint64_t *cs = NULL;
    if (needs_chunks) {
        c = malloc((size_t)nchunks * sizeof *c);
        cs = malloc(((size_t)nchunks + 1) * sizeof *cs);
        if (!c || !cs) {
            free(c);
            free(cs);
            return dmamap_fail(err, DMAMAP_ENOMEM, 0, "host out of memory for chunks");
        }
        cs[0] = 0;
        for (int i = 0; i < nchunks; i++) {
            if (chunks[i].npages == 0 || chunks[i].pfn + chunks[i].npages < chunks[i].pfn ||
                chunks[i].pfn + chunks[i].npages > (1ULL << 36) || cs[i] + chunks[i].npages < cs[i]) {
                free(c);
                free(cs);
                return dmamap_fail(err, DMAMAP_EINVAL, chunks[i].pfn << PAGE_SHIFT, "chunk %d (pfn %#llx, "
                                   "%llu pages) is empty or outside the physical address space", i,
                                   (unsigned long long)chunks[i].pfn, (unsigned long long)chunks[i].npages);
            }
            c[i] = chunks[i];
            cs[i + 1] = cs[i] + chunks[i].npages;
        }
        uint64_t total = cs[nchunks];
        if (first_page >= total) {
            free(c);
            free(cs);
            return dmamap_fail(err, DMAMAP_EINVAL, 0, "first page %llu is past the %llu chunk pages",
                               (unsigned long long)first_page, (unsigned long long)total);
        }
    }
    AS_LOCK(as, err, 0);
    struct vma *v = vma_get(as, id, err);
    if (v) {
        free(v->chunks);
        free(v->chunk_start);
        v->chunks = c;
        v->chunk_start = cs;
        v->nchunks = needs_chunks ? nchunks : 0;
        v->fault_kind = kind;
        v->first_page = kind == DMAMAP_FAULT_PIO ? 0 : first_page;
        v->pio_port = kind == DMAMAP_FAULT_PIO ? first_page : 0;
        v->pio_count = kind == DMAMAP_FAULT_PIO ? v->end - v->start : 0;
        v->fault_around = fault_around;
        v->large = large;
    } else {
        free(c);
        free(cs);
    }
    return as_unlock(as, v ? 0 : DMAMAP_ENOVMA, err);
}

int dmamap_vma_set_pio(dmamap_as *as, int64_t id, uint64_t port, uint64_t count, struct dmamap_err *err)
{
    if (count == 0 || port > 0xffff || count > 0x10000 - port)
        return dmamap_fail(err, DMAMAP_EINVAL, port, "ports %#llx+%llu are outside the 64 KiB port space",
                           (unsigned long long)port, (unsigned long long)count);
    int rc = dmamap_vma_set_fault(as, id, DMAMAP_FAULT_PIO, NULL, 0, port, 0, 0, err);
    if (rc)
        return rc;
    AS_LOCK(as, err, 0);
    struct vma *v = vma_get(as, id, err);
    if (v && count < v->pio_count)
        v->pio_count = count;
    return as_unlock(as, v ? 0 : DMAMAP_ENOVMA, err);
}

/* Index into v->chunks of chunk-list page idx (relative to vma start), or -1. */
static int chunk_find(const struct vma *v, uint64_t idx)
{
    idx += v->first_page;
    int lo = 0, hi = v->nchunks;
    if (!hi || idx >= v->chunk_start[hi])
        return -1;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (v->chunk_start[mid] <= idx)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* pfn backing page `idx` of the VMA's chunk list, or ~0 past its end. */
static uint64_t chunk_pfn(const struct vma *v, uint64_t idx, uint64_t *run)
{
    int c = chunk_find(v, idx);
    if (c < 0)
        return ~0ULL;
    idx += v->first_page;
    if (run)
        *run = v->chunk_start[c + 1] - idx;
    return v->chunks[c].pfn + (idx - v->chunk_start[c]);
}

/* ---- the kernel's rules ---- */

static int is_cow_mapping(const struct vma *v)
{
    return !(v->flags & DMAMAP_VM_SHARED) && (v->flags & DMAMAP_VM_WRITE);
}

static int range_in_vma(dmamap_as *as, const struct vma *v, uint64_t addr, uint64_t size, const char *what,
                        struct dmamap_err *err)
{
    (void)as;
    if ((addr | size) & (PAGE_SIZE - 1))
        return dmamap_fail(err, DMAMAP_EINVAL, addr, "%s: address %#llx or size %#llx not page-aligned", what,
                           (unsigned long long)addr, (unsigned long long)size);
    if (size == 0)
        return dmamap_fail(err, DMAMAP_EINVAL, addr, "%s: size is zero", what);
    if (addr < v->start || addr + size < addr || addr + size > v->end)
        return dmamap_fail(err, DMAMAP_ERANGE, addr, "%s: range %#llx+%#llx is outside VMA [%#llx, %#llx)", what,
                           (unsigned long long)addr, (unsigned long long)size, (unsigned long long)v->start,
                           (unsigned long long)v->end);
    return 0;
}

static int pfn_range_ok(dmamap_as *as, uint64_t pfn, uint64_t npages, const char *what, struct dmamap_err *err)
{
    (void)as;
    if (pfn + npages < pfn || pfn + npages > (1ULL << 36))
        return dmamap_fail(err, DMAMAP_EINVAL, pfn << PAGE_SHIFT, "%s: pfn range %#llx+%llu is outside the "
                           "48-bit physical address space", what, (unsigned long long)pfn,
                           (unsigned long long)npages);
    return 0;
}

/* Check the cache type of [pa, pa+size) against the tracked memtypes and keep a
 * reservation on the VMA until it is unmapped (x86 track_pfn_remap). */
static int track_pfn(dmamap_as *as, struct vma *v, uint64_t pa, uint64_t size, uint64_t prot,
                     struct dmamap_err *err)
{
    int cache = as->m->arch->prot_cache(prot);
    if (v->nmemtypes == v->capmemtypes) {
        int cap = v->capmemtypes ? v->capmemtypes * 2 : 4;
        struct memtype_entry *n = realloc(v->memtypes, (size_t)cap * sizeof *n);
        if (!n)
            return dmamap_fail(err, DMAMAP_ENOMEM, pa, "host out of memory for memtype tracking");
        v->memtypes = n;
        v->capmemtypes = cap;
    }
    int rc = dmamap_memtype_reserve(as->m, pa, size, cache, err);
    if (rc == 0)
        v->memtypes[v->nmemtypes++] = (struct memtype_entry){pa, pa + size, cache, 1};
    return rc;
}

static void untrack_last(dmamap_as *as, struct vma *v)
{
    struct dmamap_err e;
    struct memtype_entry *t = &v->memtypes[--v->nmemtypes];
    dmamap_memtype_free(as->m, t->start, t->end - t->start, t->cache, &e);
}

int dmamap_remap_pfn_range(dmamap_as *as, int64_t id, uint64_t addr, uint64_t pfn, uint64_t size, uint64_t prot,
                           int flags, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, addr);
    if (prot_check(as, prot, err))
        return DMAMAP_EINVAL;
    int rc;
    AS_LOCK(as, err, addr);
    struct vma *v = vma_get_at(as, id, addr, err);
    if (!v) {
        rc = DMAMAP_ENOVMA;
        goto out;
    }
    if ((rc = range_in_vma(as, v, addr, size, "remap_pfn_range", err)) ||
        (rc = pfn_range_ok(as, pfn, size >> PAGE_SHIFT, "remap_pfn_range", err)))
        goto out;
    if (v->flags & DMAMAP_VM_MIXEDMAP) {
        rc = dmamap_fail(err, DMAMAP_EVMAKIND, addr, "remap_pfn_range at %#llx on a VM_MIXEDMAP VMA would "
                         "make it both VM_PFNMAP and VM_MIXEDMAP", (unsigned long long)addr);
        goto out;
    }
    if (is_cow_mapping(v) && (addr != v->start || addr + size != v->end)) {
        rc = dmamap_fail(err, DMAMAP_EINVAL, addr, "remap_pfn_range of a private (COW) mapping must cover "
                         "the whole VMA [%#llx, %#llx)", (unsigned long long)v->start,
                         (unsigned long long)v->end);
        goto out;
    }
    if (flags & ~(DMAMAP_REMAP_LARGE | DMAMAP_REMAP_NOTRACK)) {
        rc = dmamap_fail(err, DMAMAP_EINVAL, addr, "remap_pfn_range: unknown flags %#x", flags);
        goto out;
    }
    int track = !(flags & DMAMAP_REMAP_NOTRACK);
    uint64_t reports = as->m->nreports;
    if (track && (rc = track_pfn(as, v, pfn << PAGE_SHIFT, size, prot, err)))
        goto out;
    rc = dmamap_pt_fill(as, addr, pfn, size >> PAGE_SHIFT, prot, flags & DMAMAP_REMAP_LARGE, 1, err);
    if (rc) {
        if (track) {
            untrack_last(as, v);
            LOCK(&as->m->lock);
            as->m->nreports = reports;   /* a refused remap leaves no attribute report either */
            UNLOCK(&as->m->lock);
        }
        goto out;
    }
    v->flags |= DMAMAP_VM_IO | DMAMAP_VM_PFNMAP | DMAMAP_VM_DONTEXPAND | DMAMAP_VM_DONTDUMP;
out:
    return as_unlock(as, rc, err);
}

int dmamap_remap_pfn_chunks(dmamap_as *as, int64_t id, uint64_t addr, const struct dmamap_chunk *chunks, int nchunks,
                            uint64_t first_page, uint64_t nr_pages, uint64_t prot, int flags,
                            struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, addr);
    if (!chunks || nchunks <= 0 || nr_pages == 0)
        return dmamap_fail(err, DMAMAP_EINVAL, addr, "remap of a chunk list needs chunks and nr_pages > 0");
    int rc = 0;
    AS_LOCK(as, err, addr);
    struct vma *v = vma_get(as, id, err);
    if (!v) {
        UNLOCK(&as->lock);
        return DMAMAP_ENOVMA;
    }
    uint64_t old_flags = v->flags, reports = as->m->nreports;
    int old_tracked = v->nmemtypes;
    uint64_t cur = addr, skip = first_page, left = nr_pages;
    for (int i = 0; i < nchunks && left && !rc; i++) {
        uint64_t n = chunks[i].npages;
        if (skip >= n) {
            skip -= n;
            continue;
        }
        uint64_t take = n - skip < left ? n - skip : left;
        if (take > (~0ULL >> PAGE_SHIFT) || chunks[i].pfn + skip < chunks[i].pfn) {
            rc = dmamap_fail(err, DMAMAP_EINVAL, cur, "chunk %d (pfn %#llx, %llu pages) wraps", i,
                             (unsigned long long)chunks[i].pfn, (unsigned long long)n);
            break;
        }
        rc = dmamap_remap_pfn_range(as, id, cur, chunks[i].pfn + skip, take << PAGE_SHIFT, prot, flags, err);
        if (!rc) {
            cur += take << PAGE_SHIFT;
            left -= take;
            skip = 0;
        }
    }
    if (!rc && left)
        rc = dmamap_fail(err, DMAMAP_EINVAL, addr, "chunk list ends %llu pages short of first page %llu + "
                         "%llu pages", (unsigned long long)left, (unsigned long long)first_page,
                         (unsigned long long)nr_pages);
    if (rc) {   /* roll back every chunk already mapped */
        v = vma_get(as, id, NULL);
        if (v) {
            if (cur > addr) {
                dmamap_pt_clear(as, addr, (cur - addr) >> PAGE_SHIFT);
                dmamap_tlb_flush_range(as, addr, cur - addr);
            }
            while (v->nmemtypes > old_tracked)
                untrack_last(as, v);
            v->flags = old_flags;
        }
        LOCK(&as->m->lock);
        as->m->nreports = reports;
        UNLOCK(&as->m->lock);
    }
    return as_unlock(as, rc, err);
}

static int pte_slot(dmamap_as *as, uint64_t addr, uint64_t **e)
{
    int level;
    int found = dmamap_pt_walk(as, addr, e, &level);
    return found ? level : -1;
}

/* Insert one special PTE (the common tail of vmf_insert_pfn and
 * vmf_insert_mixed); the same pfn already there is VM_FAULT_NOPAGE. */
static int insert_special(dmamap_as *as, uint64_t addr, uint64_t pfn, uint64_t prot, struct dmamap_err *err)
{
    uint64_t *e;
    int level = pte_slot(as, addr, &e);
    if (level >= 0) {
        if (as->m->arch->entry_pa(*e, level) + (addr & ((1ULL << (12 + 9 * level)) - 1) & PAGE_MASK) ==
            pfn << PAGE_SHIFT)
            return 0;
        return dmamap_fail(err, DMAMAP_EBUSY, addr, "PFN insert at %#llx: PTE already maps another pfn",
                           (unsigned long long)addr);
    }
    LOCK(&as->m->lock);
    int rc = dmamap_memtype_check(as->m, pfn << PAGE_SHIFT, PAGE_SIZE, as->m->arch->prot_cache(prot), err);
    UNLOCK(&as->m->lock);
    return rc ? rc : dmamap_pt_fill(as, addr, pfn, 1, prot, 0, 1, err);
}

int dmamap_vmf_insert_pfn_prot(dmamap_as *as, int64_t id, uint64_t addr, uint64_t pfn, uint64_t prot,
                               struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, addr);
    if (prot_check(as, prot, err))
        return DMAMAP_EINVAL;
    int rc;
    AS_LOCK(as, err, addr);
    struct vma *v = vma_get_at(as, id, addr, err);
    if (!v) {
        rc = DMAMAP_ENOVMA;
        goto out;
    }
    if ((rc = range_in_vma(as, v, addr, PAGE_SIZE, "vmf_insert_pfn", err)) ||
        (rc = pfn_range_ok(as, pfn, 1, "vmf_insert_pfn", err)))
        goto out;
    uint64_t kind = v->flags & (DMAMAP_VM_PFNMAP | DMAMAP_VM_MIXEDMAP);
    if (!kind) {
        rc = dmamap_fail(err, DMAMAP_EVMAKIND, addr, "vmf_insert_pfn at %#llx into VMA [%#llx, %#llx) that "
                         "is neither VM_PFNMAP nor VM_MIXEDMAP", (unsigned long long)addr,
                         (unsigned long long)v->start, (unsigned long long)v->end);
        goto out;
    }
    if (kind == (DMAMAP_VM_PFNMAP | DMAMAP_VM_MIXEDMAP)) {
        rc = dmamap_fail(err, DMAMAP_EVMAKIND, addr, "vmf_insert_pfn at %#llx into a VMA with both VM_PFNMAP "
                         "and VM_MIXEDMAP", (unsigned long long)addr);
        goto out;
    }
    if ((kind & DMAMAP_VM_PFNMAP) && is_cow_mapping(v)) {
        rc = dmamap_fail(err, DMAMAP_EVMAKIND, addr, "vmf_insert_pfn at %#llx into a private (COW) VM_PFNMAP "
                         "VMA", (unsigned long long)addr);
        goto out;
    }
    if ((kind & DMAMAP_VM_MIXEDMAP) && dmamap_pfn_is_ram(as->m, pfn)) {
        rc = dmamap_fail(err, DMAMAP_EVMAKIND, addr, "vmf_insert_pfn at %#llx of RAM pfn %#llx into a "
                         "VM_MIXEDMAP VMA: use vmf_insert_mixed or vm_insert_page", (unsigned long long)addr,
                         (unsigned long long)pfn);
        goto out;
    }
    rc = insert_special(as, addr, pfn, prot, err);
out:
    return as_unlock(as, rc, err);
}

/* Validate that pfn may be handed out as a page descriptor (insert_page's
 * checks) and, with take_ref,
 * take the reference and map count a normal PTE holds, under one lock. */
static int page_get(dmamap_as *as, uint64_t addr, uint64_t pfn, const char *what, int take_ref,
                    struct dmamap_err *err)
{
    struct page_desc *p = dmamap_page(as->m, pfn);
    if (!p)
        return dmamap_fail(err, DMAMAP_EBADPAGE, addr, "%s at %#llx: pfn %#llx has no page descriptor (not RAM, "
                           "pfn_valid() is false); map it with a PFN insert or prefault instead", what,
                           (unsigned long long)addr, (unsigned long long)pfn);
    int rc = 0;
    LOCK(&as->m->lock);
    if (p->refcount <= 0)
        rc = dmamap_fail(err, DMAMAP_EBADPAGE, addr, "%s at %#llx: pfn %#llx is a free page", what,
                         (unsigned long long)addr, (unsigned long long)pfn);
    else if (p->flags & DMAMAP_PG_ANON)
        rc = dmamap_fail(err, DMAMAP_EBADPAGE, addr, "%s at %#llx: pfn %#llx is an anonymous page", what,
                         (unsigned long long)addr, (unsigned long long)pfn);
    else if (p->flags & DMAMAP_PG_TABLE)
        rc = dmamap_fail(err, DMAMAP_EBADPAGE, addr, "%s at %#llx: pfn %#llx is a page-table page", what,
                         (unsigned long long)addr, (unsigned long long)pfn);
    else if (take_ref) {
        p->mapcount++;
        p->refcount++;
    }
    UNLOCK(&as->m->lock);
    return rc;
}

static int page_insertable(dmamap_as *as, uint64_t addr, uint64_t pfn, const char *what, struct dmamap_err *err)
{
    return page_get(as, addr, pfn, what, 0, err);
}

static void page_unget(dmamap_as *as, uint64_t pfn)
{
    struct page_desc *p = dmamap_page(as->m, pfn);
    LOCK(&as->m->lock);
    p->mapcount--;
    p->refcount--;
    UNLOCK(&as->m->lock);
}

int dmamap_vm_insert_page(dmamap_as *as, int64_t id, uint64_t addr, uint64_t pfn, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, addr);
    int rc;
    AS_LOCK(as, err, addr);
    struct vma *v = vma_get_at(as, id, addr, err);
    if (!v) {
        rc = DMAMAP_ENOVMA;
        goto out;
    }
    if ((rc = range_in_vma(as, v, addr, PAGE_SIZE, "vm_insert_page", err)))
        goto out;
    if (v->flags & DMAMAP_VM_PFNMAP) {
        rc = dmamap_fail(err, DMAMAP_EVMAKIND, addr, "vm_insert_page at %#llx into a VM_PFNMAP VMA [%#llx, "
                         "%#llx)", (unsigned long long)addr,
                         (unsigned long long)v->start, (unsigned long long)v->end);
        goto out;
    }
    if ((rc = page_insertable(as, addr, pfn, "vm_insert_page", err)))
        goto out;
    uint64_t *e;
    if (pte_slot(as, addr, &e) >= 0) {
        rc = dmamap_fail(err, DMAMAP_EBUSY, addr, "vm_insert_page at %#llx: PTE is not empty",
                         (unsigned long long)addr);
        goto out;
    }
    uint64_t prot = v->prot;
    rc = dmamap_pt_fill(as, addr, pfn, 1, prot, 0, 0, err);
    if (rc == 0)
        v->flags |= DMAMAP_VM_MIXEDMAP;
out:
    return as_unlock(as, rc, err);
}

int dmamap_vmf_insert_mixed(dmamap_as *as, int64_t id, uint64_t addr, uint64_t pfn, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, addr);
    int rc;
    AS_LOCK(as, err, addr);
    struct vma *v = vma_get_at(as, id, addr, err);
    if (!v) {
        rc = DMAMAP_ENOVMA;
        goto out;
    }
    if (!(v->flags & DMAMAP_VM_MIXEDMAP)) {
        rc = dmamap_fail(err, DMAMAP_EVMAKIND, addr, "vmf_insert_mixed at %#llx into VMA [%#llx, %#llx) "
                         "without VM_MIXEDMAP", (unsigned long long)addr,
                         (unsigned long long)v->start, (unsigned long long)v->end);
        goto out;
    }
    if (dmamap_pfn_is_ram(as->m, pfn)) {
        UNLOCK(&as->lock);
        return dmamap_vm_insert_page(as, id, addr, pfn, err);
    }
    if ((rc = range_in_vma(as, v, addr, PAGE_SIZE, "vmf_insert_mixed", err)) ||
        (rc = pfn_range_ok(as, pfn, 1, "vmf_insert_mixed", err)))
        goto out;
    rc = insert_special(as, addr, pfn, v->prot, err);
out:
    return as_unlock(as, rc, err);
}

int dmamap_zap_vma_ptes(dmamap_as *as, int64_t id, uint64_t addr, uint64_t size, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, addr);
    int rc;
    AS_LOCK(as, err, addr);
    struct vma *v = vma_get_at(as, id, addr, err);
    if (!v) {
        rc = DMAMAP_ENOVMA;
        goto out;
    }
    if ((rc = range_in_vma(as, v, addr, size, "zap_vma_ptes", err)))
        goto out;
    if (!(v->flags & DMAMAP_VM_PFNMAP)) {
        rc = dmamap_fail(err, DMAMAP_EVMAKIND, addr, "zap_vma_ptes at %#llx on VMA [%#llx, %#llx) that is "
                         "not VM_PFNMAP", (unsigned long long)addr,
                         (unsigned long long)v->start, (unsigned long long)v->end);
        goto out;
    }
    /* a partial zap of a large page needs a table: get it first, or change nothing */
    if ((rc = dmamap_pt_split_edges(as, addr, addr + size, err)))
        goto out;
    dmamap_pt_clear(as, addr, size >> PAGE_SHIFT);
    dmamap_tlb_flush_range(as, addr, size);
out:
    return as_unlock(as, rc, err);
}

int dmamap_mprotect(dmamap_as *as, int64_t id, uint64_t addr, uint64_t size, uint64_t prot, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, addr);
    if (prot_check(as, prot, err))
        return DMAMAP_EINVAL;
    int rc;
    AS_LOCK(as, err, addr);
    struct vma *v = vma_get_at(as, id, addr, err);
    if (!v) {
        rc = DMAMAP_ENOVMA;
        goto out;
    }
    if ((rc = range_in_vma(as, v, addr, size, "change_protection", err)) ||
        (rc = dmamap_pt_split_edges(as, addr, addr + size, err)))   /* all or nothing */
        goto out;
    if ((rc = dmamap_pt_protect(as, addr, size >> PAGE_SHIFT, prot, err)) == 0 && addr == v->start &&
        addr + size == v->end)
        v->prot = prot;
    dmamap_tlb_flush_range(as, addr, size);
out:
    return as_unlock(as, rc, err);
}

/* ---- the fault path ---- */

static int cow_page(dmamap_as *as, struct vma *v, uint64_t va, uint64_t src_pfn, int replace,
                    struct dmamap_err *err)
{
    uint64_t pfn;
    int rc = dmamap_alloc_pages(as->m, 1, 1, DMAMAP_PG_ANON, &pfn, err);
    if (rc)
        return rc;
    uint8_t *dst = dmamap_host_ptr(as->m, pfn << PAGE_SHIFT, PAGE_SIZE, NULL);
    uint8_t *src = dmamap_host_ptr(as->m, src_pfn << PAGE_SHIFT, PAGE_SIZE, NULL);
    if (src)
        memcpy(dst, src, PAGE_SIZE);
    uint64_t page = va & PAGE_MASK;
    if (replace) {
        dmamap_pt_clear(as, page, 1);
        dmamap_tlb_flush_range(as, page, PAGE_SIZE);
    }
    const struct dmamap_arch *a = as->m->arch;
    unsigned f = a->prot_flags(v->prot) | DMAMAP_PROT_WRITE;
    uint64_t prot = a->prot_make(f, a->prot_cache(v->prot));
    rc = dmamap_pt_fill(as, page, pfn, 1, prot, 0, 0, err);
    /* the PTE now holds the reference the allocation gave us */
    LOCK(&as->m->lock);
    dmamap_page(as->m, pfn)->refcount--;
    UNLOCK(&as->m->lock);
    as->st.cow_faults++;
    return rc;
}


/* The memtype check of a fault-path PFN insert.  The VMA remembers the chunk
 * it last found free of conflicts (for its cache type, at the reservations'
 * generation), so a run of faults in one chunk takes no machine lock.  idx is
 * the chunk-list page of pa, or ~0 when pa is not from the chunk list.  On a
 * conflict, report = 1 checks [pa, pa+size) as any insert does (failing or
 * recording an attribute report); report = 0 just answers nonzero. */
static int fault_memtype_check(dmamap_as *as, struct vma *v, uint64_t pa, uint64_t size, uint64_t idx,
                               int report, struct dmamap_err *err)
{
    dmamap_machine *m = as->m;
    uint64_t gen = atomic_load_explicit(&m->memtype_gen, memory_order_acquire);
    if (v->mt_gen == gen + 1 && v->mt_prot == v->prot && pa >= v->mt_lo && pa + size <= v->mt_hi)
        return 0;
    int cache = m->arch->prot_cache(v->prot);
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
        rc = report ? dmamap_memtype_check(m, pa, size, cache, err) : 1;   /* reports or fails, as any insert */
    }
    UNLOCK(&m->lock);
    return rc;
}

static int insert_one(dmamap_as *as, struct vma *v, uint64_t va, uint64_t pfn, int page_mode, int is_write,
                      uint64_t idx, struct dmamap_err *err)
{
    uint64_t page = va & PAGE_MASK;
    if (page_mode) {
        if (is_write && !(v->flags & DMAMAP_VM_SHARED)) {
            int rc = page_insertable(as, page, pfn, "fault handler returned a page", err);
            return rc ? rc : cow_page(as, v, page, pfn, 0, err);
        }
        int rc = page_get(as, page, pfn, "fault handler returned a page", 1, err);
        if (rc)
            return rc;
        rc = dmamap_pt_insert(as, page, pfn, v->prot, 0, err);
        if (rc)
            page_unget(as, pfn);
        return rc;
    }
    if (is_write && !(v->flags & DMAMAP_VM_SHARED)) {
        if (!dmamap_pfn_is_ram(as->m, pfn))
            return dmamap_fail(err, DMAMAP_ECOW, va, "private write fault at %#llx on non-RAM pfn %#llx: "
                               "SIGBUS, not a copy", (unsigned long long)va, (unsigned long long)pfn);
        return cow_page(as, v, page, pfn, 0, err);
    }
    uint64_t kind = v->flags & (DMAMAP_VM_PFNMAP | DMAMAP_VM_MIXEDMAP);
    if (!kind || kind == (DMAMAP_VM_PFNMAP | DMAMAP_VM_MIXEDMAP))
        return dmamap_fail(err, DMAMAP_EVMAKIND, va, "PFN insert at %#llx into VMA [%#llx, %#llx) that is %s",
                           (unsigned long long)va, (unsigned long long)v->start, (unsigned long long)v->end,
                           kind ? "both VM_PFNMAP and VM_MIXEDMAP" : "neither VM_PFNMAP nor VM_MIXEDMAP");
    int rc = fault_memtype_check(as, v, pfn << PAGE_SHIFT, PAGE_SIZE, idx, 1, err);
    if (rc)
        return rc;
    return dmamap_pt_insert(as, page, pfn, v->prot, 1, err);
}

/* Fault-around for n pages from a, backed by pfn.. (one chunk run, one leaf
 * table): fill the empty PTEs among them, as insert_one would one by one
 * (errors only skip pages), but with one walk and one hold of the lock. */
static void around_run(dmamap_as *as, struct vma *v, uint64_t a, uint64_t pfn, uint64_t n, int page_mode,
                       uint64_t idx)
{
    struct dmamap_err ignored;
    uint64_t table, cnt = 0;
    uint64_t *slot = dmamap_pt_slot(as, a, &table, &ignored);
    if (!slot)
        return;   /* a block covers it, or no memory for a table */
    if (page_mode) {
        dmamap_machine *m = as->m;
        uint64_t base = dmamap_pt_leaf_base(as, v->prot, 0);
        LOCK(&m->lock);
        for (uint64_t i = 0; i < n; i++) {
            struct page_desc *p = slot[i] ? NULL : dmamap_page(m, pfn + i);
            /* page_get's rules: RAM, allocated, neither anonymous nor a page table */
            if (!p || p->refcount <= 0 || (p->flags & (DMAMAP_PG_ANON | DMAMAP_PG_TABLE)))
                continue;
            p->mapcount++;
            p->refcount++;
            slot[i] = base | ((pfn + i) << PAGE_SHIFT);
            cnt++;
        }
        UNLOCK(&m->lock);
    } else {
        uint64_t kind = v->flags & (DMAMAP_VM_PFNMAP | DMAMAP_VM_MIXEDMAP);
        if (!kind || kind == (DMAMAP_VM_PFNMAP | DMAMAP_VM_MIXEDMAP))
            return;
        if (fault_memtype_check(as, v, pfn << PAGE_SHIFT, n << PAGE_SHIFT, idx, 0, &ignored)) {
            for (uint64_t i = 0; i < n; i++)   /* a conflict somewhere: page by page, reporting each */
                if (!slot[i])
                    insert_one(as, v, a + (i << PAGE_SHIFT), pfn + i, 0, 0, idx + i, &ignored);
            return;
        }
        uint64_t base = dmamap_pt_leaf_base(as, v->prot, 1);
        for (uint64_t i = 0; i < n; i++)
            if (!slot[i]) {
                slot[i] = base | ((pfn + i) << PAGE_SHIFT);
                cnt++;
            }
    }
    dmamap_pt_added(as, table, cnt);
}

static int builtin_fault(dmamap_as *as, struct vma *v, uint64_t va, int is_write, struct dmamap_err *err)
{
    int page_mode = v->fault_kind == DMAMAP_FAULT_PAGE;
    uint64_t idx = (va - v->start) >> PAGE_SHIFT;
    uint64_t run;
    uint64_t pfn = chunk_pfn(v, idx, &run);
    if (pfn == ~0ULL)
        return dmamap_fail(err, DMAMAP_ESIGBUS, va, "fault at %#llx beyond the end of the mapped buffer "
                           "(SIGBUS)", (unsigned long long)va);
    /* huge fault: a 2 MiB block when the chunk and the VMA allow */
    if (v->large && !page_mode) {
        uint64_t span = 1ULL << 21;
        uint64_t base = va & ~(span - 1);
        uint64_t bidx = (base - v->start) >> PAGE_SHIFT;
        uint64_t brun;
        uint64_t bpfn = base >= v->start ? chunk_pfn(v, bidx, &brun) : ~0ULL;
        if (base >= v->start && base + span <= v->end && bpfn != ~0ULL && brun >= 512 &&
            !((bpfn << PAGE_SHIFT) & (span - 1)) && !(is_write && !(v->flags & DMAMAP_VM_SHARED))) {
            uint64_t *e;
            int level;
            int found = dmamap_pt_walk(as, base, &e, &level);
            if (!found && level >= 1) {
                int rc = fault_memtype_check(as, v, bpfn << PAGE_SHIFT, span, bidx, 1, err);
                rc = rc ? rc : dmamap_pt_fill(as, base, bpfn, 512, v->prot, 1, 1, err);
                as->st.faults_huge += rc == 0;
                return rc;
            }
        }
    }
    int rc = insert_one(as, v, va, pfn, page_mode, is_write, idx, err);
    if (rc || v->fault_around <= 1 || is_write)
        return rc;
    /* fault-around: map the empty neighbours in the aligned window, a chunk run at a time */
    uint64_t win = v->fault_around << PAGE_SHIFT, written = as->st.ptes_written;
    uint64_t lo = (va & ~(win - 1)) < v->start ? v->start : (va & ~(win - 1));
    uint64_t hi = lo + win > v->end ? v->end : lo + win;
    for (uint64_t a = lo; a < hi;) {
        uint64_t run, p = chunk_pfn(v, (a - v->start) >> PAGE_SHIFT, &run);
        if (p == ~0ULL)
            break;
        uint64_t n = (hi - a) >> PAGE_SHIFT, in_table = ENTRIES - ((a >> PAGE_SHIFT) & (ENTRIES - 1));
        n = n < run ? n : run;
        n = n < in_table ? n : in_table;
        around_run(as, v, a, p, n, page_mode, (a - v->start) >> PAGE_SHIFT);
        a += n << PAGE_SHIFT;
    }
    as->st.around_ptes += as->st.ptes_written - written;
    return 0;
}

static int handle_fault(dmamap_as *as, struct vma *v, uint64_t va, int is_write, struct dmamap_err *err)
{
    as->st.faults++;
    as->st.faults_page += v->fault_kind == DMAMAP_FAULT_PAGE;
    as->st.faults_pfn += v->fault_kind == DMAMAP_FAULT_PFN;
    as->st.faults_python += v->fault_kind == DMAMAP_FAULT_PYTHON;
    switch (v->fault_kind) {
    case DMAMAP_FAULT_PAGE:
    case DMAMAP_FAULT_PFN:
        return builtin_fault(as, v, va, is_write, err);
    case DMAMAP_FAULT_PYTHON: {
        if (!as->fault_fn)
            return dmamap_fail(err, DMAMAP_ENOHANDLER, va, "VMA has a Python fault handler but no callback");
        int64_t id = v->id;
        uint64_t pfn = 0;
        int r = as->fault_fn(as->fault_ctx, id, va & PAGE_MASK, is_write, &pfn);
        if (as_dead(as))   /* the handler closed its own address space (or the machine went) */
            return dmamap_fail(err, DMAMAP_ECLOSED, va, "address space closed by the fault handler at %#llx",
                               (unsigned long long)va);
        v = vma_get(as, id, NULL);
        if (!v)
            return dmamap_fail(err, DMAMAP_ESEGV, va, "VMA unmapped by its own fault handler at %#llx",
                               (unsigned long long)va);
        if (r == DMAMAP_VM_FAULT_PAGE) {
            /* finish_fault: a handler that installed the PTE itself (vm_insert_page)
             * and returned a page as well wins the race with itself; the returned
             * page is dropped and the access goes on through the PTE present. */
            uint64_t *e;
            int level;
            if (dmamap_pt_walk(as, va, &e, &level))
                return 0;
            return insert_one(as, v, va, pfn, 1, is_write, ~0ULL, err);
        }
        if (r == DMAMAP_VM_FAULT_NOPAGE) {
            uint64_t *e;
            int level;
            if (!dmamap_pt_walk(as, va, &e, &level))
                return dmamap_fail(err, DMAMAP_ESIGBUS, va, "fault handler returned VM_FAULT_NOPAGE without "
                                   "inserting a PTE at %#llx", (unsigned long long)va);
            return 0;
        }
        if (r == DMAMAP_VM_FAULT_SIGBUS)
            return dmamap_fail(err, DMAMAP_ESIGBUS, va, "fault handler returned VM_FAULT_SIGBUS at %#llx",
                               (unsigned long long)va);
        return dmamap_fail(err, r < 0 ? r : DMAMAP_EHANDLER, va, "fault handler failed at %#llx",
                           (unsigned long long)va);
    }
    default:
        return dmamap_fail(err, DMAMAP_ENOHANDLER, va, "not-present page at %#llx in VMA [%#llx, %#llx) "
                           "with no fault handler (SIGBUS)", (unsigned long long)va,
                           (unsigned long long)v->start, (unsigned long long)v->end);
    }
}

/* ---- translation and access ---- */

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
    a->decode(*e, level, x);
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
    int found = dmamap_pt_walk_mem(as, va, &e, &level) && as->m->arch->is_valid(*e, level);
    if (found)
        fill_xlate(as, va, e, level, out);
    return as_unlock(as, found, err);
}

/* Resolve va for an access, faulting as needed; returns a TLB entry. */
static int resolve(dmamap_as *as, uint64_t va, int is_write, struct tlb_entry **out, struct dmamap_err *err)
{
    uint64_t vpn = va >> PAGE_SHIFT;
    struct tlb_entry *t = &as->tlb[vpn % TLB_SIZE];
    if (t->vpn == vpn && (!is_write || t->writable)) {
        as->st.tlb_hits++;
        *out = t;
        return 0;
    }
    if (!va_ok(as, va, 1))   /* non-canonical: faults before any TLB lookup */
        return dmamap_fail(err, DMAMAP_ESEGV, va, "access to %#llx outside the %s address range (SIGSEGV)",
                           (unsigned long long)va, as->kernel ? "kernel" : "user");
    as->st.tlb_misses++;
    const struct dmamap_arch *a = as->m->arch;
    for (int tries = 0; tries < 3; tries++) {
        if (as_dead(as))   /* closed by a callback of this very access: no tables to walk */
            return dmamap_fail(err, DMAMAP_ECLOSED, va, "address space closed during the access at %#llx",
                               (unsigned long long)va);
        uint64_t *e;
        int level;
        int found = dmamap_pt_walk(as, va, &e, &level);
        as->st.page_walks += found != 0;   /* MMU walks that found an entry: a refused access counts none */
        struct vma *v = NULL;
        uint64_t ent = found ? *e : 0;
        if (found && (level != as->dm_level || (ent & ~as->pa_mask[level]) != as->dm_attr)) {
            /* Decode only what the TLB entry needs (no entry_pa / region lookups as
             * translate does), and remember it for the next leaf with the same bits. */
            struct dmamap_xlate d;
            as->dm_valid = (uint8_t)!!a->is_valid(ent, level);
            a->decode(ent, level, &d);
            as->dm_writable = (uint8_t)!!d.writable;
            as->dm_user = (uint8_t)!!d.user;
            as->dm_cacheable = a->cache_cacheable[d.cache];
            as->dm_device = a->cache_device[d.cache];
            as->dm_attr = ent & ~as->pa_mask[level];
            as->dm_level = level;
        }
        if (found && as->dm_valid) {
            struct {
                uint64_t pa;
                int writable, user, cacheable, device;
            } x = {(ent & as->pa_mask[level]) + (va & ((1ULL << (PAGE_SHIFT + 9 * level)) - 1)), as->dm_writable,
                   as->dm_user, as->dm_cacheable, as->dm_device};
            if (!as->kernel && !x.user)
                return dmamap_fail(err, DMAMAP_EPROT, va, "user access to kernel-only page at %#llx",
                                   (unsigned long long)va);
            if (is_write && !x.writable) {
                v = vma_find(as, va);
                if (v && (v->flags & DMAMAP_VM_WRITE) && !(v->flags & DMAMAP_VM_SHARED)) {
                    uint64_t pfn = x.pa >> PAGE_SHIFT;
                    if (!dmamap_pfn_is_ram(as->m, pfn))
                        return dmamap_fail(err, DMAMAP_ECOW, va, "private write fault at %#llx on non-RAM "
                                           "pfn %#llx: SIGBUS, not a copy", (unsigned long long)va,
                                           (unsigned long long)pfn);
                    if (level != 0)
                        return dmamap_fail(err, DMAMAP_ECOW, va, "private write fault on a large page at %#llx",
                                           (unsigned long long)va);
                    as->st.faults++;
                    int rc = cow_page(as, v, va, pfn, 1, err);
                    if (rc)
                        return rc;
                    continue;
                }
                return dmamap_fail(err, DMAMAP_EPROT, va, "write to read-only page at %#llx (SIGSEGV)",
                                   (unsigned long long)va);
            }
            t->vpn = vpn;
            t->pa_page = x.pa & PAGE_MASK;
            t->host = dmamap_host_page(as->m, t->pa_page, &t->region);
            t->writable = (uint8_t)x.writable;
            t->user = (uint8_t)x.user;
            t->cacheable = (uint8_t)x.cacheable;
            t->device = (uint8_t)x.device;
            *out = t;
            return 0;
        }
        v = vma_find(as, va);
        if (!v)
            return dmamap_fail(err, DMAMAP_ESEGV, va, "access to %#llx, which no VMA maps (SIGSEGV)",
                               (unsigned long long)va);
        if (found)   /* non-present but not none: PROT_NONE */
            return dmamap_fail(err, DMAMAP_EPROT, va, "access to PROT_NONE page at %#llx (SIGSEGV)",
                               (unsigned long long)va);
        if (!(v->flags & (is_write ? DMAMAP_VM_WRITE : DMAMAP_VM_READ)))
            return dmamap_fail(err, DMAMAP_EPROT, va, "%s of %#llx in a VMA without %s permission (SIGSEGV)",
                               is_write ? "write" : "read", (unsigned long long)va, is_write ? "write" : "read");
        if (v->fault_kind == DMAMAP_FAULT_PIO) {
            *out = NULL;   /* trapped port I/O: the caller dispatches */
            return 0;
        }
        int rc = handle_fault(as, v, va, is_write, err);
        if (rc)
            return rc;
    }
    return dmamap_fail(err, DMAMAP_ESIGBUS, va, "fault at %#llx did not resolve", (unsigned long long)va);
}

static int pio_trap(dmamap_as *as, uint64_t va, int size, int is_write, uint64_t *value, struct dmamap_err *err)
{
    struct vma *v = vma_find(as, va);
    as->st.pio_traps++;
    uint64_t off = va - v->start;
    if (off + (uint64_t)size > v->pio_count)
        return dmamap_fail(err, DMAMAP_ERANGE, va, "port access at %#llx runs past the %llu ports mapped",
                           (unsigned long long)va, (unsigned long long)v->pio_count);
    return dmamap_port_access(as->m, v->pio_port + off, size, is_write, value, err);
}

static int check_device_align(dmamap_as *as, const struct tlb_entry *t, uint64_t va, int size,
                              struct dmamap_err *err)
{
    if (t->device && as->m->arch->isa == DMAMAP_ISA_AARCH64 && (va & (uint64_t)(size - 1)))
        return dmamap_fail(err, DMAMAP_EALIGN, va, "unaligned %d-byte access to Device memory at %#llx "
                           "(alignment fault)", size, (unsigned long long)va);
    return 0;
}

/* One access of `size` (1/2/4/8) bytes within a page. */
static int access_one(dmamap_as *as, uint64_t va, int size, int is_write, uint64_t *value, struct dmamap_err *err)
{
    struct tlb_entry *t;
    int rc = resolve(as, va, is_write, &t, err);
    if (rc)
        return rc;
    if (!t)
        return pio_trap(as, va, size, is_write, value, err);
    if ((rc = check_device_align(as, t, va, size, err)))
        return rc;
    uint64_t pa = t->pa_page | (va & (PAGE_SIZE - 1));
    if (t->host) {
        uint8_t *h = t->host + (va & (PAGE_SIZE - 1));
        if (t->cacheable && as->m->cache) {
            if (is_write)
                dmamap_cache_write(as->m, pa, h, value, (uint64_t)size);
            else
                dmamap_cache_read(as->m, pa, h, value, (uint64_t)size);
        } else if (is_write) {
            memcpy(h, value, (size_t)size);
        } else {
            memcpy(value, h, (size_t)size);
        }
        return 0;
    }
    return dmamap_io_access(as->m, pa, size, is_write, value, err);
}

static int access_locked(dmamap_as *as, uint64_t va, uint8_t *b, uint64_t n, int is_write, struct dmamap_err *err)
{
    while (n) {
        uint64_t in_page = PAGE_SIZE - (va & (PAGE_SIZE - 1));
        uint64_t chunk = in_page < n ? in_page : n;
        struct tlb_entry *t;
        int rc = resolve(as, va, is_write, &t, err);
        if (rc)
            return rc;
        if (t && t->host && !t->device) {
            uint8_t *h = t->host + (va & (PAGE_SIZE - 1));
            uint64_t pa = t->pa_page | (va & (PAGE_SIZE - 1));
            if (t->cacheable && as->m->cache) {
                if (is_write)
                    dmamap_cache_write(as->m, pa, h, b, chunk);
                else
                    dmamap_cache_read(as->m, pa, h, b, chunk);
            } else if (is_write) {
                memcpy(h, b, chunk);
            } else {
                memcpy(b, h, chunk);
            }
        } else {
            /* MMIO, ports and Device memory: naturally aligned accesses of up to 8 bytes */
            uint64_t done = 0;
            while (done < chunk) {
                uint64_t a = va + done;
                int size = 8;
                while (size > 1 && ((a & (uint64_t)(size - 1)) || (uint64_t)size > chunk - done))
                    size >>= 1;
                if ((!t || t->region == DMAMAP_MEM_IOWIN) && size == 8)
                    size = 4;   /* port space has no 8-byte access (trapped or through the I/O window) */
                uint64_t val = 0;
                if (is_write)
                    memcpy(&val, b + done, (size_t)size);
                rc = access_one(as, a, size, is_write, &val, err);
                if (rc)
                    return rc;
                if (!is_write)
                    memcpy(b + done, &val, (size_t)size);
                done += (uint64_t)size;
            }
        }
        b += chunk;
        va += chunk;
        n -= chunk;
    }
    return 0;
}

int dmamap_access(dmamap_as *as, uint64_t va, void *buf, uint64_t n, int is_write, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, va);
    if (n && !buf)
        return dmamap_fail(err, DMAMAP_EINVAL, va, "NULL buffer");
    if (va + n < va)
        return dmamap_fail(err, DMAMAP_ESEGV, va, "access %#llx+%#llx wraps the address space (SIGSEGV)",
                           (unsigned long long)va, (unsigned long long)n);
    AS_LOCK(as, err, va);
    int rc = access_locked(as, va, buf, n, is_write, err);
    return as_unlock(as, rc, err);
}

static int rw_n(dmamap_as *as, uint64_t va, int size, int is_write, uint64_t *value, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, va);
    if (size != 1 && size != 2 && size != 4 && size != 8)
        return dmamap_fail(err, DMAMAP_EINVAL, va, "access width %d is not 1, 2, 4 or 8", size);
    if (!value)
        return dmamap_fail(err, DMAMAP_EINVAL, va, "NULL value");
    if (va + (uint64_t)size < va)
        return dmamap_fail(err, DMAMAP_ESEGV, va, "access at %#llx wraps (SIGSEGV)", (unsigned long long)va);
    int rc;
    AS_LOCK(as, err, va);
    if ((va & (PAGE_SIZE - 1)) + (uint64_t)size <= PAGE_SIZE) {
        uint64_t v = is_write ? *value : 0;
        rc = access_one(as, va, size, is_write, &v, err);
        if (!rc && !is_write)
            *value = v;
    } else {   /* crosses a page: only legal for memory, done bytewise */
        uint8_t tmp[8];
        struct tlb_entry *t;
        memcpy(tmp, value, 8);
        /* One store instruction: where the ISA gives a faulting instruction no
         * effect (x86), both pages must be writable before any byte is written. */
        if (is_write && !as->m->arch->faulting_store_partial &&
            ((rc = resolve(as, va, 1, &t, err)) || (rc = resolve(as, (va | (PAGE_SIZE - 1)) + 1, 1, &t, err))))
            return as_unlock(as, rc, err);
        rc = access_locked(as, va, tmp, (uint64_t)size, is_write, err);
        if (!rc && !is_write) {
            *value = 0;
            memcpy(value, tmp, (size_t)size);
        }
    }
    return as_unlock(as, rc, err);
}

int dmamap_read_n(dmamap_as *as, uint64_t va, int size, uint64_t *value, struct dmamap_err *err)
{
    return rw_n(as, va, size, 0, value, err);
}

int dmamap_write_n(dmamap_as *as, uint64_t va, int size, uint64_t value, struct dmamap_err *err)
{
    return rw_n(as, va, size, 1, &value, err);
}

static int touch_one(dmamap_as *as, uint64_t va, int is_write, struct dmamap_err *err)
{
    uint64_t v = 0;
    int rc = access_one(as, va, 1, 0, &v, err);
    if (!rc && is_write)
        rc = access_one(as, va, 1, 1, &v, err);
    return rc;
}

int dmamap_touch(dmamap_as *as, uint64_t va, uint64_t count, uint64_t stride, int is_write, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, va);
    if (count && (stride == 0 || (count - 1) > (~0ULL - va) / stride))
        return dmamap_fail(err, DMAMAP_EINVAL, va, "touch of %llu addresses with stride %llu wraps",
                           (unsigned long long)count, (unsigned long long)stride);
    int rc = 0;
    AS_LOCK(as, err, va);
    for (uint64_t i = 0; i < count && !rc; i++)
        rc = touch_one(as, va + i * stride, is_write, err);
    return as_unlock(as, rc, err);
}

int dmamap_touch_list(dmamap_as *as, const uint64_t *vas, uint64_t count, int is_write, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, 0);
    if (count && !vas)
        return dmamap_fail(err, DMAMAP_EINVAL, 0, "NULL address list");
    int rc = 0;
    AS_LOCK(as, err, 0);
    for (uint64_t i = 0; i < count && !rc; i++)
        rc = touch_one(as, vas[i], is_write, err);
    return as_unlock(as, rc, err);
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
                n += e[i] && a->is_valid(e[i], 0);
            cur = next;
            continue;
        }
        uint64_t span = 1ULL << (PAGE_SHIFT + 9 * level);
        uint64_t next = (cur & ~(span - 1)) + span;
        if (next > end || next <= cur)
            next = end;
        if (found && a->is_valid(*e, level))
            n += (next - cur + PAGE_SIZE - 1) >> PAGE_SHIFT;
        cur = next;
    }
    UNLOCK(&as->lock);
    *out = n;
    return 0;
}

/* ---- benchmark references ---- */

uint64_t dmamap_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}
