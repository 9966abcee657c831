/* CPU accesses through the software TLB: resolve (walk, fault, COW), reads and
 * writes of memory, MMIO and ports at the access's width, and touches. */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "internal.h"

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
        if (!found) {
            v = vma_find(as, va);
            if (!v)
                return dmamap_fail(err, DMAMAP_ESEGV, va, "access to %#llx, which no VMA maps (SIGSEGV)",
                                   (unsigned long long)va);
            if (!(v->flags & (is_write ? DMAMAP_VM_WRITE : DMAMAP_VM_READ)))
                return dmamap_fail(err, DMAMAP_EPROT, va, "%s of %#llx in a VMA without %s permission "
                                   "(SIGSEGV)", is_write ? "write" : "read", (unsigned long long)va,
                                   is_write ? "write" : "read");
            if (v->fault_kind == DMAMAP_FAULT_PIO) {
                *out = NULL;   /* trapped port I/O: the caller dispatches */
                return 0;
            }
            if (level != 0 || *e || !fault_fast(as, &as->cpu[0], v, va, is_write, e, touch_batch_as == as)) {
                int rc = handle_fault(as, v, va, is_write, err);
                if (rc)
                    return rc;
                continue;
            }
            /* the fast fault wrote the PTE: the retried access's walk finds it */
            ent = *e;
            as->st.page_walks++;
        }
        if (level != as->dm_level || (ent & ~as->pa_mask[level]) != as->dm_attr) {
            /* Decode only what the TLB entry needs (no entry_pa / region lookups as
             * translate does), and remember it for the next leaf with the same bits. */
            struct dmamap_xlate d;
            as->dm_valid = (uint8_t)!!a->is_valid(a, ent, level);
            a->decode(a, ent, level, &d);
            as->dm_writable = (uint8_t)!!d.writable;
            as->dm_user = (uint8_t)!!d.user;
            as->dm_cacheable = a->cache_cacheable[d.cache];
            as->dm_device = a->cache_device[d.cache];
            as->dm_wc = (uint8_t)(d.cache == a->writecombine && !a->cache_cacheable[d.cache] &&
                                  !a->cache_device[d.cache]);
            as->dm_attr = ent & ~as->pa_mask[level];
            as->dm_level = level;
            as->dm_fast = level == 0 && as->dm_valid && (as->kernel || as->dm_user) ? as->dm_attr : ~0ULL;
        }
        if (!as->dm_valid) {   /* non-present but not none: PROT_NONE */
            v = vma_find(as, va);
            if (!v)
                return dmamap_fail(err, DMAMAP_ESEGV, va, "access to %#llx, which no VMA maps (SIGSEGV)",
                                   (unsigned long long)va);
            return dmamap_fail(err, DMAMAP_EPROT, va, "access to PROT_NONE page at %#llx (SIGSEGV)",
                               (unsigned long long)va);
        }
        uint64_t pa = ((ent & as->pa_mask[level]) >> as->pfn_shift << PAGE_SHIFT) +
                      (va & ((1ULL << (PAGE_SHIFT + 9 * level)) - 1));
        if (!as->kernel && !as->dm_user)
            return dmamap_fail(err, DMAMAP_EPROT, va, "user access to kernel-only page at %#llx",
                               (unsigned long long)va);
        if (is_write && !as->dm_writable) {
            v = vma_find(as, va);
            if (v && (v->flags & DMAMAP_VM_WRITE) && !(v->flags & DMAMAP_VM_SHARED)) {
                uint64_t pfn = pa >> PAGE_SHIFT;
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
            if (v && v->wrnotify && (v->flags & (DMAMAP_VM_WRITE | DMAMAP_VM_SHARED)) ==
                                        (DMAMAP_VM_WRITE | DMAMAP_VM_SHARED)) {
                int rc = wp_page_shared(as, v, va, err);
                if (rc)
                    return rc;
                continue;
            }
            return dmamap_fail(err, DMAMAP_EPROT, va, "write to read-only page at %#llx (SIGSEGV)",
                               (unsigned long long)va);
        }
        int region;
        uint8_t *host = dmamap_host_page(as->m, pa & PAGE_MASK, &region);
        tlb_fill(as, t, vpn, pa & PAGE_MASK, host, region);
        *out = t;
        return 0;
    }
    return dmamap_fail(err, DMAMAP_ESIGBUS, va, "fault at %#llx did not resolve", (unsigned long long)va);
}

