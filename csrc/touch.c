/* Touches: one C call that accesses a byte at each of many addresses (a
 * stride or a list), as a benchmark or a driver's page walk does, with fast
 * paths for what the TLB or the walk cache answers, runs of read faults taken
 * in one loop, and the next block's loads issued ahead (touch_list). */
#include <string.h>
#include "internal.h"

/* Resolve a touch (a byte loaded, and stored back when is_write) that the
 * TLB, or a walk the walk cache answers with a leaf whose attribute bits were
 * decoded last time (after the fault path's fast case for a read), reaches
 * in memory the CPU accesses directly (RAM or SRAM outside the cache model):
 * the byte's host address, counted as the general path counts the access up
 * to the load; NULL, having changed nothing, for the general path to take it. */
static inline __attribute__((always_inline)) volatile uint8_t *touch_fast_at(dmamap_as *as, struct as_cpu *c,
                                                                             uint64_t va, int is_write)
{
    uint64_t vpn = va >> PAGE_SHIFT;
    struct tlb_entry *t = &c->tlb[vpn % TLB_SIZE];
    dmamap_machine *m = as->m;
    /* Streaming-DMA ownership checks and the write-combining buffer live on the general path. */
    if (atomic_load_explicit(&m->nown, memory_order_relaxed) || atomic_load_explicit(&m->wcb_n, memory_order_relaxed))
        return NULL;
    if (t->vpn == vpn) {
        if (!t->host || (t->cacheable && m->cache) || (is_write && !t->writable))
            return NULL;
        c->st->tlb_hits++;
    } else {
        uint64_t table;
        struct vma *v = NULL;
        if (!va_in(as, va))
            return NULL;
        if (!pt_leaf_cpu(as, c, va, 0, &table)) {   /* no leaf table yet: a fast fault's may be made */
            v = vma_find_cpu(as, c, va);
            if (is_write || !v || !(v->flags & DMAMAP_VM_READ) || !fault_fast_vma(v, 0) ||
                !pt_leaf_cpu(as, c, va, 1, &table))
                return NULL;
        }
        uint64_t *e = &dmamap_ram_table(m, table)[pt_index(va, 0)];
        uint64_t ent = __atomic_load_n(e, __ATOMIC_RELAXED);   /* another reader may install it */
        c->wct = va >> (PAGE_SHIFT + 9);   /* as the walk leaves it */
        c->wcp = table;
        if (!ent && !is_write) {   /* a read fault the fault path's fast case takes */
            v = v ? v : vma_find_cpu(as, c, va);
            if (!v || !(v->flags & DMAMAP_VM_READ) || !fault_fast(as, c, v, va, 0, e, 1))
                return NULL;
            ent = __atomic_load_n(e, __ATOMIC_RELAXED);   /* the retried access: if it cannot finish here, the general path walks again */
        }
        uint64_t pa;
        int region;
        uint8_t *host = as->dm_cacheable && m->cache ? NULL : leaf_fast_host(as, ent, is_write, &pa, &region);
        if (!host)
            return NULL;
        tlb_fill(as, t, vpn, pa, host, region);
        c->st->tlb_misses++;
        c->st->page_walks++;
    }
    return t->host + (va & (PAGE_SIZE - 1));
}
/* The whole touch, when touch_fast_at resolves it: 1 done, 0 not started. */
static inline __attribute__((always_inline)) int touch_fast(dmamap_as *as, struct as_cpu *c, uint64_t va, int is_write)
{
    volatile uint8_t *h = touch_fast_at(as, c, va, is_write);
    if (!h)
        return 0;
    /* Emulated RAM is shared between the emulated CPUs (threads in reader mode) as real
     * RAM is: their racing loads and stores are relaxed atomics, not C data races. */
    uint8_t v = __atomic_load_n(h, __ATOMIC_RELAXED);
    if (is_write) {   /* the store's TLB lookup hits the entry just used */
        c->st->tlb_hits++;
        __atomic_store_n(h, v, __ATOMIC_RELAXED);
    }
    return 1;
}

/* A run of read touches va + i * stride (i < n, stride a page multiple) that
 * are all faults the fast case takes, in one leaf table, VMA and chunk run:
 * each faults (PTE written, reference taken), fills its TLB entry and loads
 * its byte, in order, as touch_fast would one by one, with the checks that
 * hold for the whole run made once (and the bytes prefetched ahead).  Returns
 * the touches done; it stops (0: none) where the next touch is anything else,
 * which touch_fast or the general path then takes. */
