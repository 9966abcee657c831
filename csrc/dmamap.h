/* dmamap C core: public API.  Every exported symbol is prefixed dmamap_.
 *
 * This file is also fed to cffi's cdef (preprocessor lines stripped), so it
 * holds declarations only and uses no macros in declarations.
 */
#ifndef DMAMAP_H
#define DMAMAP_H
#include <stdint.h>
#include <stddef.h>

typedef struct dmamap_machine dmamap_machine;
typedef struct dmamap_as dmamap_as;

/* Error report filled by every fallible call; code is also the return value. */
struct dmamap_err {
    int code;
    uint64_t addr;
    uint64_t aux;
    char msg[240];
};

enum {
    DMAMAP_OK = 0,
    DMAMAP_EINVAL = -1,          /* bad argument (range, alignment, wrap) */
    DMAMAP_ENOMEM = -2,          /* out of emulated RAM */
    DMAMAP_EPHYS = -3,           /* physical address outside any region */
    DMAMAP_ESEGV = -4,           /* access to an address with no VMA */
    DMAMAP_ENOHANDLER = -5,      /* not-present page in a VMA without fault handler */
    DMAMAP_EPROT = -6,           /* protection violation */
    DMAMAP_EALIGN = -7,          /* unaligned access to Device memory */
    DMAMAP_EBADPAGE = -8,        /* fault handler / insert_page given a non-RAM or anon page */
    DMAMAP_EVMAKIND = -9,        /* PFN insert into the wrong VMA kind / both flags */
    DMAMAP_ECOW = -10,           /* private write fault on non-RAM: SIGBUS */
    DMAMAP_EBUSY = -11,          /* prefault/insert into a non-empty PTE */
    DMAMAP_EMEMTYPE = -12,       /* conflicting cache types for one physical range */
    DMAMAP_ESIGBUS = -13,        /* fault handler returned SIGBUS */
    DMAMAP_EHANDLER = -14,       /* Python callback raised; exception stashed by caller */
    DMAMAP_EVIRT = -15,          /* virt_to_page on a non direct-mapped address */
    DMAMAP_ENOVMA = -16,         /* stale or unknown VMA id */
    DMAMAP_ECLOSED = -17,        /* machine or address space already closed */
    DMAMAP_EIO = -18,            /* access to an unclaimed MMIO / port address */
    DMAMAP_ERANGE = -19,         /* address range outside the VMA / address space */
    DMAMAP_EIOFAULT = -20,       /* access past the ports a port mapping reaches (#GP / abort) */
    DMAMAP_EDMAOWN = -21         /* CPU access to a device-owned streaming DMA buffer */
};

/* Instruction sets built in (arch/arches.h); run-time variants get ids from
 * DMAMAP_ISA_VARIANT_FIRST on. */
enum { DMAMAP_ISA_X86_64 = 1, DMAMAP_ISA_AARCH64 = 2, DMAMAP_ISA_RISCV64 = 3, DMAMAP_ISA_VARIANT_FIRST = 64 };
enum { DMAMAP_ISA_NAME_MAX = 24, DMAMAP_CACHE_MAX = 8 };

/* Size of the physical memory map. */
enum { DMAMAP_MAX_REGIONS = 64 };

/* Physical region types. */
enum {
    DMAMAP_MEM_RAM = 1,      /* has page descriptors; pfn_valid() */
    DMAMAP_MEM_SRAM = 2,     /* RAM-like, no page descriptors */
    DMAMAP_MEM_MMIO = 3,     /* accesses call the owning device */
    DMAMAP_MEM_IOWIN = 4     /* memory-mapped I/O-port window */
};

/* Generic protection request, turned into arch PTE bits by dmamap_prot_make. */
enum {
    DMAMAP_PROT_READ = 1,
    DMAMAP_PROT_WRITE = 2,
    DMAMAP_PROT_EXEC = 4,
    DMAMAP_PROT_USER = 8
};

