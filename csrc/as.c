/* Address spaces (mm_struct): creation, closing (safe under racing calls) and
 * freeing, and the entry points' shared epilogue. */
#include <limits.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>
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

/* ---- the address-space lock (see struct as_lock) ---- */
static __thread char thread_token;   /* its address names this thread */

/* The writer waiting for the readers to leave sleeps on the reader count
 * (a futex): the last reader out wakes it. */
#define SPIN_MAX 4096   /* about the time a reader takes to reach its next pause point */

static void readers_wait(struct as_lock *l)
{
    int r;
    for (int spins = 0; (r = atomic_load(&l->readers)) != 0; spins++) {
        if (spins < SPIN_MAX)   /* readers pause within a run of touches: spin first */
            cpu_relax();
        else
            syscall(SYS_futex, &l->readers, FUTEX_WAIT_PRIVATE, r, NULL, NULL, 0);
    }
}

static void reader_out(struct as_lock *l)
{
    if (atomic_fetch_sub(&l->readers, 1) == 1 && atomic_load(&l->writers))
        syscall(SYS_futex, &l->readers, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

void as_xlock(struct as_lock *l)
{
    pthread_mutex_lock(&l->mu);
    if (l->depth++)
        return;
    atomic_store_explicit(&l->owner, (uintptr_t)&thread_token, memory_order_relaxed);
    atomic_fetch_add(&l->writers, 1);
    readers_wait(l);   /* readers pause at their next step */
}

void as_xunlock(struct as_lock *l)
{
    if (!--l->depth) {
        atomic_store_explicit(&l->owner, 0, memory_order_relaxed);
        atomic_fetch_sub(&l->writers, 1);
    }
    pthread_mutex_unlock(&l->mu);
}

/* Count this thread in as a reader, waiting for any writer to finish first. */
static void read_lock(struct as_lock *l)
{
    for (;;) {
        atomic_fetch_add(&l->readers, 1);
        if (!atomic_load(&l->writers))
            return;
        reader_out(l);
        for (int spins = 0; spins < SPIN_MAX && atomic_load_explicit(&l->writers, memory_order_relaxed); spins++)
            cpu_relax();   /* writers are mostly short (one VMA): spin before sleeping on the lock */
        if (atomic_load_explicit(&l->writers, memory_order_relaxed)) {
            pthread_mutex_lock(&l->mu);   /* wait for the writer */
            pthread_mutex_unlock(&l->mu);
        }
    }
}

static void cpu_init(dmamap_as *as, int k)
{
    struct as_cpu *c = &as->cpu[k];
    c->wct = ~0ULL;
    c->wcp = 0;
    c->last_vma = -1;
    if (k == 0) {
        c->tlb = as->tlb;
        c->st = &as->st;
        return;
    }
    c->tlb = c->tlb_own;
    c->st = &c->st_own;
    for (int i = 0; i < TLB_SIZE; i++)
        c->tlb_own[i].vpn = ~0ULL;
}

/* Enter a touch loop in reader mode: the CPU slot it runs on, with the lock
 * held shared; NULL when it must take the lock exclusively instead (this
 * thread holds it already, from a fault callback, or every slot is busy). */
struct as_cpu *as_read_enter(dmamap_as *as)
{
    if (atomic_load_explicit(&as->lock.owner, memory_order_relaxed) == (uintptr_t)&thread_token)
        return NULL;
    for (int k = 0; k < AS_CPUS; k++) {
        struct as_cpu *c = &as->cpu[k];
        int free = 0;
        if (atomic_load_explicit(&c->busy, memory_order_relaxed) ||
            !atomic_compare_exchange_strong(&c->busy, &free, 1))
            continue;
        read_lock(&as->lock);
        c->used = 1;
        return c;
    }
    return NULL;
}

/* Reader mode on slot 0 for a caller that must not wait (it holds a lock the
 * core's callbacks may need): NULL when the slot is taken, a writer is in or
 * waiting, or this thread holds the lock exclusively. */
struct as_cpu *as_read_try_enter(dmamap_as *as)
{
    struct as_cpu *c = &as->cpu[0];
    int free = 0;
    if (atomic_load_explicit(&as->lock.owner, memory_order_relaxed) == (uintptr_t)&thread_token ||
        atomic_load_explicit(&c->busy, memory_order_relaxed) || !atomic_compare_exchange_strong(&c->busy, &free, 1))
        return NULL;
    atomic_fetch_add(&as->lock.readers, 1);
    if (atomic_load(&as->lock.writers)) {
        as_read_exit(as, c);
        return NULL;
    }
    c->used = 1;
    return c;
}

/* Pause reader mode (a writer waits, or the general path is next): the
 * references taken ahead go back first. */
void as_read_pause(dmamap_as *as)
{
    reader_out(&as->lock);
}

/* Back to reader mode after a pause; 0, or DMAMAP_ECLOSED if the address
 * space was closed meanwhile (then not in reader mode). */
int as_read_resume(dmamap_as *as)
{
    read_lock(&as->lock);
    if (as_dead(as)) {
        reader_out(&as->lock);
        return DMAMAP_ECLOSED;
    }
    return 0;
}

void as_read_exit(dmamap_as *as, struct as_cpu *c)
{
    reader_out(&as->lock);
    atomic_store_explicit(&c->busy, 0, memory_order_release);
}

static void as_locks_destroy(dmamap_as *as)
{
    pthread_mutex_destroy(&as->lock.mu);
    for (int i = 0; i < AS_PTLS; i++)
        pthread_mutex_destroy(&as->ptl[i]);
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
    pthread_mutex_init(&as->lock.mu, &at);
    pthread_mutexattr_destroy(&at);
    pthread_mutexattr_init(&at);   /* a PTE lock is held for one run of faults: spin before sleeping */
    pthread_mutexattr_settype(&at, PTHREAD_MUTEX_ADAPTIVE_NP);
    for (int i = 0; i < AS_PTLS; i++)
        pthread_mutex_init(&as->ptl[i], &at);
    pthread_mutexattr_destroy(&at);
    for (int i = 0; i < TLB_SIZE; i++)
        as->tlb[i].vpn = ~0ULL;
    for (int k = 0; k < AS_CPUS; k++)
        cpu_init(as, k);
    if (dmamap_alloc_table_page(m, &as->root, err)) {
        as_locks_destroy(as);
        free(as);
        return NULL;
    }
    as->st.table_pages = 1;
    if (dmamap_pt_user_attach(as, err)) {
        dmamap_pt_free_all(as);
        as_locks_destroy(as);
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
            /* a touch loop on slot 0 whose resume after the general path finds
             * the space closed leaves what that path reserved ahead: give it back */
            fault_rsv_release(as, &as->cpu[0]);
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
    as_locks_destroy(as);
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
    /* and what touch loops counted on the other CPU slots (all counters) */
    uint64_t *sum = (uint64_t *)out;
    for (int k = 1; k < AS_CPUS; k++)
        for (size_t i = 0; i < sizeof *out / sizeof(uint64_t); i++)
            sum[i] += ((const uint64_t *)&as->cpu[k].st_own)[i];
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
