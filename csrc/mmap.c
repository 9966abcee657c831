/* VMAs (mm/mmap.c): ids that never repeat, lookup, placement, the entry
 * prologue, mmap and munmap, and splitting a VMA in two (__split_vma). */
#include <stdlib.h>
#include <string.h>
#include "internal.h"

int va_ok(dmamap_as *as, uint64_t va, uint64_t len)
{
    uint64_t lo = as->va_lo, hi = as->va_hi;
    if (va < lo || va + len < va)
        return 0;
    return hi == ~0ULL ? 1 : va + len <= hi;
}

struct vma *vma_get(dmamap_as *as, int64_t id, struct dmamap_err *err)
{
    int slot = ID_SLOT(id);
    if (id < 0 || slot >= as->nvmas || !as->vmas[slot].live || as->vmas[slot].id != id) {
        dmamap_fail(err, DMAMAP_ENOVMA, 0, "VMA %lld is not mapped (already unmapped or never created)",
                    (long long)id);
        return NULL;
    }
    return &as->vmas[slot];
}

int range_in_vma(dmamap_as *as, const struct vma *v, uint64_t addr, uint64_t size, const char *what,
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

/* The prologue of every entry point about one VMA (after its argument checks):
 * lock the address space and check it is live, look the VMA up by id and, with
 * check_range, check [addr, addr + size) is a non-empty page-aligned range in
 * it (what names the call; NULL: a call about the whole VMA, whose errors name
 * no address).  Returns the VMA with the
 * lock held (as_unlock is the epilogue), or NULL with the lock released and *rc
 * the error. */
struct vma *vma_enter(dmamap_as *as, int64_t id, uint64_t addr, uint64_t size, const char *what,
                      int check_range, struct dmamap_err *err, int *rc)
{
    LOCK(&as->lock);
    struct vma *v = NULL;
    if (as_dead(as))
        *rc = dmamap_fail(err, DMAMAP_ECLOSED, addr, "address space or machine is closed");
    else if (!(v = what ? vma_get_at(as, id, addr, err) : vma_get(as, id, err)))
        *rc = DMAMAP_ENOVMA;
    else if (check_range && (*rc = range_in_vma(as, v, addr, size, what, err)))
        v = NULL;
    if (!v)
        UNLOCK(&as->lock);
    return v;
}

/* vma_get for a call about addr: the error of a stale VMA names the address. */
struct vma *vma_get_at(dmamap_as *as, int64_t id, uint64_t addr, struct dmamap_err *err)
{
    struct vma *v = vma_get(as, id, err);
    if (!v)
        dmamap_fail(err, DMAMAP_ENOVMA, addr, "VMA %lld at %#llx is not mapped (already unmapped or "
                    "never created)", (long long)id, (unsigned long long)addr);
    return v;
}

/* The live VMA containing va, trying *last (an index, checked) first and
 * remembering the answer there. */
static struct vma *vma_find_from(dmamap_as *as, int *last, uint64_t va)
{
    if (*last >= 0 && *last < as->nvmas) {
        struct vma *v = &as->vmas[*last];
        if (v->live && va >= v->start && va < v->end)
            return v;
    }
    for (int i = 0; i < as->nvmas; i++) {
        struct vma *v = &as->vmas[i];
        if (v->live && va >= v->start && va < v->end) {
            *last = i;
            return v;
        }
    }
    return NULL;
}

struct vma *vma_find(dmamap_as *as, uint64_t va)
{
    return vma_find_from(as, &as->last_vma, va);
}

/* vma_find for a touch loop's CPU slot c, which may run in reader mode beside
 * other readers: the VMA list only changes under the exclusive lock, so it is
 * read as is, and the slot remembers the VMA it found (as->last_vma is the
 * exclusive holder's: two readers on two VMAs would otherwise undo each
 * other's). */
struct vma *vma_find_cpu(dmamap_as *as, struct as_cpu *c, uint64_t va)
{
    return vma_find_from(as, &c->last_vma, va);
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

int vma_overlaps(dmamap_as *as, uint64_t start, uint64_t end)
{
    for (int i = 0; i < as->nvmas; i++) {
        struct vma *v = &as->vmas[i];
        if (v->live && start < v->end && v->start < end)
            return 1;
    }
    return 0;
}

int vma_find_gap(dmamap_as *as, uint64_t length, uint64_t align, uint64_t *out)
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

void vma_release(struct vma *v)
{
    free(v->chunks);
    free(v->chunk_start);
    free(v->memtypes);
    memset(v, 0, sizeof *v);
}

/* A free VMA slot with a fresh id, zeroed; NULL with *rc on failure.  May move
 * as->vmas: pointers to other VMAs must be looked up again.  Caller holds as->lock. */
struct vma *vma_new(dmamap_as *as, uint64_t addr, struct dmamap_err *err, int *rc)
{
    int slot = -1;
    for (int i = 0; i < as->nvmas; i++)
        if (!as->vmas[i].live) {
            slot = i;
            break;
        }
    if (slot < 0) {
        if (as->nvmas >= (1 << ID_SLOT_BITS)) {
            *rc = dmamap_fail(err, DMAMAP_ENOMEM, addr, "too many VMAs");
            return NULL;
        }
        if (as->nvmas == as->capvmas) {
            int cap = as->capvmas ? as->capvmas * 2 : 16;
            struct vma *n = realloc(as->vmas, (size_t)cap * sizeof *n);
            if (!n) {
                *rc = dmamap_fail(err, DMAMAP_ENOMEM, addr, "host out of memory for VMAs");
                return NULL;
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
    return v;
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
                     DMAMAP_VM_DONTEXPAND | DMAMAP_VM_PFNMAP | DMAMAP_VM_MIXEDMAP | DMAMAP_VM_DONTDUMP |
                     DMAMAP_VM_DONTCOPY | DMAMAP_VM_WIPEONFORK;
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
        if (vma_overlaps(as, addr, addr + length)) {
            rc = dmamap_fail(err, DMAMAP_EBUSY, addr, "fixed mmap at %#llx overlaps an existing VMA",
                             (unsigned long long)addr);
            goto out;
        }
    } else if (!vma_find_gap(as, length, align, &addr)) {
        rc = dmamap_fail(err, DMAMAP_ENOMEM, length, "no free virtual range of %#llx bytes",
                         (unsigned long long)length);
        goto out;
    }
    struct vma *v = vma_new(as, addr, err, &rc);
    if (!v)
        goto out;
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
    int rc;
    struct vma *v = vma_enter(as, id, 0, 0, NULL, 0, err, &rc);
    if (!v)
        return rc;
    dmamap_pt_clear(as, v->start, (v->end - v->start) >> PAGE_SHIFT);
    if (!(flags & DMAMAP_MUNMAP_NOFLUSH))
        dmamap_tlb_flush_range(as, v->start, v->end - v->start);
    untrack(as, v);
    uint64_t gen = v->gen;
    vma_release(v);
    v->gen = gen;
    return as_unlock(as, 0, err);
}

/* mm/mmap.c __split_vma: VMA id keeps [start, addr), a new VMA (*new_id) gets
 * [addr, end) with the same flags, protection, fault handler and chunk list
 * (first_page moved on), vm_pgoff + the pages before addr, and its own copy of
 * the memtype reservations (each piece holds them until it goes, as fork's
 * track_pfn_copy).  A large page across addr is split into a table first.
 * All or nothing. */
int dmamap_vma_split(dmamap_as *as, int64_t id, uint64_t addr, int64_t *new_id, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, addr);
    if (!new_id)
        return dmamap_fail(err, DMAMAP_EINVAL, addr, "NULL new_id");
    int rc = 0;
    struct vma *v = vma_enter(as, id, addr, 0, "split_vma", 0, err, &rc);
    if (!v)
        return rc;
    if ((addr & (PAGE_SIZE - 1)) || addr <= v->start || addr >= v->end) {
        rc = dmamap_fail(err, DMAMAP_EINVAL, addr, "split_vma: %#llx is not a page boundary inside VMA "
                         "[%#llx, %#llx)", (unsigned long long)addr, (unsigned long long)v->start,
                         (unsigned long long)v->end);
        goto out;
    }
    uint64_t delta = (addr - v->start) >> PAGE_SHIFT;
    struct dmamap_chunk *c = NULL;
    uint64_t *cs = NULL;
    struct memtype_entry *mt = NULL;
    if (v->nchunks) {
        c = malloc((size_t)v->nchunks * sizeof *c);
        cs = malloc(((size_t)v->nchunks + 1) * sizeof *cs);
    }
    if (v->nmemtypes)
        mt = malloc((size_t)v->nmemtypes * sizeof *mt);
    if ((v->nchunks && (!c || !cs)) || (v->nmemtypes && !mt)) {
        free(c);
        free(cs);
        free(mt);
        rc = dmamap_fail(err, DMAMAP_ENOMEM, addr, "host out of memory for a VMA split");
        goto out;
    }
    if ((rc = dmamap_pt_split_edges(as, addr, addr, err))) {
        free(c);
        free(cs);
        free(mt);
        goto out;
    }
    int64_t old_id = v->id;
    struct vma *n = vma_new(as, addr, err, &rc);
    if (!n) {
        free(c);
        free(cs);
        free(mt);
        goto out;
    }
    v = vma_get(as, old_id, NULL);   /* vma_new may have moved the array */
    n->start = addr;
    n->end = v->end;
    n->flags = v->flags;
    n->prot = v->prot;
    n->pgoff = v->pgoff + delta;
    n->fault_kind = v->fault_kind;
    n->fault_around = v->fault_around;
    n->large = v->large;
    n->wrnotify = v->wrnotify;
    n->first_page = v->first_page + delta;
    if (v->nchunks) {
        memcpy(c, v->chunks, (size_t)v->nchunks * sizeof *c);
        memcpy(cs, v->chunk_start, ((size_t)v->nchunks + 1) * sizeof *cs);
        n->chunks = c;
        n->chunk_start = cs;
        n->nchunks = v->nchunks;
    }
    n->pio_port = v->pio_port + (addr - v->start);
    n->pio_count = v->pio_count > addr - v->start ? v->pio_count - (addr - v->start) : 0;
    if (v->pio_count > addr - v->start)
        v->pio_count = addr - v->start;
    n->memtypes = mt;
    n->capmemtypes = v->nmemtypes;
    for (int i = 0; i < v->nmemtypes; i++) {
        struct memtype_entry *e = &v->memtypes[i];
        struct dmamap_err ignored;
        /* the same type over the same range is always compatible: only takes a reference */
        if (dmamap_memtype_reserve(as->m, e->start, e->end - e->start, e->cache, &ignored) == 0)
            n->memtypes[n->nmemtypes++] = *e;
    }
    n->live = 1;
    v->end = addr;
    v->mt_gen = 0;
    *new_id = n->id;
out:
    return as_unlock(as, rc, err);
}

/* mm/vma.c is_mergeable_vma / can_vma_merge_after: b follows a directly and
 * maps the continuation of the same object the same way. */
static const char *unmergeable(const struct vma *a, const struct vma *b)
{
    const uint64_t special = DMAMAP_VM_IO | DMAMAP_VM_DONTEXPAND | DMAMAP_VM_PFNMAP | DMAMAP_VM_MIXEDMAP;
    uint64_t pages = (a->end - a->start) >> PAGE_SHIFT;
    if (a->end != b->start)
        return "the VMAs are not adjacent";
    if (a->flags != b->flags)
        return "their vm_flags differ";
    if (a->flags & special)
        return "VM_SPECIAL (VM_IO, VM_DONTEXPAND, VM_PFNMAP, VM_MIXEDMAP) VMAs never merge";
    if (a->prot != b->prot)
        return "their protections differ";
    if (a->fault_kind != b->fault_kind || a->fault_around != b->fault_around || a->large != b->large ||
        a->wrnotify != b->wrnotify)
        return "their fault handlers differ";
    if (a->fault_kind == DMAMAP_FAULT_PIO || a->pio_count || b->pio_count)
        return "port windows never merge";
    if (b->pgoff != a->pgoff + pages)
        return "vm_pgoff is not contiguous";
    if (a->nchunks != b->nchunks ||
        (a->nchunks && (memcmp(a->chunks, b->chunks, (size_t)a->nchunks * sizeof *a->chunks) ||
                        b->first_page != a->first_page + pages)))
        return "their chunk lists are not one object mapped contiguously";
    return NULL;
}

int dmamap_vma_merge(dmamap_as *as, int64_t a_id, int64_t b_id, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, 0);
    int rc = 0;
    struct vma *a = vma_enter(as, a_id, 0, 0, NULL, 0, err, &rc);
    if (!a)
        return rc;
    struct vma *b = a_id == b_id ? NULL : vma_get(as, b_id, err);
    if (!b) {
        rc = a_id == b_id ? dmamap_fail(err, DMAMAP_EINVAL, a->start, "vma_merge: a VMA cannot merge with "
                                        "itself") : DMAMAP_ENOVMA;
        goto out;
    }
    const char *why = unmergeable(a, b);
    if (why) {
        rc = dmamap_fail(err, DMAMAP_EINVAL, b->start, "vma_merge: [%#llx, %#llx) and [%#llx, %#llx): %s",
                         (unsigned long long)a->start, (unsigned long long)a->end,
                         (unsigned long long)b->start, (unsigned long long)b->end, why);
        goto out;
    }
    if (b->nmemtypes) {   /* b's reservations become a's */
        int need = a->nmemtypes + b->nmemtypes;
        if (need > a->capmemtypes) {
            struct memtype_entry *mt = realloc(a->memtypes, (size_t)need * sizeof *mt);
            if (!mt) {
                rc = dmamap_fail(err, DMAMAP_ENOMEM, b->start, "host out of memory for a VMA merge");
                goto out;
            }
            a->memtypes = mt;
            a->capmemtypes = need;
        }
        memcpy(a->memtypes + a->nmemtypes, b->memtypes, (size_t)b->nmemtypes * sizeof *b->memtypes);
        a->nmemtypes = need;
    }
    a->end = b->end;
    a->mt_gen = 0;
    uint64_t gen = b->gen;
    vma_release(b);
    b->gen = gen;
out:
    return as_unlock(as, rc, err);
}