/* VMA flags, named and numbered as Linux's vm_flags. */
enum {
    DMAMAP_VM_READ = 0x1,
    DMAMAP_VM_WRITE = 0x2,
    DMAMAP_VM_EXEC = 0x4,
    DMAMAP_VM_SHARED = 0x8,
    DMAMAP_VM_IO = 0x4000,
    DMAMAP_VM_DONTEXPAND = 0x40000,
    DMAMAP_VM_PFNMAP = 0x400,
    DMAMAP_VM_MIXEDMAP = 0x10000000,
    DMAMAP_VM_DONTDUMP = 0x4000000,
    DMAMAP_VM_DONTCOPY = 0x20000,      /* fork leaves the VMA out of the child */
    DMAMAP_VM_WIPEONFORK = 0x2000000   /* the child's copy starts empty */
};

/* Fault handler kinds of a VMA. */
enum {
    DMAMAP_FAULT_NONE = 0,
    DMAMAP_FAULT_PAGE = 1,     /* built-in: hand out page descriptors of the chunks */
    DMAMAP_FAULT_PFN = 2,      /* built-in: vmf_insert_pfn of the chunks */
    DMAMAP_FAULT_PYTHON = 3,   /* callback */
    DMAMAP_FAULT_PIO = 4       /* trapped port I/O: no PTEs, every access traps */
};

/* Fault callback results. */
enum { DMAMAP_VM_FAULT_PAGE = 0, DMAMAP_VM_FAULT_NOPAGE = 1, DMAMAP_VM_FAULT_SIGBUS = 2 };

/* The fault callback's is_write argument: bit 0 a write; with
 * DMAMAP_FAULT_FLAG_MKWRITE the call is vm_ops->page_mkwrite, made when a
 * write meets a read-only PTE of a shared writable write-notify VMA
 * (wp_page_shared); NOPAGE from it lets the PTE become writable. */
enum { DMAMAP_FAULT_FLAG_WRITE = 1, DMAMAP_FAULT_FLAG_MKWRITE = 2 };

/* Access kinds for the I/O callback. */
enum { DMAMAP_IO_MMIO = 0, DMAMAP_IO_PORT = 1 };

/* Page descriptor flags. */
enum {
    DMAMAP_PG_RESERVED = 1,
    DMAMAP_PG_ANON = 2,
    DMAMAP_PG_TABLE = 4,
    DMAMAP_PG_DMA = 8
};

/* Memtype conflict policy. */
enum { DMAMAP_MEMTYPE_STRICT = 0, DMAMAP_MEMTYPE_REPORT = 1 };

typedef int (*dmamap_io_fn)(void *ctx, int kind, int owner, int bar, uint64_t offset,
                            int size, int is_write, uint64_t *value);
typedef int (*dmamap_fault_fn)(void *ctx, int64_t vma_id, uint64_t va, int is_write,
                               uint64_t *pfn_out);

struct dmamap_region {
    int type;
    int owner;          /* device id for MMIO, -1 otherwise */
    int bar;
    uint64_t base;
    uint64_t size;
    uint64_t backing_offset;
};

struct dmamap_page_info {
    uint32_t flags;
    int32_t refcount;
    int32_t mapcount;
    uint32_t table_used;
};

struct dmamap_machine_stats {
    uint64_t ram_pages;
    uint64_t ram_pages_used;
    uint64_t table_pages;
    uint64_t dma_bytes_read;
    uint64_t dma_bytes_written;
    uint64_t cache_hits;
    uint64_t cache_misses;
    uint64_t cache_writebacks;
    uint64_t memtype_reports;
    uint64_t mmio_accesses;
    uint64_t port_accesses;
    uint64_t cache_lines_maintained;  /* lines covered by clean/invalidate/flush ranges (one DC op each) */
    uint64_t port_master_aborts;      /* port accesses no device claimed: reads all-ones, writes dropped */
};

