/* Internal structures of the dmamap C core. */
#ifndef DMAMAP_INTERNAL_H
#define DMAMAP_INTERNAL_H
#include <pthread.h>
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

/* Per-ISA page-table format.  Levels are numbered from the leaf: 0 = 4 KiB. */
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
    int ncache;
    const char *const *cache_names;
    const unsigned char *cache_cacheable;
    const unsigned char *cache_device;
    uint64_t (*table_entry)(uint64_t table_pa, int kernel);
    uint64_t (*leaf)(uint64_t pa, uint64_t prot, int level);
    int (*is_valid)(uint64_t e, int level);
    int (*is_table)(uint64_t e, int level);
    uint64_t (*entry_pa)(uint64_t e, int level);   /* output address of a leaf/block */
    uint64_t (*table_pa)(uint64_t e);              /* next-level table of a table entry */
    void (*decode)(uint64_t e, int level, struct dmamap_xlate *out);
    uint64_t (*prot_make)(unsigned flags, int cache);
    int (*prot_cache)(uint64_t prot);
    uint64_t (*prot_set_cache)(uint64_t prot, int cache);
    unsigned (*prot_flags)(uint64_t prot);
    uint64_t (*leaf_prot)(uint64_t e, int level);   /* leaf -> 4 KiB-format prot */
    uint64_t (*set_special)(uint64_t prot);
    int faulting_store_partial;   /* a store that faults part-way may have written its first bytes */
};

extern const struct dmamap_arch dmamap_arch_x86_64;
extern const struct dmamap_arch dmamap_arch_aarch64;
const struct dmamap_arch *dmamap_arch_get(int isa);

struct page_desc {
    uint32_t flags;
    int32_t refcount;
    int32_t mapcount;
    uint32_t table_used;  /* valid entries, for page-table pages */
};

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
struct cache_line {
    uint64_t tag;        /* line pa | valid bit 0 */
    uint8_t dirty;
    uint64_t lru;
    uint8_t data[CACHE_LINE];
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
    struct cache_line *cache;
    int cache_sets, cache_ways;
    uint64_t cache_clock;
    /* stats */
    _Atomic uint64_t dma_read, dma_written, cache_hits, cache_misses, cache_wb, cache_maint_lines;
    _Atomic uint64_t mmio_accesses, port_accesses;
};

#define TLB_SIZE 512
struct tlb_entry {
    uint64_t vpn;        /* va >> 12, ~0 when invalid */
    uint64_t pa_page;
    uint8_t *host;       /* host pointer of the page for RAM/SRAM, NULL otherwise */
    uint8_t writable, user, cacheable, device;
    int region;
};

struct vma {
    uint64_t start, end, flags, prot;
    int live;
    int fault_kind;
    struct dmamap_chunk *chunks;
    uint64_t *chunk_start;       /* prefix sums of chunk pages */
    int nchunks;
    uint64_t first_page;
    uint64_t fault_around;
    int large;
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

struct dmamap_as {
    dmamap_machine *m;
    int kernel;
    _Atomic int closed;          /* dmamap_as_close ran: every later call is refused */
    pthread_mutex_t lock;        /* recursive: fault callbacks re-enter */
    uint64_t root;
    struct vma *vmas;
    int nvmas, capvmas;
    int last_vma;
    struct tlb_entry tlb[TLB_SIZE];
    /* walk cache: wc_pa[l] is the level-l table covering the VAs with
     * va >> (21 + 9 * l) == wc_tag[l] (~0: none), for l below the root level */
    uint64_t wc_tag[MAX_LEVELS];
    uint64_t wc_pa[MAX_LEVELS];
    /* Per-ISA constants, so hot paths make no indirect calls: the output-address
     * bits of a leaf at each level, and the software "special" bit.  Both ISAs
     * encode a leaf as (output address | attribute bits). */
    uint64_t pa_mask[MAX_LEVELS];
    uint64_t special_bit;
    uint64_t va_lo, va_hi;         /* the address space's VA range, as dmamap_as_va_range */
    /* decode memo of the TLB-miss path: what the last leaf attribute bits seen
     * (entry & ~pa_mask[level]) decode to; decoding depends on those bits only. */
    uint64_t dm_attr;
    int dm_level;
    uint8_t dm_valid, dm_writable, dm_user, dm_cacheable, dm_device;
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

/* machine.c */
uint8_t *dmamap_host_ptr(dmamap_machine *m, uint64_t pa, uint64_t n, int *type);
int dmamap_region_lookup(dmamap_machine *m, uint64_t pa, struct dmamap_region *out);
int dmamap_pfn_is_ram(dmamap_machine *m, uint64_t pfn);
struct page_desc *dmamap_page(dmamap_machine *m, uint64_t pfn);
int dmamap_alloc_table_page(dmamap_machine *m, uint64_t *pa_out, struct dmamap_err *err);
void dmamap_free_table_page(dmamap_machine *m, uint64_t pa);
int dmamap_io_access(dmamap_machine *m, uint64_t pa, int size, int is_write, uint64_t *value,
                     struct dmamap_err *err);
int dmamap_memtype_check(dmamap_machine *m, uint64_t pa, uint64_t size, int cache, struct dmamap_err *err);
int dmamap_memtype_conflict(dmamap_machine *m, uint64_t pa, uint64_t size, int cache);

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

/* cache.c */
void dmamap_cache_read(dmamap_machine *m, uint64_t pa, uint8_t *host, void *buf, uint64_t n);
void dmamap_cache_write(dmamap_machine *m, uint64_t pa, uint8_t *host, const void *buf, uint64_t n);
void dmamap_cache_maint(dmamap_machine *m, uint64_t pa, uint64_t size, int clean, int inval);

/* pgtable.c */
uint64_t *dmamap_table_ptr(dmamap_machine *m, uint64_t table_pa);
int dmamap_pt_fill(dmamap_as *as, uint64_t va, uint64_t pfn, uint64_t npages, uint64_t prot,
                   int large, int special, struct dmamap_err *err);
void dmamap_pt_clear(dmamap_as *as, uint64_t va, uint64_t npages);
int dmamap_pt_walk(dmamap_as *as, uint64_t va, uint64_t **entry_out, int *level_out);
int dmamap_pt_walk_mem(dmamap_as *as, uint64_t va, uint64_t **entry_out, int *level_out);
int dmamap_pt_range_empty(dmamap_as *as, uint64_t va, uint64_t npages, uint64_t *busy_va);
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

/* tlb */
void dmamap_tlb_flush_range(dmamap_as *as, uint64_t va, uint64_t size);

#define LOCK(l) pthread_mutex_lock(l)
#define UNLOCK(l) pthread_mutex_unlock(l)

#pragma GCC visibility pop

#endif
