/* Internal structures of the dmamap C core. */
#ifndef DMAMAP_INTERNAL_H
#define DMAMAP_INTERNAL_H
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include "dmamap.h"

/* Everything declared from here on is internal to the shared object: hidden
 * symbols are called directly, not through the PLT as exported ones are. */
#pragma GCC visibility push(hidden)

#define PAGE_SHIFT 12
#define PAGE_SIZE (1ULL << PAGE_SHIFT)
#define PAGE_MASK (~(PAGE_SIZE - 1))
#define ENTRIES 512
#define MAX_LEVELS 4
#define MAX_REGIONS DMAMAP_MAX_REGIONS
#define MAX_IOWIN 64
#define MAX_MEMTYPE_REPORTS 64

/* One ISA (or ISA variant): everything ISA-specific, as data and a few
 * encode/decode functions.  Levels are numbered from the leaf: 0 = 4 KiB.
 * Adding an ISA is one file in arch/ defining one of these plus one line in
 * arch/arches.h; a variant of an ISA with a data-driven memory-type field is
 * registered at run time (dmamap_isa_register_variant), no C needed. */
struct dmamap_arch {
    int isa;
    const char *name;
    int levels;
    int va_bits;
    int max_block_level;        /* highest level that may hold a block entry */
    uint64_t user_lo, user_hi;  /* canonical user VA range [lo, hi) */
    uint64_t kern_lo, kern_hi;  /* kernel VA range */
    uint64_t page_offset;       /* direct map base */
    uint64_t vmalloc_start, vmalloc_end;
    /* default physical layout; RAM is capped at ram_max so regions never overlap */
    uint64_t ram_base, ram_max, sram_base, sram_max, mmio_base, mmio_size, iowin_base;
    /* entry format: output address bits of a 4 KiB leaf, and where the pfn sits
     * in them (entry bits = pfn << pfn_shift | attributes) */
    uint64_t oa_mask;
    int pfn_shift;
    uint64_t reserved;          /* attribute bits no protection may carry */
    int device_align_fault;     /* unaligned accesses to Device memory fault */
    int faulting_store_partial; /* a faulting store may have written part of its bytes */
    int kernel_half;            /* first root index of the kernel half that every user root
                                 * shares (x86 / RISC-V pgd_alloc); 0: separate roots (TTBR1) */
    /* memory types: names, classes and which ones the kernel's pgprot_* pick */
    int ncache;
    const char *const *cache_names;
    const unsigned char *cache_cacheable;
    const unsigned char *cache_device;
    int noncached, writecombine, dmacoherent, cached;
    int (*memtype_compatible)(const struct dmamap_arch *a, int x, int y);
    /* x86 PAT (reserve_pfn_range, is_new_memtype_allowed): whether a PFN map of
     * non-RAM asking for `want` may adopt the reserved type `got`; NULL: never */
    int (*memtype_adopt)(const struct dmamap_arch *a, int want, int got);
    int page_alias_reported;    /* a conflicting RAM page insert is reported, never refused
                                 * (x86: PAT does not track vm_insert_page) */
    /* data-driven memory-type field (ISAs that allow variants): prot & mt_mask
     * is mt_enc[cache]; a variant may use any bits of mt_field */
    uint64_t mt_field, mt_mask;
    const uint64_t *mt_enc;
    uint64_t (*table_entry)(uint64_t table_pa, int kernel);
    uint64_t (*leaf)(uint64_t pa, uint64_t prot, int level);
    int (*is_valid)(const struct dmamap_arch *a, uint64_t e, int level);
    int (*is_table)(uint64_t e, int level);
    uint64_t (*entry_pa)(uint64_t e, int level);   /* output address of a leaf/block */
    uint64_t (*table_pa)(uint64_t e);              /* next-level table of a table entry */
    void (*decode)(const struct dmamap_arch *a, uint64_t e, int level, struct dmamap_xlate *out);
    uint64_t (*prot_make)(const struct dmamap_arch *a, unsigned flags, int cache);
    int (*prot_cache)(const struct dmamap_arch *a, uint64_t prot);   /* -1: no valid memory type */
    uint64_t (*prot_set_cache)(const struct dmamap_arch *a, uint64_t prot, int cache);
    unsigned (*prot_flags)(uint64_t prot);
    uint64_t (*leaf_prot)(uint64_t e, int level);   /* leaf -> 4 KiB-format prot */
    uint64_t (*set_special)(uint64_t prot);
    uint64_t (*root_value)(uint64_t root_pa);      /* CR3 / TTBR0 / satp of a root table */
};

/* arch.c: the table of ISAs (arch/arches.h) and run-time variants */
const struct dmamap_arch *dmamap_arch_get(int isa);
int dmamap_memtype_exact(const struct dmamap_arch *a, int x, int y);
int dmamap_memtype_by_class(const struct dmamap_arch *a, int x, int y);
int dmamap_mt_prot_cache(const struct dmamap_arch *a, uint64_t prot);
uint64_t dmamap_mt_prot_set_cache(const struct dmamap_arch *a, uint64_t prot, int cache);