struct dmamap_as_stats {
    uint64_t ptes_written;
    uint64_t ptes_cleared;
    uint64_t faults;
    uint64_t cow_faults;
    uint64_t tlb_hits;
    uint64_t tlb_misses;
    uint64_t tlb_flushes;
    uint64_t table_pages;
    uint64_t pio_traps;
    /* appended: the complete event counts the benchmark cost model prices */
    uint64_t faults_page;        /* built-in handler returning a page descriptor */
    uint64_t faults_pfn;         /* built-in handler inserting a PFN (4 KiB or 2 MiB) */
    uint64_t faults_huge;        /* of faults_pfn: a 2 MiB block mapped by one fault */
    uint64_t faults_python;      /* Python (vm_operations) fault handler called */
    uint64_t around_ptes;        /* PTEs fault-around filled beyond the faulting page */
    uint64_t page_walks;         /* MMU walks after a TLB miss that found an entry */
};

struct dmamap_xlate {
    uint64_t pa;
    uint64_t entry;      /* raw leaf descriptor */
    uint64_t entry_pa;   /* physical address of the leaf descriptor */
    uint64_t page_size;
    int cache;           /* arch cache-type id (see dmamap_cache_name) */
    int writable;
    int user;
    int executable;
    int special;
    int cacheable;
    int device;
    int region;          /* DMAMAP_MEM_* of pa, 0 if none */
};

struct dmamap_vma_info {
    uint64_t start;
    uint64_t end;
    uint64_t flags;
    uint64_t page_prot;
    int fault_kind;
    int live;
    uint64_t pgoff;   /* vm_pgoff, in pages */
};

/* A contiguous run of page frames, for scatter-gather VMAs. */
struct dmamap_chunk {
    uint64_t pfn;
    uint64_t npages;
};

struct dmamap_memtype_report {
    uint64_t start;
    uint64_t end;
    int existing;
    int requested;
};

/* One ISA as the core describes it: what Python builds its ISA list, layouts
 * and kernel cache names from.  Cache fields are cache ids (dmamap_cache_name). */
struct dmamap_isa_info {
    int id;
    char name[24];
    int base;                    /* the ISA a variant derives from; id itself otherwise */
    int levels;
    int va_bits;
    int ncache;
    int noncached, writecombine, dmacoherent, cached;
    int device_align_fault;
    int faulting_store_partial;
    int kernel_half;
    uint64_t user_lo, user_hi, kern_lo, kern_hi;
    uint64_t page_offset, vmalloc_start, vmalloc_end;
    uint64_t ram_base, ram_max, sram_base, sram_max, mmio_base, mmio_size, iowin_base;
    uint64_t mt_field;           /* bits a variant may use for memory types (0: no variants) */
    uint64_t mt_mask;
};

/* One memory type of a run-time ISA variant. */
struct dmamap_memtype_desc {
    char name[24];
    uint64_t bits;               /* the type's encoding: its bits within the variant's mt_mask */
    int cacheable;
    int device;
};

/* A variant of an ISA that differs only in how PTEs encode memory types
 * (e.g. T-Head XTheadMae on riscv64).  Cache fields index cache[]. */
struct dmamap_isa_variant {
    char name[24];
    int base;                    /* ISA id; its mt_field must hold mt_mask */
    uint64_t mt_mask;
    int ncache;
    struct dmamap_memtype_desc cache[8];
    int noncached, writecombine, dmacoherent, cached;
};

/* ---- arch: the ISA table and PTE encode/decode ---- */
int dmamap_isa_count(void);
int dmamap_isa_info(int index, struct dmamap_isa_info *out);
/* Registers a variant and returns its id (> 0), or the id of an identical one
 * registered before; a negative DMAMAP_E* code and err on a bad description. */
int dmamap_isa_register_variant(const struct dmamap_isa_variant *v, struct dmamap_err *err);
int dmamap_isa_levels(int isa);
int dmamap_isa_va_bits(int isa);
const char *dmamap_cache_name(int isa, int cache);
int dmamap_cache_count(int isa);
int dmamap_cache_is_cacheable(int isa, int cache);
int dmamap_cache_is_device(int isa, int cache);
uint64_t dmamap_prot_make(int isa, unsigned flags, int cache);
int dmamap_prot_cache(int isa, uint64_t prot);
uint64_t dmamap_prot_set_cache(int isa, uint64_t prot, int cache);
unsigned dmamap_prot_flags(int isa, uint64_t prot);
int dmamap_cache_by_pat_index(int isa, int index);