static int pio_trap(dmamap_as *as, uint64_t va, int size, int is_write, uint64_t *value, struct dmamap_err *err)
{
    struct vma *v = vma_find(as, va);
    as->st.pio_traps++;
    uint64_t off = va - v->start;
    if (off + (uint64_t)size > v->pio_count)
        return dmamap_fail(err, DMAMAP_EIOFAULT, va, "port access at %#llx runs past the %llu ports mapped",
                           (unsigned long long)va, (unsigned long long)v->pio_count);
    return dmamap_port_access(as->m, v->pio_port + off, size, is_write, value, err);
}

static int check_device_align(dmamap_as *as, const struct tlb_entry *t, uint64_t va, int size,
                              struct dmamap_err *err)
{
    if (t->device && as->m->arch->device_align_fault && (va & (uint64_t)(size - 1)))
        return dmamap_fail(err, DMAMAP_EALIGN, va, "unaligned %d-byte access to Device memory at %#llx "
                           "(alignment fault)", size, (unsigned long long)va);
    return 0;
}

/* One access of `size` (1/2/4/8) bytes within a page. */
int access_one(dmamap_as *as, uint64_t va, int size, int is_write, uint64_t *value, struct dmamap_err *err)
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
        if (t->cacheable && (rc = dmamap_dma_own_check(as->m, pa, (uint64_t)size, is_write, err)))
            return rc;
        if (t->cacheable && as->m->cache) {
            if (is_write)
                dmamap_cache_write(as->m, va, pa, h, value, (uint64_t)size);
            else
                dmamap_cache_read(as->m, va, pa, h, value, (uint64_t)size);
        } else if (t->wc && as->m->wcb_n) {
            if (is_write) {
                dmamap_wcb_store(as->m, pa, value, (uint64_t)size);
            } else {
                dmamap_wcb_drain_all(as->m);   /* a WC load sees the CPU's own stores */
                memcpy(value, h, (size_t)size);
            }
        } else if (is_write) {
            memcpy(h, value, (size_t)size);
        } else {
            memcpy(value, h, (size_t)size);
        }
        if (!t->cacheable && !t->wc)
            dmamap_wcb_drain_all(as->m);   /* an uncached access drains the WC buffer, after itself */
        return 0;
    }
    rc = dmamap_io_access(as->m, pa, size, is_write, value, err);
    dmamap_wcb_drain_all(as->m);
    return rc;
}

/* The part of one page an access covers, with the page resolved to t (NULL: trapped ports). */
static int access_chunk(dmamap_as *as, struct tlb_entry *t, uint64_t va, uint8_t *b, uint64_t chunk, int is_write,
                        struct dmamap_err *err)
{
    int rc;
    if (t && t->host && !t->device) {
        uint8_t *h = t->host + (va & (PAGE_SIZE - 1));
        uint64_t pa = t->pa_page | (va & (PAGE_SIZE - 1));
        if (t->cacheable && (rc = dmamap_dma_own_check(as->m, pa, chunk, is_write, err)))
            return rc;
        if (t->cacheable && as->m->cache) {
            if (is_write)
                dmamap_cache_write(as->m, va, pa, h, b, chunk);
            else
                dmamap_cache_read(as->m, va, pa, h, b, chunk);
        } else if (t->wc && as->m->wcb_n) {
            if (is_write) {
                dmamap_wcb_store(as->m, pa, b, chunk);
            } else {
                dmamap_wcb_drain_all(as->m);
                memcpy(b, h, chunk);
            }
        } else if (is_write) {
            memcpy(h, b, chunk);
        } else {
            memcpy(b, h, chunk);
        }
        if (!t->cacheable && !t->wc)
            dmamap_wcb_drain_all(as->m);
        return 0;
    }
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
    return 0;
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
        if ((rc = access_chunk(as, t, va, b, chunk, is_write, err)))
            return rc;
        b += chunk;
        va += chunk;
        n -= chunk;
    }
    return 0;
}

/* The checks every CPU access entry point makes before it takes the lock. */
static int access_args(dmamap_as *as, uint64_t va, const void *buf, uint64_t n, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, va);
    if (n && !buf)
        return dmamap_fail(err, DMAMAP_EINVAL, va, "NULL buffer");
    if (va + n < va)
        return dmamap_fail(err, DMAMAP_ESEGV, va, "access %#llx+%#llx wraps the address space (SIGSEGV)",
                           (unsigned long long)va, (unsigned long long)n);
    return 0;
}