/* A page descriptor.  Its reference and map counts share one 64-bit word
 * (reference count in the low half, map count in the high half, so a
 * mapping's pair changes in one step).  The word is read with one atomic
 * load and written only under the reference lock of its group of PREF_GROUP
 * pages, a spinlock held for a few instructions: a fault run then takes a
 * whole group's references with one atomic operation, where a compare-and-swap
 * per page cost a locked instruction each (fault.c).  Flags change only while
 * the page is free.  Read and written only through the page_* helpers below
 * (docs/threads.md). */
struct page_desc {
    uint64_t counts;
    uint32_t flags;
    uint32_t table_used;  /* valid entries, for page-table pages */
};

#define PAGE_REF1 1ULL
#define PAGE_MAP1 (1ULL << 32)
#define PREF_SHIFT 6
#define PREF_GROUP (1ULL << PREF_SHIFT)

/* How many pages from RAM page index idx, at most left, are in its reference-lock group. */
static inline uint64_t pref_span(uint64_t idx, uint64_t left)
{
    uint64_t k = PREF_GROUP - (idx & (PREF_GROUP - 1));
    return k < left ? k : left;
}

static inline int32_t counts_refs(uint64_t c)
{
    return (int32_t)(uint32_t)c;
}

static inline int32_t counts_maps(uint64_t c)
{
    return (int32_t)(uint32_t)(c >> 32);
}

static inline uint32_t page_flags(const struct page_desc *p)
{
    return __atomic_load_n(&p->flags, __ATOMIC_RELAXED);
}

static inline uint64_t page_counts(const struct page_desc *p)
{
    return __atomic_load_n(&p->counts, __ATOMIC_ACQUIRE);
}

static inline int32_t page_refs(const struct page_desc *p)
{
    return counts_refs(page_counts(p));
}

static inline int32_t page_maps(const struct page_desc *p)
{
    return counts_maps(page_counts(p));
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* The reference lock of p's group. */
static inline uint32_t *pref_lock_of(dmamap_machine *m, const struct page_desc *p);

static inline void pref_lock(uint32_t *l)
{
    unsigned spins = 0;
    while (__atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE))
        while (__atomic_load_n(l, __ATOMIC_RELAXED)) {
            if (++spins % 1024)
                cpu_relax();
            else
                sched_yield();   /* the holder was preempted */
        }
}

static inline void pref_unlock(uint32_t *l)
{
    __atomic_store_n(l, 0, __ATOMIC_RELEASE);
}

/* p's counts plus delta (its group's lock held): the new value.  The load is
 * an acquire, so that flags read after it are those of the allocation whose
 * first reference it sees (desc_alloc publishes them with a release). */
static inline uint64_t counts_add_locked(struct page_desc *p, uint64_t delta)
{
    uint64_t c = __atomic_load_n(&p->counts, __ATOMIC_ACQUIRE) + delta;
    __atomic_store_n(&p->counts, c, __ATOMIC_RELAXED);
    return c;
}

/* The last reference dropped: free the page through the allocator. */
void page_free_last(dmamap_machine *m, struct page_desc *p);

/* delta added to each of p[0..n) (one reference-lock group at most), pages
 * found by their pfn alone (which may be freed concurrently), in order, under
 * one hold of the group's lock: how many were taken before the first that is
 * free (or being freed) or has one of the flags refuse, which stops it
 * untouched.  delta: PAGE_REF1 (a reference) or PAGE_REF1 | PAGE_MAP1 (a
 * mapping's).  Flags read after it are those of the allocation it holds. */
static inline uint64_t page_get_run(dmamap_machine *m, struct page_desc *p, uint64_t n, uint32_t refuse,
                                    uint64_t delta)
{
    uint32_t *l = pref_lock_of(m, p);
    uint64_t j;
    pref_lock(l);
    for (j = 0; j < n; j++) {
        uint64_t c = __atomic_load_n(&p[j].counts, __ATOMIC_ACQUIRE);
        if (counts_refs(c) <= 0 || page_flags(&p[j]) & refuse)
            break;
        __atomic_store_n(&p[j].counts, c + delta, __ATOMIC_RELAXED);
    }
    pref_unlock(l);
    return j;
}

/* delta dropped from p[j] for each bit j of mask (pages of one reference-lock
 * group), under one hold of its lock; a page whose last reference this was
 * (an anonymous page whose last mapping went, a view outliving its mapping)
 * is freed after it, under the allocator's lock. */
static inline void page_drop_mask(dmamap_machine *m, struct page_desc *p, uint64_t mask, uint64_t delta)
{
    uint64_t freed = 0;
    if (!mask)
        return;
    uint32_t *l = pref_lock_of(m, &p[__builtin_ctzll(mask)]);
    pref_lock(l);
    for (uint64_t k = mask; k; k &= k - 1) {
        unsigned j = (unsigned)__builtin_ctzll(k);
        if (counts_refs(counts_add_locked(&p[j], -delta)) == 0)
            freed |= 1ULL << j;
    }
    pref_unlock(l);
    for (; freed; freed &= freed - 1)
        page_free_last(m, &p[__builtin_ctzll(freed)]);
}

/* get_page_unless_zero: delta on one page found by its pfn alone; 0 when it is free. */
static inline int page_get_unless_zero(dmamap_machine *m, struct page_desc *p, uint64_t delta)
{
    return (int)page_get_run(m, p, 1, 0, delta);
}

/* References taken by someone who holds one already (a PTE being copied, a
 * page just checked or allocated): the reference count cannot be 0. */