static uint64_t touch_fault_run(dmamap_as *as, struct as_cpu *c, uint64_t va, uint64_t stride, uint64_t n)
{
    dmamap_machine *m = as->m;
    uint64_t vpn = va >> PAGE_SHIFT, table, run;
    if (!stride || (stride & (PAGE_SIZE - 1)) || c->tlb[vpn % TLB_SIZE].vpn == vpn || !va_in(as, va))
        return 0;
    struct vma *v = vma_find_cpu(as, c, va);
    if (!v || !(v->flags & DMAMAP_VM_READ) || !fault_fast_vma(v, 0) || !pt_leaf_cpu(as, c, va, 1, &table))
        return 0;
    uint64_t *tbl = dmamap_ram_table(m, table);
    uint64_t idx = (uint64_t)pt_index(va, 0), step = stride >> PAGE_SHIFT;
    if (__atomic_load_n(&tbl[idx], __ATOMIC_RELAXED))
        return 0;
    uint64_t pfn = fault_fast_pfn(v, va, &run);
    uint64_t base = fault_fast_leaf(as, v);
    if (pfn == ~0ULL || (base & ~as->pa_mask[0]) != as->dm_fast || (as->dm_cacheable && m->cache))
        return 0;   /* (an attribute not decoded yet: the single fault decodes it) */
    /* how far the run may go: this leaf table, the VMA, the chunk run, the touches */
    uint64_t cnt = (ENTRIES - idx + step - 1) / step, lim = (v->end - va + stride - 1) / stride;
    cnt = cnt < lim ? cnt : lim;
    lim = (run + step - 1) / step;
    cnt = cnt < lim ? cnt : lim;
    cnt = cnt < n ? cnt : n;
    uint64_t pa = pfn << PAGE_SHIFT, last = pa + (cnt - 1) * stride;
    int region;
    uint8_t *host = dmamap_host_page(m, pa, &region);
    if (!host || (region == DMAMAP_MEM_RAM ? last - (m->ram_base_pfn << PAGE_SHIFT) >= m->ram_pages << PAGE_SHIFT
                  : region != DMAMAP_MEM_SRAM || last - m->sram_base >= m->sram_size))
        return 0;   /* not all in the one RAM or SRAM region the fast lookups know */
    c->wct = va >> (PAGE_SHIFT + 9);   /* as the walk leaves it */
    c->wcp = table;
    uint64_t off = va & (PAGE_SIZE - 1), i;
    int page = v->fault_kind == DMAMAP_FAULT_PAGE;
    /* a PFN handler's run: fault_memtype_check's fast case, its range checked once */
    int mt_ok = v->mt_prot == v->prot && pa >= v->mt_lo && last + PAGE_SIZE <= v->mt_hi && last >= pa;
    uint8_t sink = 0;
    const struct tlb_entry tmpl = {.writable = as->dm_writable, .user = as->dm_user, .cacheable = as->dm_cacheable,
                                   .device = as->dm_device, .wc = as->dm_wc, .region = region};
    pthread_mutex_t *ptl = &as->ptl[ptl_of(table)];   /* the leaf table's PTE lock, for the run */
    LOCK(ptl);
    for (i = 0; i < TOUCH_AHEAD && i < cnt; i++)
        __builtin_prefetch(host + i * stride + off, 0, 3);
    for (i = 0; i < cnt; i++) {
        if (i + TOUCH_AHEAD < cnt)
            __builtin_prefetch(host + (i + TOUCH_AHEAD) * stride + off, 0, 3);
        uint64_t *e = &tbl[idx + i * step], p = pfn + i * step;
        struct tlb_entry *t = &c->tlb[(vpn + i * step) % TLB_SIZE];
        if (__atomic_load_n(e, __ATOMIC_RELAXED) || t->vpn == vpn + i * step)   /* mapped, or a stale TLB entry the touch would hit */
            break;
        if (page ? !rsv_take(c, p) && !fault_fast_take(as, c, v, p, run - i * step, 1)
                 : !mt_ok || v->mt_gen != atomic_load_explicit(&m->memtype_gen, memory_order_acquire) + 1)
            break;
        __atomic_store_n(e, base | (p << as->pfn_shift), __ATOMIC_RELAXED);
        *t = tmpl;
        t->vpn = vpn + i * step;
        t->pa_page = pa + i * stride;
        t->host = host + i * stride;
        sink ^= __atomic_load_n((const uint8_t *)(t->host + off), __ATOMIC_RELAXED);
    }
    (void)sink;
    __atomic_fetch_add(&table_desc(m, table)->table_used, (uint32_t)i, __ATOMIC_RELAXED);
    UNLOCK(ptl);
    c->st->ptes_written += i;
    c->st->faults += i;
    if (page)
        c->st->faults_page += i;
    else
        c->st->faults_pfn += i;
    c->st->tlb_misses += i;
    c->st->page_walks += i;   /* each retried access's walk finds its PTE */
    return i;
}

__thread const dmamap_as *touch_batch_as;

/* A touch loop's hold of the address space: in reader mode on a CPU slot of
 * its own (the lock shared, so that loops on other threads run alongside), or
 * exclusively on slot 0 (nested in a fault callback of this thread, or every
 * slot busy). */