int dmamap_access(dmamap_as *as, uint64_t va, void *buf, uint64_t n, int is_write, struct dmamap_err *err)
{
    int rc0 = access_args(as, va, buf, n, err);
    if (rc0)
        return rc0;
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

/* ---- Register accesses for the Python fast path ----
 * One call per access, the value as the return: widths 1, 2 and 4 return the
 * value or a negative DMAMAP_E* code; width 8 returns the value, and ~0 is
 * ambiguous until dmamap_fast_err()->code says whether it failed.  The error
 * record is per thread, as errno.  A callback exception the binding stashed
 * during the access (dmamap_fast_pending) fails the access even where the core
 * finished it, so the binding need not look at its own state on success. */
static _Thread_local struct dmamap_err fast_err;
static _Thread_local int fast_pending;

struct dmamap_err *dmamap_fast_err(void)
{
    return &fast_err;
}

void dmamap_fast_pending(int pending)
{
    fast_pending = pending;
}

/* The floor under the fast path: a call with the same arguments that does nothing. */
int64_t dmamap_fast_nop(dmamap_as *as, uint64_t va)
{
    return (int64_t)(va & 0xff) + (as != NULL);
}

/* A fast-path call's result: a callback exception stashed during it fails
 * it, and a failure's record (err, which is copied only then) becomes the
 * thread's. */
static inline int fast_finish(int rc, const struct dmamap_err *err)
{
    if (fast_pending && !rc) {
        fast_err = *err;
        fast_err.code = DMAMAP_EHANDLER;
        return DMAMAP_EHANDLER;
    }
    if (rc)
        fast_err = *err;
    return rc;
}

static inline int fast_rw(dmamap_as *as, uint64_t va, int size, int is_write, uint64_t *v)
{
    struct dmamap_err err;
    return fast_finish(rw_n(as, va, size, is_write, v, &err), &err);
}

static inline int64_t fast_read(dmamap_as *as, uint64_t va, int size)
{
    uint64_t v = 0;
    int rc = fast_rw(as, va, size, 0, &v);
    return rc ? (int64_t)rc : (int64_t)v;
}

int64_t dmamap_read8_fast(dmamap_as *as, uint64_t va) { return fast_read(as, va, 1); }
int64_t dmamap_read16_fast(dmamap_as *as, uint64_t va) { return fast_read(as, va, 2); }
int64_t dmamap_read32_fast(dmamap_as *as, uint64_t va) { return fast_read(as, va, 4); }

uint64_t dmamap_read64_fast(dmamap_as *as, uint64_t va)
{
    uint64_t v = 0;
    if (fast_rw(as, va, 8, 0, &v))
        return ~0ULL;
    if (v == ~0ULL)
        fast_err.code = 0;   /* the value, not a failure */
    return v;
}

int dmamap_write8_fast(dmamap_as *as, uint64_t va, uint8_t value)
{
    uint64_t v = value;
    return fast_rw(as, va, 1, 1, &v);
}

int dmamap_write16_fast(dmamap_as *as, uint64_t va, uint16_t value)
{
    uint64_t v = value;
    return fast_rw(as, va, 2, 1, &v);
}

int dmamap_write32_fast(dmamap_as *as, uint64_t va, uint32_t value)
{
    uint64_t v = value;
    return fast_rw(as, va, 4, 1, &v);
}

int dmamap_write64_fast(dmamap_as *as, uint64_t va, uint64_t value)
{
    return fast_rw(as, va, 8, 1, &value);
}

/* The register access of a caller that must not wait: done here (1) when it
 * is a naturally aligned TLB hit, on slot 0's TLB, on memory the CPU reaches
 * directly (RAM or SRAM outside the cache model, no write-combining buffer or
 * device-owned buffer to honour), with slot 0 free and no writer in; counted
 * as the general path counts a TLB hit.  Otherwise nothing is changed (0)
 * and the caller makes the ordinary call, which may wait and call out: the
 * Python binding calls this holding the GIL, which a device or fault callback
 * of another thread may be waiting for while holding the address-space lock. */
int dmamap_access_try(dmamap_as *as, uint64_t va, int size, int is_write, uint64_t *value)
{
    if (!as || !value || (size != 1 && size != 2 && size != 4 && size != 8) || (va & (uint64_t)(size - 1)) ||
        fast_pending)
        return 0;
    struct as_cpu *c = as_read_try_enter(as);
    if (!c)
        return 0;
    dmamap_machine *m = as->m;
    uint64_t vpn = va >> PAGE_SHIFT;
    const struct tlb_entry *t = &c->tlb[vpn % TLB_SIZE];
    int ok = t->vpn == vpn && t->host && !(t->cacheable && m->cache) && (!is_write || t->writable) &&
             !atomic_load_explicit(&m->nown, memory_order_relaxed) &&
             !atomic_load_explicit(&m->wcb_n, memory_order_relaxed) && !as_dead(as);
    if (ok) {
        c->st->tlb_hits++;
        uint8_t *h = t->host + (va & (PAGE_SIZE - 1));   /* emulated RAM: relaxed atomics, as touches use */
        switch (size) {
        case 1:
            if (is_write)
                __atomic_store_n(h, (uint8_t)*value, __ATOMIC_RELAXED);
            else
                *value = __atomic_load_n(h, __ATOMIC_RELAXED);
            break;
        case 2:
            if (is_write)
                __atomic_store_n((uint16_t *)h, (uint16_t)*value, __ATOMIC_RELAXED);
            else
                *value = __atomic_load_n((uint16_t *)h, __ATOMIC_RELAXED);
            break;
        case 4:
            if (is_write)
                __atomic_store_n((uint32_t *)h, (uint32_t)*value, __ATOMIC_RELAXED);
            else
                *value = __atomic_load_n((uint32_t *)h, __ATOMIC_RELAXED);
            break;
        default:
            if (is_write)
                __atomic_store_n((uint64_t *)h, *value, __ATOMIC_RELAXED);
            else
                *value = __atomic_load_n((uint64_t *)h, __ATOMIC_RELAXED);
        }
    }
    as_read_exit(as, c);
    return ok;
}

/* ---- Zero-copy views (pin_user_pages with FOLL_PIN, then the host memory) ----
 * [va, va+n) is resolved as an access would (faults, permissions, COW broken
 * for a writable view) and pinned page by page when the CPU would reach it
 * with no emulation between: host RAM with a page descriptor, through a
 * cacheable mapping on a machine without the cache model, not Device memory,
 * physically contiguous, and not owned by a device (streaming DMA).  Otherwise
 * *refused is set, err->msg says why, nothing is pinned and 0 is returned. */
static int view_refuse(int *refused, struct dmamap_err *err, uint64_t va, const char *why)
{
    *refused = 1;
    dmamap_fail(err, DMAMAP_EINVAL, va, "no zero-copy view of %#llx: %s", (unsigned long long)va, why);
    if (err)
        err->code = 0;
    return 0;
}

/* VMAs cover [va, va+n) end to end, or ESEGV at the first gap (lock held). */
static int span_check(dmamap_as *as, uint64_t va, uint64_t n, struct dmamap_err *err)
{
    for (uint64_t cur = va; cur - va < n;) {
        struct vma *v = vma_find(as, cur);
        if (!v)
            return dmamap_fail(err, DMAMAP_ESEGV, cur, "access to %#llx, which no VMA maps (SIGSEGV)",
                               (unsigned long long)cur);
        cur = v->end;
    }
    return 0;
}

static int view_check(dmamap_as *as, uint64_t va, uint64_t n, int is_write, uint8_t **host_out, uint64_t *pa_out,
                      int *refused, struct dmamap_err *err)
{
    uint64_t pa0 = 0;
    uint8_t *host0 = NULL;
    for (uint64_t off = 0; off < n;) {
        uint64_t a = va + off;
        struct tlb_entry *t;
        int rc = resolve(as, a, is_write, &t, err);
        if (rc)
            return rc;
        if (!t || !t->host || t->region != DMAMAP_MEM_RAM)
            return view_refuse(refused, err, a, "not RAM (MMIO, ports or SRAM: no page descriptor to pin)");
        if (t->device)
            return view_refuse(refused, err, a, "Device memory (every access is emulated)");
        if (!t->cacheable)
            return view_refuse(refused, err, a, "an uncached or write-combining mapping (the access path "
                               "orders and drains; use readinto/write)");
        if (as->m->cache)
            return view_refuse(refused, err, a, "a cacheable mapping on a non-coherent machine (the cache "
                               "model sits between the CPU and memory; use readinto/write)");
        uint64_t pa = t->pa_page | (a & (PAGE_SIZE - 1));
        uint8_t *h = t->host + (a & (PAGE_SIZE - 1));
        if (off == 0) {
            pa0 = pa;
            host0 = h;
        } else if (pa != pa0 + off || h != host0 + off) {
            return view_refuse(refused, err, a, "the range is not physically contiguous");
        }
        off += PAGE_SIZE - (a & (PAGE_SIZE - 1));
    }
    int rc = dmamap_dma_own_check(as->m, pa0, n, is_write, err);
    if (rc)
        return rc;
    *host_out = host0;
    *pa_out = pa0;
    return 0;
}

/* The pages of [pa, pa+n) (n > 0): 1 with *idx, the first one's RAM page
 * index, and *count, when they are all RAM; else 0. */
static int view_pages(dmamap_machine *m, uint64_t pa, uint64_t n, uint64_t *idx, uint64_t *count)
{
    uint64_t first = pa >> PAGE_SHIFT;
    *count = ((pa + n - 1) >> PAGE_SHIFT) - first + 1;
    *idx = first - m->ram_base_pfn;
    return dmamap_pfn_is_ram(m, first) && dmamap_pfn_is_ram(m, first + *count - 1);
}

/* Take one reference on each page of [pa, pa+n), a reference-lock group at a
 * time; all or none. */
static int view_pin(dmamap_machine *m, uint64_t pa, uint64_t n, int *refused, struct dmamap_err *err)
{
    uint64_t idx, count;
    if (!view_pages(m, pa, n, &idx, &count))
        return view_refuse(refused, err, pa, "a free page (no reference to pin)");   /* (not RAM) */
    struct page_desc *p = &m->pages[idx];
    for (uint64_t j = 0, k; j < count; j += k) {
        k = pref_span(idx + j, count - j);
        uint64_t got = page_get_run(m, &p[j], k, DMAMAP_PG_TABLE, PAGE_REF1);
        if (got < k) {
            int table = page_refs(&p[j + got]) > 0;   /* (held, so refused for its flag) */
            page_drop_run(m, p, idx, j + got, PAGE_REF1);
            return view_refuse(refused, err, (pa & PAGE_MASK) + ((j + got) << PAGE_SHIFT),
                               table ? "a page-table page" : "a free page (no reference to pin)");
        }
    }
    return 0;
}

int dmamap_view_pin(dmamap_as *as, uint64_t va, uint64_t n, int is_write, uint8_t **host_out, uint64_t *pa_out,
                    int *refused, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, va);
    if (!host_out || !pa_out || !refused)
        return dmamap_fail(err, DMAMAP_EINVAL, va, "NULL out pointer");
    *refused = 0;
    if (n == 0)
        return dmamap_fail(err, DMAMAP_EINVAL, va, "zero-length view");
    if (va + n < va)
        return dmamap_fail(err, DMAMAP_ESEGV, va, "view %#llx+%#llx wraps the address space (SIGSEGV)",
                           (unsigned long long)va, (unsigned long long)n);
    AS_LOCK(as, err, va);
    int rc = span_check(as, va, n, err);   /* a gap refuses it before anything is faulted in */
    if (!rc)
        rc = view_check(as, va, n, is_write, host_out, pa_out, refused, err);
    if (!rc && !*refused)
        rc = view_pin(as->m, *pa_out, n, refused, err);
    return as_unlock(as, rc, err);
}