/* ---- machine ---- */
dmamap_machine *dmamap_machine_new(int isa, void *backing, uint64_t backing_size,
                                   int coherent, struct dmamap_err *err);
void dmamap_machine_free(dmamap_machine *m);
/* Backing memory: map a memfd; retire (closing: pages back to the host, range
 * stays readable as zeros); unmap (at free).  dmamap_machine_close refuses
 * every later call with DMAMAP_ECLOSED but frees nothing. */
int dmamap_backing_map(uint64_t size, void **out, struct dmamap_err *err);
void dmamap_backing_retire(void *p, uint64_t size);
void dmamap_backing_unmap(void *p, uint64_t size);
void dmamap_machine_close(dmamap_machine *m);
void dmamap_machine_set_io(dmamap_machine *m, dmamap_io_fn fn, void *ctx);
int dmamap_machine_set_cache(dmamap_machine *m, uint64_t size, int ways, struct dmamap_err *err);
void dmamap_machine_set_memtype_policy(dmamap_machine *m, int policy);
int dmamap_add_region(dmamap_machine *m, const struct dmamap_region *r, struct dmamap_err *err);
int dmamap_remove_region(dmamap_machine *m, uint64_t base, struct dmamap_err *err);
int dmamap_region_count(dmamap_machine *m);
int dmamap_region_get(dmamap_machine *m, int i, struct dmamap_region *out);
/* The whole memory map at one instant (up to max regions); returns how many. */
int dmamap_regions(dmamap_machine *m, struct dmamap_region *out, int max);
int dmamap_region_of(dmamap_machine *m, uint64_t pa);
void dmamap_machine_stats(dmamap_machine *m, struct dmamap_machine_stats *out);

int dmamap_phys_read(dmamap_machine *m, uint64_t pa, void *buf, uint64_t n, struct dmamap_err *err);
int dmamap_phys_write(dmamap_machine *m, uint64_t pa, const void *buf, uint64_t n, struct dmamap_err *err);
int dmamap_pfn_valid(dmamap_machine *m, uint64_t pfn);
int dmamap_page_info(dmamap_machine *m, uint64_t pfn, struct dmamap_page_info *out, struct dmamap_err *err);

int dmamap_alloc_pages(dmamap_machine *m, uint64_t npages, uint64_t align_pages, uint32_t flags,
                       uint64_t *pfn_out, struct dmamap_err *err);
/* As dmamap_alloc_pages, every page at or below max_pa (a DMA mask); ENOMEM if none fit. */
int dmamap_alloc_pages_below(dmamap_machine *m, uint64_t npages, uint64_t align_pages, uint32_t flags,
                             uint64_t max_pa, uint64_t *pfn_out, struct dmamap_err *err);
int dmamap_free_pages(dmamap_machine *m, uint64_t pfn, uint64_t npages, struct dmamap_err *err);
int dmamap_get_page(dmamap_machine *m, uint64_t pfn, struct dmamap_err *err);
int dmamap_put_page(dmamap_machine *m, uint64_t pfn, struct dmamap_err *err);

/* I/O-window translation slots: window pa -> port. */
int dmamap_iowin_map(dmamap_machine *m, uint64_t pa, uint64_t size, uint64_t port, struct dmamap_err *err);
int dmamap_iowin_unmap(dmamap_machine *m, uint64_t pa, struct dmamap_err *err);
int dmamap_port_access(dmamap_machine *m, uint64_t port, int size, int is_write, uint64_t *value,
                       struct dmamap_err *err);

/* Cache maintenance (arm model; no-ops on a coherent machine). */
int dmamap_flush_dcache_range(dmamap_machine *m, uint64_t pa, uint64_t size, struct dmamap_err *err);
int dmamap_invalidate_dcache_range(dmamap_machine *m, uint64_t pa, uint64_t size, struct dmamap_err *err);
int dmamap_clean_dcache_range(dmamap_machine *m, uint64_t pa, uint64_t size, struct dmamap_err *err);