static inline void page_hold_add(dmamap_machine *m, struct page_desc *p, uint64_t delta)
{
    page_get_run(m, p, 1, 0, delta);
}

/* put_page: drop delta (as above); the last reference frees the page. */
static inline void page_drop(dmamap_machine *m, struct page_desc *p, uint64_t delta)
{
    page_drop_mask(m, p, 1, delta);
}

static inline void page_put(dmamap_machine *m, struct page_desc *p)
{
    page_drop(m, p, PAGE_REF1);
}

static inline void page_map_put(dmamap_machine *m, struct page_desc *p)
{
    page_drop(m, p, PAGE_REF1 | PAGE_MAP1);
}

/* A mapping's reference and map count on each of p[0..n) (one group at most)
 * that may be mapped (page_get's rules: allocated, neither anonymous nor a
 * page table): how many were taken before the first that may not. */
static inline uint64_t page_map_get_run(dmamap_machine *m, struct page_desc *p, uint64_t n)
{
    return page_get_run(m, p, n, DMAMAP_PG_ANON | DMAMAP_PG_TABLE, PAGE_REF1 | PAGE_MAP1);
}

/* A mapping's reference and map count on a page that may be mapped. */
static inline int page_map_get(dmamap_machine *m, struct page_desc *p)
{
    return (int)page_map_get_run(m, p, 1);
}

/* delta dropped from each of p[0..n), a reference-lock group at a time (p is
 * the descriptor of RAM page index idx). */
static inline void page_drop_run(dmamap_machine *m, struct page_desc *p, uint64_t idx, uint64_t n, uint64_t delta)
{
    for (uint64_t j = 0, k; j < n; j += k) {
        k = pref_span(idx + j, n - j);
        page_drop_mask(m, &p[j], k >= 64 ? ~0ULL : (1ULL << k) - 1, delta);
    }
}

struct iowin_slot {
    uint64_t pa, size, port;
    int live;
};

struct memtype_entry {
    uint64_t start, end;
    int cache;
    int refs;
};

#define CACHE_LINE 64
#define CL_VALID 1ULL
#define CL_DIRTY 2ULL
/* One way's state (a 4-way set's fits one host cache line); its bytes are
 * apart, at the same index of m->cache_data (64-byte aligned). */
struct cache_line {
    uint64_t tag;        /* line pa | CL_DIRTY | CL_VALID */
    uint64_t lru;        /* the cache clock at the last access; 0 while invalid */
};

#define WCB_MAX 16
struct wcb_entry {
    uint64_t line;       /* line-aligned physical address */
    uint64_t mask;       /* bytes written */
    uint64_t age;
    int valid;
    uint8_t data[64];
};

struct dmamap_machine {
    const struct dmamap_arch *arch;
    uint8_t *backing;
    uint64_t backing_size;
    int coherent;
    _Atomic int closed;
    pthread_mutex_t lock;          /* allocator, descriptors, memtype, I/O window */
    pthread_mutex_t region_lock;   /* the memory map (regions, nregions): readers copy under it */
    pthread_mutex_t cache_lock;
    struct dmamap_region regions[MAX_REGIONS];
    int nregions;
    /* RAM: one region, descriptors and allocator. */
    uint64_t ram_base_pfn, ram_pages;
    uint8_t *ram_host;             /* host address of RAM pfn ram_base_pfn */
    uint64_t sram_base, sram_size; /* the first SRAM region (never removed), for fast lookups */
    uint8_t *sram_host;
    struct page_desc *pages;
    uint32_t *pref_locks;          /* a reference lock per PREF_GROUP pages */
    uint64_t *bitmap;              /* 1 = allocated */
    uint64_t alloc_hint;
    uint64_t pages_used;
    uint64_t table_pages;
    uint64_t *table_cache;         /* recently freed (zeroed, host-backed) table pfns, LIFO */
    int ntable_cache, captable_cache;
    /* I/O */
    dmamap_io_fn io_fn;
    void *io_ctx;
    struct iowin_slot iowin[MAX_IOWIN];
    /* memtype */
    struct memtype_entry *memtypes;
    int nmemtypes, capmemtypes;
    int memtype_policy;
    _Atomic uint64_t memtype_gen;  /* bumped on every reservation change */
    struct dmamap_memtype_report reports[MAX_MEMTYPE_REPORTS];
    uint64_t nreports;
    /* cache model (NULL when DMA snoops) */
    struct cache_line *cache;      /* one allocation with cache_data (dmamap_cache_alloc) */
    uint8_t *cache_data;
    int cache_sets, cache_ways;
    int cache_vipt;                /* sets indexed by the virtual address (an aliasing VIPT cache) */
    uint64_t cache_clock;
    /* the kernel half shared by every user root (arch->kernel_half > 0): the
     * first kernel address space, its root's shared entries as last published
     * to the user roots, and the user address spaces (all under lock) */
    struct dmamap_as *_Atomic kern_as;
    uint64_t kshadow[ENTRIES];
    struct dmamap_as **users;
    int nusers, capusers;
    /* stats */
    _Atomic uint64_t dma_read, dma_written, cache_hits, cache_misses, cache_wb, cache_maint_lines;
    _Atomic uint64_t mmio_accesses, port_accesses, port_master_aborts;
    /* write-combining buffer (wcb.c): WC / Normal-NC stores gather here, under wcb_lock */
    pthread_mutex_t wcb_lock;
    struct wcb_entry wcb[WCB_MAX];
    _Atomic int wcb_n;
    uint64_t wcb_clock;
    _Atomic uint64_t wcb_drains, wcb_merges, wcb_evictions;
    /* streaming-DMA ownership (dma_own.c): device-owned ranges, under own_lock */
    pthread_mutex_t own_lock;
    struct dma_own_range *own;
    _Atomic int nown;
    int capown, own_record;
    struct dmamap_dma_own_event *own_log;
    int nown_log;
    uint64_t own_dropped;
};