/* Drop a view's references; a page whose last reference this was (an
 * anonymous page unmapped under the view) is freed, as unpin_user_pages. */
void dmamap_view_unpin(dmamap_machine *m, uint64_t pa, uint64_t n)
{
    if (!m || m->closed || n == 0)
        return;
    uint64_t idx, count;
    if (view_pages(m, pa, n, &idx, &count))
        page_drop_run(m, &m->pages[idx], idx, count, PAGE_REF1);
}

/* ---- Bulk accesses (read, readinto, write from Python) ----
 * As dmamap_access, but a large one is refused up front unless VMAs cover the
 * range end to end (so a refused access faults nothing in), and pages the CPU
 * reaches with a plain copy (cacheable RAM with no cache model between) are
 * gathered into runs of contiguous host memory, copied with one libc memmove
 * each; whole-line cacheable pages on a machine with a cache model gather
 * into one dmamap_cache_run (cache.c), as exact as the page-by-page model;
 * anything else goes through access_chunk page by page, as dmamap_access.  A
 * run is copied before anything that could call back or fail (a fault, a
 * refused page), so every byte moves in the order, and with the partial effect
 * on failure, of dmamap_access. */
#define BULK_SMALL (64ULL << 10)
static void *(*volatile bulk_move)(void *, const void *, size_t) = memmove;   /* libc's, never inlined */