/* Device DMA: reads/writes memory, never the CPU cache. */
int dmamap_dma_rw(dmamap_machine *m, uint64_t pa, void *buf, uint64_t n, int is_write,
                  struct dmamap_err *err);

/* Streaming-DMA ownership (dma_own.c): physical ranges the device owns.  A CPU
 * access through a cacheable mapping to one fails with DMAMAP_EDMAOWN, or, in
 * record mode, succeeds and is appended to a log drained by dmamap_dma_own_drain. */
struct dmamap_dma_own_event {
    uint64_t pa;       /* first byte of the access inside the owned range */
    uint64_t start;    /* the owned range */
    uint64_t size;
    int64_t tag;       /* caller's tag of the range */
    int is_write;
};
int dmamap_dma_own_add(dmamap_machine *m, uint64_t pa, uint64_t size, int64_t tag, struct dmamap_err *err);
int dmamap_dma_own_remove(dmamap_machine *m, uint64_t pa, uint64_t size, struct dmamap_err *err);
void dmamap_dma_own_set_record(dmamap_machine *m, int record);
int dmamap_dma_own_drain(dmamap_machine *m, struct dmamap_dma_own_event *out, int max, uint64_t *dropped);

/* Write-combining buffer (wcb.c): with entries > 0, CPU stores through WC
 * (x86) / Normal-NC (arm) mappings of memory gather in `entries` 64-byte lines
 * and reach memory at a barrier (dmamap_wcb_drain), after an uncached access,
 * or when evicted; entries 0 turns it off (the default). */
int dmamap_machine_set_wcb(dmamap_machine *m, int entries, struct dmamap_err *err);
int dmamap_wcb_drain(dmamap_machine *m, struct dmamap_err *err);
void dmamap_wcb_stats(dmamap_machine *m, uint64_t *out3);

/* Index the data cache by virtual address (VIPT; tags stay physical). */
int dmamap_machine_set_vipt(dmamap_machine *m, int vipt, struct dmamap_err *err);

/* Memtype tracking. */
int dmamap_memtype_reserve(dmamap_machine *m, uint64_t pa, uint64_t size, int cache, struct dmamap_err *err);
int dmamap_memtype_free(dmamap_machine *m, uint64_t pa, uint64_t size, int cache, struct dmamap_err *err);
int dmamap_memtype_lookup(dmamap_machine *m, uint64_t pa);
int dmamap_memtype_reports(dmamap_machine *m, struct dmamap_memtype_report *out, int max);

/* ---- address spaces ---- */
dmamap_as *dmamap_as_new(dmamap_machine *m, int kernel, struct dmamap_err *err);
/* Close: tear down the mappings, refuse later calls (idempotent, thread-safe).
 * Free: release the structure, once no caller can hold it. */
void dmamap_as_close(dmamap_as *as);
int dmamap_as_closed(dmamap_as *as);   /* 1 once closed (or its machine is; or NULL) */
void dmamap_as_free(dmamap_as *as);
uint64_t dmamap_as_root(dmamap_as *as);
void dmamap_as_set_fault_cb(dmamap_as *as, dmamap_fault_fn fn, void *ctx);
void dmamap_as_stats(dmamap_as *as, struct dmamap_as_stats *out);
int dmamap_as_va_range(dmamap_as *as, uint64_t *lo, uint64_t *hi);

int dmamap_mmap(dmamap_as *as, uint64_t addr, uint64_t length, uint64_t vm_flags, uint64_t prot,
                uint64_t align, int64_t *id_out, struct dmamap_err *err);
int dmamap_munmap(dmamap_as *as, int64_t id, struct dmamap_err *err);
/* DMAMAP_MUNMAP_NOFLUSH leaves the TLB to the caller (a port batching shootdowns
 * calls dmamap_tlb_flush_all); the conformance suite uses it to model a port
 * that forgets the flush. */