static inline uint32_t *pref_lock_of(dmamap_machine *m, const struct page_desc *p)
{
    return &m->pref_locks[(uint64_t)(p - m->pages) >> PREF_SHIFT];
}

/* 0 when [pa, pa+n) is held by the write-combining buffer */
void dmamap_wcb_store(dmamap_machine *m, uint64_t pa, const void *buf, uint64_t n);
void dmamap_wcb_drain_all(dmamap_machine *m);

struct dma_own_range {
    uint64_t pa, end;
    int64_t tag;
};

/* 0, or DMAMAP_EDMAOWN (or a logged event) when [pa, pa+n) touches a device-owned range. */
int dmamap_dma_own_check(dmamap_machine *m, uint64_t pa, uint64_t n, int is_write, struct dmamap_err *err);

#define TLB_SIZE 512
#define LEAF_CACHE 512   /* leaf tables the walk cache remembers: 1 GiB of 4 KiB pages */
#define LC_GEN_SHIFT 44
#define LC_VA_MASK ((1ULL << LC_GEN_SHIFT) - 1)
struct tlb_entry {
    uint64_t vpn;        /* va >> 12, ~0 when invalid */
    uint64_t pa_page;
    uint8_t *host;       /* host pointer of the page for RAM/SRAM, NULL otherwise */
    uint8_t writable, user, cacheable, device, wc;
    int region;
};

struct vma {
    uint64_t start, end, flags, prot;
    uint64_t pgoff;               /* vm_pgoff: offset in the mapped object, in pages */
    int live;
    int fault_kind;
    struct dmamap_chunk *chunks;
    uint64_t *chunk_start;       /* prefix sums of chunk pages */
    int nchunks;
    uint64_t first_page;
    uint64_t fault_around;
    int large;
    int wrnotify;                 /* vma_wants_writenotify: writes to read-only PTEs call page_mkwrite */
    uint64_t pio_port;
    uint64_t pio_count;   /* ports reachable from the VMA start */
    int64_t id;
    uint64_t gen;
    struct memtype_entry *memtypes;   /* reservations held until unmap */
    int nmemtypes, capmemtypes;
    /* [mt_lo, mt_hi) was found free of memtype conflicts for the cache type of
     * protection mt_prot at reservation generation mt_gen - 1 (0: nothing
     * cached); spares the fault path the machine lock. */
    uint64_t mt_lo, mt_hi, mt_gen, mt_prot;
};

/* The address-space lock (the mmap lock): taken exclusively (LOCK / UNLOCK,
 * recursive, as every entry point but the touches does) or shared by touch
 * loops in reader mode (as_read_enter).  Exclusive holders bump `writers` and
 * wait for `readers` to drain; readers count themselves in `readers` and back
 * off while a writer is in or waiting for them (Dekker, seq_cst both sides).
 * `owner` names the exclusive holder's thread, so that a call nested in a
 * fault callback of that thread takes the recursive lock again instead of
 * waiting for itself as a reader. */
struct as_lock {
    pthread_mutex_t mu;          /* recursive: fault callbacks re-enter */
    int depth;                   /* exclusive nesting of the holder (under mu) */
    _Atomic uintptr_t owner;     /* token of the exclusive holder's thread, 0: none */
    _Atomic int writers;         /* 1 while an exclusive holder is in (or draining readers) */
    _Atomic int readers;         /* touch loops in reader mode */
};

/* A CPU of an address space: the state a touch loop in reader mode writes,
 * one per concurrent reader.  Slot 0 is the exclusive holder's CPU too: its
 * TLB, first-level walk cache entry and counters are the address space's own
 * (as->tlb, as->wc_*[0], as->st), so a single thread sees exactly what it saw
 * when there was one lock.  Slots 1.. have their own, which every TLB flush and
 * walk-cache reset (exclusive) clears as well, and their counters are summed
 * into dmamap_as_stats.  The leaf-table cache (as->lc), the decode and leaf
 * memos and as->last_vma are shared: readers only read them (each slot keeps
 * its own last VMA, and walks to leaf tables the caches do not know itself:
 * pt_leaf_cpu). */
#define AS_CPUS 4
struct as_cpu {
    _Atomic int busy;            /* a thread owns this slot for its call */
    int used;                    /* ever owned (flushes skip the TLBs of slots never used) */
    struct tlb_entry *tlb;
    struct dmamap_as_stats *st;
    /* references of pages rsv_pfn + i (bit i of rsv_mask) taken ahead by the
     * fault path in a touch loop: see fault.c */
    uint64_t rsv_pfn, rsv_mask;
    uint64_t wct, wcp;           /* the first level of the walk cache (slot 0: the exclusive holder's too) */
    int last_vma;                /* index of the VMA this slot's touches found last (checked on use) */
    /* leaf tables this slot walked to itself (pt_leaf_cpu), beside the shared
     * as->lc that only exclusive holders fill: same tags and generation */
    struct { uint64_t tag, pa; } lc[LEAF_CACHE];
    struct dmamap_as_stats st_own;
    struct tlb_entry tlb_own[TLB_SIZE];
};