struct bulk_run {
    uint8_t *host, *buf;
    uint64_t len;
};

static void plain_flush(struct bulk_run *r, int is_write)
{
    if (!r->len)
        return;
    if (is_write)
        bulk_move(r->host, r->buf, r->len);
    else
        bulk_move(r->buf, r->host, r->len);
    r->len = 0;
}

/* Cacheable pages on a machine with a cache model gather as well, for one
 * dmamap_cache_run (which knows which lines the run evicts again itself). */
#define CACHE_RUN_MAX 4096
struct cache_run {
    struct dmamap_cache_seg *seg;
    size_t n;
};

static void cache_flush(dmamap_machine *m, struct cache_run *c, int is_write)
{
    if (c->n)
        dmamap_cache_run(m, c->seg, c->n, is_write);
    c->n = 0;
}

/* Move both runs gathered so far (before anything that could call back or fail). */
static void runs_flush(dmamap_machine *m, struct bulk_run *r, struct cache_run *c, int is_write)
{
    plain_flush(r, is_write);
    cache_flush(m, c, is_write);
}

/* Whether an access at va would resolve with a walk alone (no fault, no copy
 * on write): a leaf is present, and writable for a write (known when its
 * attribute bits are the ones resolve decoded last; otherwise: maybe not). */
static int mapped_for(dmamap_as *as, uint64_t va, int is_write)
{
    uint64_t *e;
    int level;
    if (!dmamap_pt_walk(as, va, &e, &level))
        return 0;
    return !is_write || (level == as->dm_level && (*e & ~as->pa_mask[level]) == as->dm_attr && as->dm_valid &&
                         as->dm_writable);
}