enum { DMAMAP_MUNMAP_NOFLUSH = 1 };
int dmamap_munmap_flags(dmamap_as *as, int64_t id, int flags, struct dmamap_err *err);
/* Split VMA id at addr (mm/mmap.c __split_vma): id keeps [start, addr), *new_id
 * gets [addr, end) with vm_pgoff, handler and reservations carried over. */
int dmamap_vma_split(dmamap_as *as, int64_t id, uint64_t addr, int64_t *new_id, struct dmamap_err *err);
/* Grow VMA id to new_len (mm/mremap.c): in place, or moved with its PTEs when
 * may_move; *new_start gets its start. */
int dmamap_mremap(dmamap_as *as, int64_t id, uint64_t new_len, int may_move, uint64_t *new_start,
                  struct dmamap_err *err);
/* Copy parent's VMAs into the empty address space child as fork's dup_mmap:
 * VM_DONTCOPY left out, VM_WIPEONFORK empty, PTEs of PFN / mixed maps and
 * private mappings copied (private RAM write-protected in both: copy-on-write),
 * memtype reservations taken again (track_pfn_copy).  ids gets (parent id,
 * child id) pairs, at most max pairs; *n_out their count. */
int dmamap_fork(dmamap_as *parent, dmamap_as *child, int64_t *ids, int max, int *n_out, struct dmamap_err *err);
int dmamap_vma_info(dmamap_as *as, int64_t id, struct dmamap_vma_info *out, struct dmamap_err *err);
int dmamap_vma_set_flags(dmamap_as *as, int64_t id, uint64_t set, uint64_t clear, struct dmamap_err *err);
int dmamap_vma_set_prot(dmamap_as *as, int64_t id, uint64_t prot, struct dmamap_err *err);
/* vma->vm_pgoff (mmap's offset in pages; drivers may rewrite it). */
int dmamap_vma_set_pgoff(dmamap_as *as, int64_t id, uint64_t pgoff, struct dmamap_err *err);
int dmamap_vma_set_fault(dmamap_as *as, int64_t id, int kind, const struct dmamap_chunk *chunks,
                         int nchunks, uint64_t first_page, uint64_t fault_around, int large,
                         struct dmamap_err *err);
/* Trapped port I/O: access at start + i reaches port + i, for i < count. */
int dmamap_vma_set_pio(dmamap_as *as, int64_t id, uint64_t port, uint64_t count, struct dmamap_err *err);
int64_t dmamap_vma_find(dmamap_as *as, uint64_t va);

/* Kernel-named primitives. */
/* flags: DMAMAP_REMAP_LARGE uses 2 MiB / 1 GiB entries where aligned;
 * DMAMAP_REMAP_NOTRACK skips memtype tracking (the kernel's direct map). */
enum { DMAMAP_REMAP_LARGE = 1, DMAMAP_REMAP_NOTRACK = 2 };
int dmamap_remap_pfn_range(dmamap_as *as, int64_t id, uint64_t addr, uint64_t pfn, uint64_t size,
                           uint64_t prot, int flags, struct dmamap_err *err);
/* remap_pfn_range of pages [first_page, first_page + nr_pages) of a chunk list,
 * linearly from addr, in one call; all or nothing. */
int dmamap_remap_pfn_chunks(dmamap_as *as, int64_t id, uint64_t addr, const struct dmamap_chunk *chunks, int nchunks,
                            uint64_t first_page, uint64_t nr_pages, uint64_t prot, int flags,
                            struct dmamap_err *err);
/* dma_mmap_coherent's prefault (csrc/dma_mmap.c): set the VMA's protection to prot and
 * remap_pfn_chunks from its start; a refusal restores the protection. */
int dmamap_dma_mmap_prefault(dmamap_as *as, int64_t id, const struct dmamap_chunk *chunks, int nchunks,
                             uint64_t first_page, uint64_t nr_pages, uint64_t prot, int flags,
                             struct dmamap_err *err);
int dmamap_vmf_insert_pfn_prot(dmamap_as *as, int64_t id, uint64_t addr, uint64_t pfn, uint64_t prot,
                               struct dmamap_err *err);
