/* Address spaces (mm_struct): creation, closing (safe under racing calls) and
 * freeing, and the entry points' shared epilogue. */
#include <stdlib.h>
#include <string.h>
#include "internal.h"

/* ...and the epilogue: a call that failed because the address space or the
 * machine was closed under it (from a callback, or by another thread while
 * the machine retired its memory) says so, whatever it tripped over. */
int as_unlock(dmamap_as *as, int rc, struct dmamap_err *err)
{
    if (rc < 0 && rc != DMAMAP_ECLOSED && as_dead(as))
        rc = dmamap_fail(err, DMAMAP_ECLOSED, err ? err->addr : 0, "address space or machine was closed "
                         "during the call");
    UNLOCK(&as->lock);
    return rc;
}

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
    as->pfn_shift = m->arch->pfn_shift;
    for (int l = 0; l < m->arch->levels && l < MAX_LEVELS; l++)
        as->pa_mask[l] = m->arch->oa_mask & ~((1ULL << (as->pfn_shift + 9 * l)) - 1);
    as->special_bit = m->arch->set_special(0);
    as->va_lo = as->kernel ? m->arch->kern_lo : m->arch->user_lo;
    as->va_hi = as->kernel ? m->arch->kern_hi : m->arch->user_hi;
    as->dm_level = -1;
    as->dm_fast = ~0ULL;
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
    if (dmamap_pt_user_attach(as, err)) {
        dmamap_pt_free_all(as);
        pthread_mutex_destroy(&as->lock);
        free(as);
        return NULL;
    }
    return as;
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
        /* Marked closed only once torn down: a caller that sees it closed (a VMA no
         * longer live) may free what its mappings held, so no PTE may remain then. */
        dmamap_pt_user_detach(as);   /* no longer shares (or publishes) the kernel half */
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
        atomic_store_explicit(&as->closed, 1, memory_order_release);
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
    return as && as->m ? as->m->arch->root_value(as->root) : 0;
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