/* A TLB miss inside a run (no device-owned buffer), when the walk cache knows
 * the leaf table and the PTE maps cacheable memory at `next`, the run's
 * continuation (and, in a run through the cache model, at physical address
 * next_pa; ~0: any): resolve's walk and TLB fill without its calls, counted as
 * resolve counts them (a miss, a walk).  0, having changed nothing, for the
 * general path. */
static int bulk_miss_fast(dmamap_as *as, struct tlb_entry *t, uint64_t va, int is_write, const uint8_t *next,
                          uint64_t next_pa)
{
    uint64_t table;
    if (!va_in(as, va) || !leaf_cached(as, va, &table))
        return 0;
    uint64_t ent = dmamap_ram_table(as->m, table)[pt_index(va, 0)], pa;
    int region;
    uint8_t *host = as->dm_cacheable && !as->dm_device ? leaf_fast_host(as, ent, is_write, &pa, &region) : NULL;
    uint64_t off = va & (PAGE_SIZE - 1);
    if (!host || host + off != next || (next_pa != ~0ULL && (pa | off) != next_pa))
        return 0;
    as->st.tlb_misses++;
    as->st.page_walks++;
    as->cpu[0].wct = va >> (PAGE_SHIFT + 9);   /* as the walk leaves it */
    as->cpu[0].wcp = table;
    tlb_fill(as, t, va >> PAGE_SHIFT, pa, host, region);
    return 1;
}