int dmamap_vmf_insert_mixed(dmamap_as *as, int64_t id, uint64_t addr, uint64_t pfn, struct dmamap_err *err);
int dmamap_vm_insert_page(dmamap_as *as, int64_t id, uint64_t addr, uint64_t pfn, struct dmamap_err *err);
/* vm_insert_pages: n RAM pages at consecutive addresses from addr, all or nothing. */
int dmamap_vm_insert_pages(dmamap_as *as, int64_t id, uint64_t addr, const uint64_t *pfns, uint64_t n,
                           struct dmamap_err *err);
int dmamap_zap_vma_ptes(dmamap_as *as, int64_t id, uint64_t addr, uint64_t size, struct dmamap_err *err);
/* mm/huge_memory.c vmf_insert_pfn_pmd: one 2 MiB special block at the PMD of
 * addr (pfn 2 MiB-aligned, the block inside the VM_PFNMAP / VM_MIXEDMAP VMA);
 * a PMD that is not none is left as it is (0 returned, nothing inserted). */
int dmamap_vmf_insert_pfn_pmd(dmamap_as *as, int64_t id, uint64_t addr, uint64_t pfn, int write,
                              struct dmamap_err *err);
/* 1 when the PMD entry of va is none (no block, no table: create_huge_pmd may
 * run), 0 when not, or an error (negative). */
int dmamap_pmd_none(dmamap_as *as, uint64_t va, struct dmamap_err *err);
/* vma_wants_writenotify: PTEs of a shared writable VMA are installed
 * read-only (write dropped from its protection) and the first write to each
 * calls the fault callback with DMAMAP_FAULT_FLAG_MKWRITE (page_mkwrite). */
int dmamap_vma_set_wrnotify(dmamap_as *as, int64_t id, int on, struct dmamap_err *err);
/* mm/vma.c vma_merge: VMA b, adjacent after VMA a, joins it when both are
 * compatible (same flags, protection, fault handler and chunk list, vm_pgoff
 * and chunk pages contiguous, no port window, no VM_SPECIAL flag); b is gone,
 * its PTEs and memtype reservations now a's.  DMAMAP_EINVAL when not mergeable
 * (nothing changed). */
int dmamap_vma_merge(dmamap_as *as, int64_t a, int64_t b, struct dmamap_err *err);
int dmamap_mprotect(dmamap_as *as, int64_t id, uint64_t addr, uint64_t size, uint64_t prot,
                    struct dmamap_err *err);

/* Walks and accesses. */
int dmamap_translate(dmamap_as *as, uint64_t va, struct dmamap_xlate *out, struct dmamap_err *err);
int dmamap_access(dmamap_as *as, uint64_t va, void *buf, uint64_t n, int is_write, struct dmamap_err *err);
/* dmamap_access refused up front (SIGSEGV) unless VMAs cover the range, with
 * runs of plainly copied memory moved by one memmove each. */
int dmamap_access_bulk(dmamap_as *as, uint64_t va, void *buf, uint64_t n, int is_write, struct dmamap_err *err);
int dmamap_read_n(dmamap_as *as, uint64_t va, int size, uint64_t *value, struct dmamap_err *err);
int dmamap_write_n(dmamap_as *as, uint64_t va, int size, uint64_t value, struct dmamap_err *err);
/* Register accesses returning the value (the Python fast path): widths 1-4
 * return the value or a negative DMAMAP_E* code, width 8 returns ~0 on failure
 * (the value ~0 too: dmamap_fast_err()->code tells); the writes return the code.
 * The error record is per thread; dmamap_fast_pending(1) (a callback raised)
 * fails the thread's next fast access. */