struct touch_ctx {
    dmamap_as *as;
    struct as_cpu *c;
    int slot;        /* owns a slot (reader mode used) */
    int reader;      /* in reader mode now */
    const dmamap_as *prev_batch;
};

static int touch_begin(dmamap_as *as, struct touch_ctx *t, uint64_t va, struct dmamap_err *err)
{
    t->as = as;
    t->c = as_read_enter(as);
    t->slot = t->reader = t->c != NULL;
    if (!t->slot) {
        AS_LOCK(as, err, va);
        t->c = &as->cpu[0];
    } else if (as_dead(as)) {
        as_read_exit(as, t->c);
        return dmamap_fail(err, DMAMAP_ECLOSED, va, "address space or machine is closed");
    }
    t->prev_batch = touch_batch_as;
    touch_batch_as = t->c == &as->cpu[0] ? as : NULL;   /* general-path faults reserve ahead on slot 0 */
    return 0;
}

static int touch_end(struct touch_ctx *t, int rc, struct dmamap_err *err)
{
    dmamap_as *as = t->as;
    if (t->reader || !t->slot)   /* (out of reader mode they went back at the pause) */
        fault_rsv_release(as, t->c);
    touch_batch_as = t->prev_batch;
    if (!t->slot)
        return as_unlock(as, rc, err);
    if (t->reader)
        as_read_pause(as);
    atomic_store_explicit(&t->c->busy, 0, memory_order_release);
    if (rc < 0 && rc != DMAMAP_ECLOSED && as_dead(as))
        rc = dmamap_fail(err, DMAMAP_ECLOSED, err ? err->addr : 0, "address space or machine was closed "
                         "during the call");
    return rc;
}

/* Reader mode paused while a writer runs (its references taken ahead given
 * back first); ECLOSED if the writer closed the address space. */
static int touch_yield(struct touch_ctx *t, uint64_t va, struct dmamap_err *err)
{
    fault_rsv_release(t->as, t->c);
    as_read_pause(t->as);
    t->reader = 0;
    if (as_read_resume(t->as))
        return dmamap_fail(err, DMAMAP_ECLOSED, va, "address space closed during the touch at %#llx",
                           (unsigned long long)va);
    t->reader = 1;
    return 0;
}

/* A touch by the general path (touch_fast first where the caller loops),
 * with the lock held exclusively: a reader leaves reader mode for it. */
static __attribute__((noinline)) int touch_slow(struct touch_ctx *t, uint64_t va, int is_write,
                                                struct dmamap_err *err)
{
    dmamap_as *as = t->as;
    fault_rsv_release(as, t->c);   /* the general path may call out: no references held ahead */
    if (t->reader) {
        as_read_pause(as);
        t->reader = 0;
        LOCK(&as->lock);
    }
    uint64_t v = 0;
    int rc = as_dead(as) ? dmamap_fail(err, DMAMAP_ECLOSED, va, "address space closed during the touch at "
                                       "%#llx", (unsigned long long)va)
                         : access_one(as, va, 1, 0, &v, err);
    if (!rc && is_write)
        rc = access_one(as, va, 1, 1, &v, err);
    if (t->slot) {
        if (rc)   /* the loop ends out of reader mode: what the general path reserved on slot 0 goes back */
            fault_rsv_release(as, &as->cpu[0]);
        UNLOCK(&as->lock);
        if (rc)
            return rc;
        if (as_read_resume(as))
            return dmamap_fail(err, DMAMAP_ECLOSED, va, "address space closed during the touch at %#llx",
                               (unsigned long long)va);
        t->reader = 1;
    }
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
    struct touch_ctx t;
    if ((rc = touch_begin(as, &t, va, err)))
        return rc;
    struct as_cpu *c = t.c;
    for (uint64_t i = 0; i < count && !rc;) {
        uint64_t a = va + i * stride;
        if (t.reader && as_writer_waiting(as) && (rc = touch_yield(&t, a, err)))
            break;
        uint64_t done = is_write ? 0 : touch_fault_run(as, c, a, stride, count - i);
        if (done) {
            i += done;
            continue;
        }
        if (!touch_fast(as, c, a, is_write))
            rc = touch_slow(&t, a, is_write, err);
        i++;
    }
    return touch_end(&t, rc, err);
}

/* touch_list prefetches in blocks of PF_BLOCK touches: the leaf entries of
 * the block two ahead, then the memory of the block one ahead (its entries in
 * cache by then).  An out-of-order CPU overlaps the misses of independent
 * accesses; the emulator's path per access is too long for the CPU to see the
 * next ones, so the misses of a block are started together, up front. */
#define PF_BLOCK 32
#define PF_RING (4 * PF_BLOCK)