/* Striped page-table locks (split PTE ptlocks): a reader installing PTEs into a
 * leaf table holds the lock of that table's stripe. */
#define AS_PTL_BITS 6   /* 64 stripes: two threads' current leaf tables rarely share one */
#define AS_PTLS (1 << AS_PTL_BITS)
static inline unsigned ptl_of(uint64_t table_pa)
{
    return (unsigned)((table_pa >> PAGE_SHIFT) * 0x9e3779b97f4a7c15ULL >> (64 - AS_PTL_BITS));
}

struct dmamap_as {
    dmamap_machine *m;
    int kernel;
    _Atomic int closed;          /* dmamap_as_close ran: every later call is refused */
    struct as_lock lock;
    pthread_mutex_t ptl[AS_PTLS];
    struct as_cpu cpu[AS_CPUS];
    uint64_t root;               /* physical address of the root table (see arch->root_value) */
    struct vma *vmas;
    int nvmas, capvmas;
    int last_vma;
    struct tlb_entry tlb[TLB_SIZE];
    /* walk cache: wc_pa[l] is the level-l table covering the VAs with
     * va >> (21 + 9 * l) == wc_tag[l] (~0: none), for l below the root level
     * and above 0 (level 0: the CPU slot's wct, wcp) */
    uint64_t wc_tag[MAX_LEVELS];
    uint64_t wc_pa[MAX_LEVELS];
    /* and behind wc[0], a direct-mapped cache of leaf tables (a PDE cache):
     * entry (va >> 21) % LEAF_CACHE holds the leaf table of the VAs with
     * va >> 21 == tag & LC_VA_MASK, valid while tag >> LC_GEN_SHIFT == lc_gen */
    struct { uint64_t tag, pa; } lc[LEAF_CACHE];
    uint64_t lc_gen;
    /* Per-ISA constants, so hot paths make no indirect calls: the output-address
     * bits of a leaf at each level, and the software "special" bit.  Both ISAs
     * encode a leaf as (output address | attribute bits). */
    uint64_t pa_mask[MAX_LEVELS];
    int pfn_shift;                 /* entry bits of the output address = pfn << pfn_shift */
    uint64_t special_bit;
    uint64_t va_lo, va_hi;         /* the address space's VA range, as dmamap_as_va_range */
    /* decode memo of the TLB-miss path: what the last leaf attribute bits seen
     * (entry & ~pa_mask[level]) decode to; decoding depends on those bits only. */
    uint64_t dm_attr;
    uint64_t dm_fast;     /* dm_attr when it decodes to a valid 4 KiB leaf this space may use, else ~0 */
    int dm_level;
    uint8_t dm_valid, dm_writable, dm_user, dm_cacheable, dm_device, dm_wc;
    /* leaf memo of the fault path: leaf(0, lf_prot, 0), valid when lf_ok */
    uint64_t lf_prot, lf_base;
    int lf_ok;
    dmamap_fault_fn fault_fn;
    void *fault_ctx;
    struct dmamap_as_stats st;
};

