/* CPU accesses through the software TLB: resolve (walk, fault, COW), reads and
 * writes of memory, MMIO and ports at the access's width, and touches. */
#include <string.h>
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
            return dmamap_fail(err, DMAMAP_EPROT, va, "write to read-only page at %#llx (SIGSEGV)",
                               (unsigned long long)va);
        }
        t->vpn = vpn;
        t->pa_page = pa & PAGE_MASK;
        t->host = dmamap_host_page(as->m, t->pa_page, &t->region);
        t->writable = as->dm_writable;
        t->user = as->dm_user;
        t->cacheable = as->dm_cacheable;
        t->device = as->dm_device;
        t->wc = as->dm_wc;
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