struct pf_slot {
    const uint64_t *e;   /* va's entry (NULL: nothing to prefetch) */
    uint64_t va;
    int level;
};

/* Issue the loads of a block back to back, so that their misses are all in
 * flight together.  A load, not a prefetch hint: hints that miss the host
 * TLB may be dropped. */
static inline void pf_load_block(const uint8_t *const *addr, int n)
{
    uint8_t sink = 0;
    for (int k = 0; k < n; k++)
        sink ^= __atomic_load_n((const uint8_t *)addr[k], __ATOMIC_RELAXED);
    (void)sink;
}

/* Stage 0 for vas[lo, hi): find each leaf entry and load its line.  Reads
 * tables only through the walk cache and changes nothing the emulator shows. */
static void pf_entries(dmamap_as *as, struct as_cpu *c, const uint64_t *vas, uint64_t lo, uint64_t hi,
                       struct pf_slot *ring)
{
    const uint8_t *addr[PF_BLOCK];
    int n = 0;
    for (uint64_t i = lo; i < hi; i++) {
        struct pf_slot *p = &ring[i % PF_RING];
        uint64_t va = vas[i], table;
        p->va = va;
        p->e = NULL;
        if (!va_in(as, va) || c->tlb[(va >> PAGE_SHIFT) % TLB_SIZE].vpn == va >> PAGE_SHIFT)
            continue;
        if (leaf_cached_cpu(as, c, va, &table)) {
            p->e = &dmamap_ram_table(as->m, table)[pt_index(va, 0)];
            p->level = 0;
        } else if (c == &as->cpu[0]) {   /* (the peek reads slot 0's walk cache) */
            p->e = dmamap_pt_peek(as, va, 0, &p->level);
        }
        if (p->e)
            addr[n++] = (const uint8_t *)p->e;
    }
    pf_load_block(addr, n);
}

/* Stage 1 for vas[lo, hi): load the RAM each entry maps. */
static void pf_memory(dmamap_as *as, uint64_t lo, uint64_t hi, const struct pf_slot *ring)
{
    dmamap_machine *m = as->m;
    uint64_t ram_lo = m->ram_base_pfn << PAGE_SHIFT, ram_size = m->ram_pages << PAGE_SHIFT;
    const uint8_t *addr[PF_BLOCK];
    int n = 0;
    for (uint64_t i = lo; i < hi; i++) {
        const struct pf_slot *p = &ring[i % PF_RING];
        if (!p->e)
            continue;
        uint64_t x = __atomic_load_n(p->e, __ATOMIC_RELAXED);
        uint64_t off = ((x & as->pa_mask[p->level]) >> as->pfn_shift << PAGE_SHIFT) +
                       (p->va & ((1ULL << (PAGE_SHIFT + 9 * p->level)) - 1)) - ram_lo;
        if (x && off < ram_size)
            addr[n++] = m->ram_host + off;
    }
    pf_load_block(addr, n);
}

int dmamap_touch_list(dmamap_as *as, const uint64_t *vas, uint64_t count, int is_write, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, 0);
    if (count && !vas)
        return dmamap_fail(err, DMAMAP_EINVAL, 0, "NULL address list");
    int rc = 0;
    struct pf_slot ring[PF_RING];
    struct touch_ctx t;
    if ((rc = touch_begin(as, &t, 0, err)))
        return rc;
    struct as_cpu *c = t.c;
#define PF_MIN(x) ((x) < count ? (x) : count)
    pf_entries(as, c, vas, 0, PF_MIN(PF_BLOCK), ring);
    pf_entries(as, c, vas, PF_MIN(PF_BLOCK), PF_MIN(2 * PF_BLOCK), ring);
    pf_memory(as, 0, PF_MIN(PF_BLOCK), ring);
    for (uint64_t i = 0; i < count && !rc; i++) {
        if (i % PF_BLOCK == 0) {
            /* a writer may free tables: the ring's entries are found again after a pause */
            if (t.reader && as_writer_waiting(as)) {
                if ((rc = touch_yield(&t, vas[i], err)))
                    break;
                pf_entries(as, c, vas, i, PF_MIN(i + PF_BLOCK), ring);
                pf_entries(as, c, vas, PF_MIN(i + PF_BLOCK), PF_MIN(i + 2 * PF_BLOCK), ring);
            }
            if (i + PF_BLOCK < count) {
                pf_entries(as, c, vas, PF_MIN(i + 2 * PF_BLOCK), PF_MIN(i + 3 * PF_BLOCK), ring);
                pf_memory(as, i + PF_BLOCK, PF_MIN(i + 2 * PF_BLOCK), ring);
            }
        }
        if (!touch_fast(as, c, vas[i], is_write))
            rc = touch_slow(&t, vas[i], is_write, err);
    }
#undef PF_MIN
    return touch_end(&t, rc, err);
}