/* err.c */
int dmamap_fail(struct dmamap_err *err, int code, uint64_t addr, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void dmamap_err_clear(struct dmamap_err *err);

/* arch.c */
const struct dmamap_arch *dmamap_arch_get(int isa);

/* physmap.c */
uint8_t *dmamap_host_ptr(dmamap_machine *m, uint64_t pa, uint64_t n, int *type);
int dmamap_region_lookup(dmamap_machine *m, uint64_t pa, struct dmamap_region *out);

/* page_alloc.c */
int dmamap_pfn_is_ram(dmamap_machine *m, uint64_t pfn);
struct page_desc *dmamap_page(dmamap_machine *m, uint64_t pfn);
int dmamap_alloc_table_page(dmamap_machine *m, uint64_t *pa_out, struct dmamap_err *err);
void dmamap_free_table_page(dmamap_machine *m, uint64_t pa);

/* io.c */
int dmamap_io_access(dmamap_machine *m, uint64_t pa, int size, int is_write, uint64_t *value,
                     struct dmamap_err *err);

/* cache.c */
/* va picks the set on a VIPT cache (tags are always physical). */
void dmamap_cache_read(dmamap_machine *m, uint64_t va, uint64_t pa, uint8_t *host, void *buf, uint64_t n);
void dmamap_cache_write(dmamap_machine *m, uint64_t va, uint64_t pa, uint8_t *host, const void *buf, uint64_t n);
struct cache_line *dmamap_cache_alloc(int sets, int ways, uint8_t **data);
/* One page's part of a run of CPU accesses through the cache (buf: the caller's bytes). */
struct dmamap_cache_seg {
    uint64_t va, pa, n;
    uint8_t *host, *buf;
};
/* The segments in order, as dmamap_cache_read/write on each (bufs consecutive). */
void dmamap_cache_run(dmamap_machine *m, const struct dmamap_cache_seg *seg, size_t nseg, int is_write);
void dmamap_cache_maint(dmamap_machine *m, uint64_t pa, uint64_t size, int clean, int inval);

/* memtype.c */
int dmamap_memtype_check(dmamap_machine *m, uint64_t pa, uint64_t size, int cache, struct dmamap_err *err);
int dmamap_memtype_conflict(dmamap_machine *m, uint64_t pa, uint64_t size, int cache);
/* insert_memtype_check / fault_memtype_check flags */
#define MT_REPORT 1   /* on a conflict, report or fail as any insert does (else just answer nonzero) */
#define MT_PAGE 2     /* a page-descriptor insert (vm_insert_page, a page-returning fault) */
int insert_memtype_check(dmamap_machine *m, uint64_t pa, uint64_t size, int flags, uint64_t *prot,
    struct dmamap_err *err);
int fault_memtype_check(dmamap_as *as, struct vma *v, uint64_t pa, uint64_t size, uint64_t idx,
    int flags, uint64_t *prot, struct dmamap_err *err);
int track_pfn(dmamap_as *as, struct vma *v, uint64_t pa, uint64_t size, uint64_t *prot,
    struct dmamap_err *err);
void untrack(dmamap_as *as, struct vma *v);
void untrack_last(dmamap_as *as, struct vma *v);
    
/* pgtable.c, pgtable_edit.c */
uint64_t *dmamap_table_ptr(dmamap_machine *m, uint64_t table_pa);
int dmamap_pt_fill(dmamap_as *as, uint64_t va, uint64_t pfn, uint64_t npages, uint64_t prot,
                   int large, int special, struct dmamap_err *err);
void dmamap_pt_clear(dmamap_as *as, uint64_t va, uint64_t npages);
int dmamap_pt_walk(dmamap_as *as, uint64_t va, uint64_t **entry_out, int *level_out);
int dmamap_pt_walk_mem(dmamap_as *as, uint64_t va, uint64_t **entry_out, int *level_out);
const uint64_t *dmamap_pt_peek(dmamap_as *as, uint64_t va, int load_leaf, int *level_out);
int dmamap_pt_protect(dmamap_as *as, uint64_t va, uint64_t npages, uint64_t prot,
                      struct dmamap_err *err);
int dmamap_pt_split_edges(dmamap_as *as, uint64_t va, uint64_t end, struct dmamap_err *err);
void dmamap_pt_free_all(dmamap_as *as);
void dmamap_pt_cache_reset(dmamap_as *as);
int dmamap_pt_insert(dmamap_as *as, uint64_t va, uint64_t pfn, uint64_t prot, int special,
                     struct dmamap_err *err);
uint64_t *dmamap_pt_slot(dmamap_as *as, uint64_t va, uint64_t *table_pa, struct dmamap_err *err);
uint64_t dmamap_pt_leaf_base(dmamap_as *as, uint64_t prot, int special);
void dmamap_pt_added(dmamap_as *as, uint64_t table_pa, uint64_t n);
void drop_table(dmamap_as *as, uint64_t pa);
int split_block(dmamap_as *as, uint64_t *e, int level, struct dmamap_err *err);

static inline uint64_t level_shift(int level)
{
    return PAGE_SHIFT + 9 * (uint64_t)level;
}

static inline int pt_index(uint64_t va, int level)
{
    return (int)((va >> level_shift(level)) & (ENTRIES - 1));
}

static inline struct page_desc *table_desc(dmamap_machine *m, uint64_t table_pa)
{
    return &m->pages[(table_pa >> PAGE_SHIFT) - m->ram_base_pfn];
}

/* Whether a table entry leads to a page-table page of this machine.  Tables
 * live in emulated RAM, where phys_write, device DMA or a PFN mapping of a
 * table page can scribble over them; an entry pointing anywhere else is
 * corrupt and is never followed, so no walk leaves the emulated RAM or touches
 * the bookkeeping of a page that is not a table. */
static inline int table_ok(dmamap_machine *m, uint64_t table_pa)
{
    uint64_t idx = (table_pa >> PAGE_SHIFT) - m->ram_base_pfn;
    return idx < m->ram_pages && (page_flags(&m->pages[idx]) & DMAMAP_PG_TABLE);
}

/* tlb.c */
void dmamap_tlb_flush_range(dmamap_as *as, uint64_t va, uint64_t size);

/* as.c */
int as_unlock(dmamap_as *as, int rc, struct dmamap_err *err);

/* mmap.c */
int chunk_find(const struct vma *v, uint64_t idx);
uint64_t chunk_pfn(const struct vma *v, uint64_t idx, uint64_t *run);
int va_ok(dmamap_as *as, uint64_t va, uint64_t len);
struct vma *vma_find(dmamap_as *as, uint64_t va);
struct vma *vma_new(dmamap_as *as, uint64_t addr, struct dmamap_err *err, int *rc);
int vma_overlaps(dmamap_as *as, uint64_t start, uint64_t end);
int vma_find_gap(dmamap_as *as, uint64_t length, uint64_t align, uint64_t *out);
struct vma *vma_get(dmamap_as *as, int64_t id, struct dmamap_err *err);
struct vma *vma_get_at(dmamap_as *as, int64_t id, uint64_t addr, struct dmamap_err *err);
struct vma *vma_enter(dmamap_as *as, int64_t id, uint64_t addr, uint64_t size, const char *what,
                      int check_range, struct dmamap_err *err, int *rc);
void vma_release(struct vma *v);

/* memory.c */
int is_cow_mapping(const struct vma *v);
int pfn_range_ok(dmamap_as *as, uint64_t pfn, uint64_t npages, const char *what, struct dmamap_err *err);
int prot_check(dmamap_as *as, uint64_t prot, struct dmamap_err *err);
int range_in_vma(dmamap_as *as, const struct vma *v, uint64_t addr, uint64_t size, const char *what,
    struct dmamap_err *err);

/* insert.c */
int page_get(dmamap_as *as, uint64_t addr, uint64_t pfn, const char *what, int take_ref,
    struct dmamap_err *err);
int page_insertable(dmamap_as *as, uint64_t addr, uint64_t pfn, const char *what, struct dmamap_err *err);
void page_unget(dmamap_as *as, uint64_t pfn);

/* fault.c */
int cow_page(dmamap_as *as, struct vma *v, uint64_t va, uint64_t src_pfn, int replace,
    struct dmamap_err *err);
int handle_fault(dmamap_as *as, struct vma *v, uint64_t va, int is_write, struct dmamap_err *err);
int wp_page_shared(dmamap_as *as, struct vma *v, uint64_t va, struct dmamap_err *err);

/* access.c */
int access_one(dmamap_as *as, uint64_t va, int size, int is_write, uint64_t *value, struct dmamap_err *err);
int fault_fast(dmamap_as *as, struct as_cpu *c, struct vma *v, uint64_t va, int is_write, uint64_t *slot,
    int batch);
int fault_fast_vma(const struct vma *v, int is_write);
uint64_t fault_fast_pfn(const struct vma *v, uint64_t va, uint64_t *run);
int fault_fast_take(dmamap_as *as, struct as_cpu *c, const struct vma *v, uint64_t pfn, uint64_t run,
    int batch);
uint64_t fault_fast_leaf(dmamap_as *as, const struct vma *v);
/* touch.c: the address space whose touch loop this thread runs on slot 0 (its
 * faults on the general path take page references ahead, as fast ones do) */
extern __thread const dmamap_as *touch_batch_as;
void fault_rsv_release(dmamap_as *as, struct as_cpu *c);
/* Host address of the 4 KiB page at pa, RAM without a memory-map scan. */
static inline uint8_t *dmamap_host_page(dmamap_machine *m, uint64_t pa, int *type)
{
    uint64_t off = pa - (m->ram_base_pfn << PAGE_SHIFT);
    if (off < (m->ram_pages << PAGE_SHIFT)) {
        *type = DMAMAP_MEM_RAM;
        return m->ram_host + off;
    }
    if (pa - m->sram_base < m->sram_size) {
        *type = DMAMAP_MEM_SRAM;
        return m->sram_host + (pa - m->sram_base);
    }
    return dmamap_host_ptr(m, pa, PAGE_SIZE, type);
}

/* How many pages ahead a fault run (touch.c) prefetches the bytes it loads:
 * each is on a page of its own, which the host's prefetchers do not reach and
 * whose miss (often a host TLB miss too) the loop's work per fault is too long
 * to overlap with the next ones out of order.  16 MiB at a 4 KiB stride, in the
 * benchmark's process, distances alternating in one process: none 11.4 ns a
 * fault, 16 ahead 9.5-9.9, 32 ahead 7.6-9.4, 64 and 128 no better. */
#define TOUCH_AHEAD 32

/* Page references taken ahead by the fault path (fault.c), one
 * reference-lock group at most: use the one of pfn if there is one. */
#define RSV_MAX 64
_Static_assert(PREF_GROUP <= RSV_MAX, "a reservation mask covers a reference-lock group");
static inline int rsv_take(struct as_cpu *c, uint64_t pfn)
{
    uint64_t bit = pfn - c->rsv_pfn;
    if (bit >= RSV_MAX || !(c->rsv_mask >> bit & 1))
        return 0;
    c->rsv_mask &= ~(1ULL << bit);
    return 1;
}

/* va_ok(as, va, 1) for the hot paths: va inside the address space's VA range. */
static inline int va_in(const dmamap_as *as, uint64_t va)
{
    return va >= as->va_lo && va != ~0ULL && (as->va_hi == ~0ULL || va < as->va_hi);
}

/* The leaf-table cache's tag for the 2 MiB region k (va >> 21), valid in this generation. */
static inline uint64_t lc_tag(const dmamap_as *as, uint64_t k)
{
    return (k & LC_VA_MASK) | as->lc_gen << LC_GEN_SHIFT;
}

/* The leaf table covering va when the walk cache holds it (the last one, then
 * the leaf-table cache): 1 and *table, else 0.  Reads the cache only. */
static inline int leaf_cached_cpu(const dmamap_as *as, const struct as_cpu *c, uint64_t va, uint64_t *table)
{
    uint64_t k = va >> (PAGE_SHIFT + 9);
    if (k == c->wct) {
        *table = c->wcp;
        return 1;
    }
    uint64_t tag = lc_tag(as, k);
    if (as->lc[k % LEAF_CACHE].tag == tag) {
        *table = as->lc[k % LEAF_CACHE].pa;
        return 1;
    }
    if (c->lc[k % LEAF_CACHE].tag == tag) {
        *table = c->lc[k % LEAF_CACHE].pa;
        return 1;
    }
    return 0;
}

int pt_leaf_cpu(dmamap_as *as, struct as_cpu *c, uint64_t va, int alloc, uint64_t *table);
struct vma *vma_find_cpu(dmamap_as *as, struct as_cpu *c, uint64_t va);

static inline int leaf_cached(const dmamap_as *as, uint64_t va, uint64_t *table)
{
    return leaf_cached_cpu(as, &as->cpu[0], va, table);
}

/* Fill TLB entry t for page vpn at pa_page (host memory `host` of `region`,
 * NULL for MMIO and ports) with the attributes of the last leaf decoded (the
 * as->dm_* memo), as a walk that ends in that leaf does. */
static inline void tlb_fill(const dmamap_as *as, struct tlb_entry *t, uint64_t vpn, uint64_t pa_page, uint8_t *host,
                            int region)
{
    t->vpn = vpn;
    t->pa_page = pa_page;
    t->host = host;
    t->region = region;
    t->writable = as->dm_writable;
    t->user = as->dm_user;
    t->cacheable = as->dm_cacheable;
    t->device = as->dm_device;
    t->wc = as->dm_wc;
}

/* The host page a 4 KiB leaf entry maps (its pa and region out), when its
 * attribute bits are the ones the decode memo says a fast path may use for
 * this access (as->dm_fast; writable for a write); NULL otherwise. */
static inline uint8_t *leaf_fast_host(dmamap_as *as, uint64_t ent, int is_write, uint64_t *pa, int *region)
{
    if ((ent & ~as->pa_mask[0]) != as->dm_fast || (is_write && !as->dm_writable))
        return NULL;
    *pa = (ent & as->pa_mask[0]) >> as->pfn_shift << PAGE_SHIFT;
    return dmamap_host_page(as->m, *pa, region);
}

/* Host address of RAM page-table memory at pa (tables always live in RAM). */
static inline uint64_t *dmamap_ram_table(dmamap_machine *m, uint64_t pa)
{
    return (uint64_t *)(m->ram_host + (pa - (m->ram_base_pfn << PAGE_SHIFT)));
}

/* The machine entry points' epilogue: a call that failed because the machine
 * was closed under it says so, whatever it tripped over on the way. */
static inline int dmamap_m_done(dmamap_machine *m, int rc, struct dmamap_err *err)
{
    if (rc < 0 && rc != DMAMAP_ECLOSED && m && atomic_load_explicit(&m->closed, memory_order_acquire))
        rc = dmamap_fail(err, DMAMAP_ECLOSED, err ? err->addr : 0, "machine was closed during the call");
    return rc;
}

/* pgd.c: the kernel half of user roots; publish the kernel root's shared entries to every user root */
void dmamap_pt_kernel_sync(dmamap_as *as);
int dmamap_pt_user_attach(dmamap_as *as, struct dmamap_err *err);
void dmamap_pt_user_detach(dmamap_as *as);


/* as.c: the address-space lock, exclusive (LOCK / UNLOCK on &as->lock pick
 * these) and shared (touch loops in reader mode, on a CPU slot of their own;
 * NULL: take it exclusively instead, the caller already holds it or every
 * slot is taken) */
void as_xlock(struct as_lock *l);
void as_xunlock(struct as_lock *l);
struct as_cpu *as_read_enter(dmamap_as *as);
struct as_cpu *as_read_try_enter(dmamap_as *as);
void as_read_exit(dmamap_as *as, struct as_cpu *c);
int as_read_resume(dmamap_as *as);
void as_read_pause(dmamap_as *as);
/* whether a writer waits for the readers (a reader in a long loop pauses for it) */
static inline int as_writer_waiting(dmamap_as *as)
{
    return atomic_load_explicit(&as->lock.writers, memory_order_relaxed) != 0;
}

#define LOCK(l) _Generic((l), struct as_lock *: as_xlock, default: pthread_mutex_lock)(l)
#define UNLOCK(l) _Generic((l), struct as_lock *: as_xunlock, default: pthread_mutex_unlock)(l)

/* ---- the entry points' prologue and epilogue ----
 * Entry points accept any pointer the caller holds, including NULL.  An
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

/* Take the lock, then check again that the address space is live (a close on
 * another thread may have won the race for it); as_unlock is the epilogue. */
#define AS_LOCK(as, err, addr)                                                          \
    do {                                                                                \
        LOCK(&(as)->lock);                                                              \
        if (as_dead(as)) {                                                              \
            UNLOCK(&(as)->lock);                                                        \
            return dmamap_fail(err, DMAMAP_ECLOSED, addr, "address space or machine is " \
                               "closed");                                               \
        }                                                                               \
    } while (0)

/* The machine entry points' check: a live machine. */
#define M_CHECK(m, err, addr)                                                           \
    do {                                                                                \
        if (!(m) || atomic_load_explicit(&(m)->closed, memory_order_acquire))          \
            return dmamap_fail(err, DMAMAP_ECLOSED, addr, "machine is closed");         \
    } while (0)

/* VMA ids: slot | generation << ID_SLOT_BITS, never repeating in practice. */
#define ID_SLOT_BITS 20
#define ID_SLOT(id) ((int)((id) & ((1 << ID_SLOT_BITS) - 1)))
#define ID_GEN_MASK ((1ULL << (63 - ID_SLOT_BITS)) - 1)

#pragma GCC visibility pop

#endif