static int access_bulk_locked(dmamap_as *as, uint64_t va, uint8_t *b, uint64_t n, int is_write,
                              struct dmamap_err *err)
{
    struct bulk_run run = {0};
    struct cache_run crun = {0};
    int rc = 0;
    while (n) {
        uint64_t off = va & (PAGE_SIZE - 1);
        uint64_t chunk = PAGE_SIZE - off < n ? PAGE_SIZE - off : n;
        uint64_t vpn = va >> PAGE_SHIFT;
        struct tlb_entry *t = &as->tlb[vpn % TLB_SIZE];
        int hit = t->vpn == vpn;
        /* where the run gathered so far continues: plain memory's, or the cache model's last segment */
        struct dmamap_cache_seg *last = as->m->cache && crun.n ? &crun.seg[crun.n - 1] : NULL;
        const uint8_t *next = last ? last->host + last->n : as->m->cache ? NULL : run.len ? run.host + run.len : NULL;
        uint64_t next_pa = last ? last->pa + last->n : ~0ULL;
        if (next && !as->m->nown && !(last && (chunk & (CACHE_LINE - 1))) &&
            (hit ? t->host && t->host + off == next && (next_pa == ~0ULL || (t->pa_page | off) == next_pa) &&
                   t->cacheable && !t->device && (!is_write || t->writable)
                 : bulk_miss_fast(as, t, va, is_write, next, next_pa))) {
            /* the common case, kept short: a TLB hit (or a miss the walk cache answers) that
             * continues the run of plain memory or the cache model's segment (what resolve and
             * the branches below do for it, less the calls) */
            as->st.tlb_hits += hit;   /* (bulk_miss_fast counted its miss and walk) */
            if (last)
                last->n += chunk;
            else
                run.len += chunk;
            b += chunk;
            va += chunk;
            n -= chunk;
            continue;
        }
        /* a TLB miss may fault, and a fault may call back: copy first, unless
         * the page tables already allow the access (a walk, nothing more) */
        if ((t->vpn != vpn || (is_write && !t->writable)) && !mapped_for(as, va, is_write))
            runs_flush(as->m, &run, &crun, is_write);
        rc = resolve(as, va, is_write, &t, err);
        if (rc) {
            runs_flush(as->m, &run, &crun, is_write);
            goto out;
        }
        if (t && t->host && !t->device && t->cacheable && as->m->cache && !(off & (CACHE_LINE - 1)) &&
            !(chunk & (CACHE_LINE - 1))) {
            if ((rc = dmamap_dma_own_check(as->m, t->pa_page | off, chunk, is_write, err))) {
                runs_flush(as->m, &run, &crun, is_write);
                goto out;
            }
            plain_flush(&run, is_write);
            if (!crun.seg && !(crun.seg = malloc(CACHE_RUN_MAX * sizeof *crun.seg))) {
                if ((rc = access_chunk(as, t, va, b, chunk, is_write, err)))
                    goto out;
            } else {
                if (crun.n == CACHE_RUN_MAX)
                    cache_flush(as->m, &crun, is_write);
                crun.seg[crun.n++] = (struct dmamap_cache_seg){va, t->pa_page | off, chunk, t->host + off, b};
            }
        } else if (t && t->host && !t->device && t->cacheable && !as->m->cache) {
            uint8_t *h = t->host + off;
            if ((rc = dmamap_dma_own_check(as->m, t->pa_page | off, chunk, is_write, err))) {
                runs_flush(as->m, &run, &crun, is_write);
                goto out;
            }
            cache_flush(as->m, &crun, is_write);
            if (run.len && h != run.host + run.len)
                runs_flush(as->m, &run, &crun, is_write);
            if (!run.len) {
                run.host = h;
                run.buf = b;
            }
            run.len += chunk;
        } else {
            runs_flush(as->m, &run, &crun, is_write);
            if ((rc = access_chunk(as, t, va, b, chunk, is_write, err)))
                goto out;
        }
        b += chunk;
        va += chunk;
        n -= chunk;
    }
    runs_flush(as->m, &run, &crun, is_write);
out:
    free(crun.seg);
    return rc;
}

int dmamap_access_bulk(dmamap_as *as, uint64_t va, void *buf, uint64_t n, int is_write, struct dmamap_err *err)
{
    int rc0 = access_args(as, va, buf, n, err);
    if (rc0)
        return rc0;
    AS_LOCK(as, err, va);
    /* A large access needs VMAs end to end, or nothing is touched: the first gap
     * refuses it whole.  A small one is an access like any (a gap is found by
     * the TLB lookup and walk, as the CPU finds it). */
    int rc = n > BULK_SMALL ? span_check(as, va, n, err) : 0;
    if (!rc)
        rc = access_bulk_locked(as, va, buf, n, is_write, err);
    return as_unlock(as, rc, err);
}

/* dmamap_access_bulk for the Python fast path (dmamap/_binding/_cpu.c), which
 * calls it without a cffi call's cost: the error, if any, in the thread's
 * record (dmamap_fast_err), and a callback exception the binding stashed
 * during the access failing it, as for the register accesses above. */
int dmamap_access_bulk_fast(dmamap_as *as, uint64_t va, void *buf, uint64_t n, int is_write)
{
    struct dmamap_err err;
    return fast_finish(dmamap_access_bulk(as, va, buf, n, is_write, &err), &err);
}