int64_t dmamap_read8_fast(dmamap_as *as, uint64_t va);
int64_t dmamap_read16_fast(dmamap_as *as, uint64_t va);
int64_t dmamap_read32_fast(dmamap_as *as, uint64_t va);
uint64_t dmamap_read64_fast(dmamap_as *as, uint64_t va);
int dmamap_write8_fast(dmamap_as *as, uint64_t va, uint8_t value);
int dmamap_write16_fast(dmamap_as *as, uint64_t va, uint16_t value);
int dmamap_write32_fast(dmamap_as *as, uint64_t va, uint32_t value);
int dmamap_write64_fast(dmamap_as *as, uint64_t va, uint64_t value);
int64_t dmamap_fast_nop(dmamap_as *as, uint64_t va);   /* the cffi call floor, for the benchmark */
/* The same access for a caller holding a lock it must not wait under (the
 * GIL): 1 when done (a TLB hit on plain memory), 0 with nothing changed when
 * the caller must make the ordinary call instead. */
int dmamap_access_try(dmamap_as *as, uint64_t va, int size, int is_write, uint64_t *value);
struct dmamap_err *dmamap_fast_err(void);
void dmamap_fast_pending(int pending);
/* dmamap_access_bulk with its error in the thread's record, as the register
 * accesses above (for the binding's C methods, which call it by address). */
int dmamap_access_bulk_fast(dmamap_as *as, uint64_t va, void *buf, uint64_t n, int is_write);
/* Zero-copy views: resolve [va, va+n) as an access (is_write: as a write) and
 * pin its pages if the CPU reaches them with no emulation between (cacheable
 * RAM, no cache model, physically contiguous, not device-owned); the host
 * pointer and physical address out.  Otherwise *refused = 1, the reason in
 * err->msg, nothing pinned.  unpin drops the references (freeing a page whose
 * last one it was). */
int dmamap_view_pin(dmamap_as *as, uint64_t va, uint64_t n, int is_write, uint8_t **host_out, uint64_t *pa_out,
                    int *refused, struct dmamap_err *err);
void dmamap_view_unpin(dmamap_machine *m, uint64_t pa, uint64_t n);
int dmamap_touch(dmamap_as *as, uint64_t va, uint64_t count, uint64_t stride, int is_write,
                 struct dmamap_err *err);
int dmamap_touch_list(dmamap_as *as, const uint64_t *vas, uint64_t count, int is_write,
                      struct dmamap_err *err);
int dmamap_count_present(dmamap_as *as, uint64_t va, uint64_t size, uint64_t *out, struct dmamap_err *err);
void dmamap_tlb_flush_all(dmamap_as *as);

/* Reference loops for benchmarks. */
uint64_t dmamap_bench_store_loop(uint64_t *buf, uint64_t n, uint64_t value);
/* The first byte of each of npages pages of emulated memory from pa loaded, as a
 * fault run loads them (the share-nothing parallel reference): *ns taken. */
int dmamap_bench_load_pages(dmamap_machine *m, uint64_t pa, uint64_t npages, uint64_t *ns, struct dmamap_err *err);
int64_t dmamap_bench_host_map(uint64_t size, int populate, uint64_t touch_stride);
int dmamap_bench_host_memfd(uint64_t size);
int64_t dmamap_bench_host_touch(int fd, uint64_t size, int populate, const uint64_t *vas, uint64_t base,
                                uint64_t count, uint64_t stride, int is_write, uint64_t *times);
/* dmamap_bench_host_ref flags: fill, memory, touch. */
enum {
    DMAMAP_HOST_LAZY = 0, DMAMAP_HOST_MAP_POPULATE = 1, DMAMAP_HOST_MADV_POPULATE = 2, DMAMAP_HOST_FILL_MASK = 3,
    DMAMAP_HOST_TOUCH_READ = 4, DMAMAP_HOST_TOUCH_STORE = 8, DMAMAP_HOST_TOUCH_RMW = 12,
    DMAMAP_HOST_TOUCH_MASK = 12, DMAMAP_HOST_ANON = 16, DMAMAP_HOST_THP = 32,
};
int dmamap_bench_host_ref(int fd, uint64_t size, uint32_t flags, const uint64_t *vas, uint64_t base,
                          uint64_t count, uint64_t stride, uint64_t *out);
int64_t dmamap_bench_host_fault_around(int fd, uint64_t size);
int dmamap_bench_populate(dmamap_machine *m, uint64_t pa, uint64_t size, struct dmamap_err *err);
uint64_t dmamap_now_ns(void);

#endif
