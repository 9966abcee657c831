/* ThreadSanitizer harness for the dmamap C core.
 *
 * CPython is not instrumented, so TSan cannot watch the core from the Python
 * tests; this program drives the core's entry points from plain threads the
 * way the Python soak does -- private and shared address spaces, built-in
 * page and PFN faults, remaps of SRAM and MMIO, accesses through the cache
 * model (bulk runs too), zaps, munmaps, device DMA, region lookups, an address space closed
 * under the threads using it and, last, the machine closed under them all.
 * Errors are expected (a closed space refuses calls); data races are not: any
 * TSan report fails the run (TSAN_OPTIONS=halt_on_error=1).
 *
 * Built and run by .ci/run:  gcc -fsanitize=thread ... tests/tsan/harness.c csrc/ *.c arch/ * / *.c
 */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "dmamap.h"

#define THREADS 4
#define ITERS 300
#define PAGE 4096ULL
#define RAM (32ULL << 20)
#define SRAM (1ULL << 20)

struct layout {
    int isa;
    uint64_t ram_base, sram_base, mmio_base, iowin_base;
};

static const struct layout layouts[] = {
    {DMAMAP_ISA_X86_64, 0, 0x7000000000ULL, 0x7100000000ULL, 0x7200000000ULL},
    {DMAMAP_ISA_AARCH64, 0x40000000ULL, 0x04000000ULL, 0x10000000ULL, 0x3eff0000ULL},
};

static dmamap_machine *m;
static const struct layout *L;
static dmamap_as *shared;
static pthread_barrier_t start;
static _Atomic int stop_machine;
static uint64_t dma_pa;   /* pages allocated for the device's DMA (one per thread), never handed out again */
static _Atomic unsigned long touched, remapped, inserted, refused;   /* what ran, to show the harness did work */
static uint64_t list_pfn;   /* four RAM pages every thread vm_insert_pages into the shared space */

static int io_cb(void *ctx, int kind, int owner, int bar, uint64_t offset, int size, int is_write, uint64_t *value)
{
    (void)ctx, (void)kind, (void)owner, (void)bar, (void)size;
    if (!is_write)
        *value = offset ^ 0x5a;
    return 0;
}

static uint64_t user_prot(int writable)
{
    return dmamap_prot_make(L->isa, DMAMAP_PROT_READ | (writable ? DMAMAP_PROT_WRITE : 0) | DMAMAP_PROT_USER, 0);
}

/* A bulk read and write of 128 KiB through a cacheable mapping: on a machine with the cache model
 * (arm), a run long enough for its contiguous path (three times the 32 KiB cache), beside other
 * threads' maintenance and device DMA on the same cache. */
static void bulk_access(dmamap_as *as, unsigned seed)
{
    enum { NP = 32 };
    struct dmamap_err err;
    uint64_t pfn;
    if (dmamap_alloc_pages(m, NP, 1, 0, &pfn, &err))
        return;
    int64_t id;
    struct dmamap_vma_info info;
    uint8_t *buf = malloc(NP * PAGE);
    if (buf && dmamap_mmap(as, 0, NP * PAGE, DMAMAP_VM_READ | DMAMAP_VM_WRITE | DMAMAP_VM_SHARED, user_prot(1), 0,
                           &id, &err) == 0) {
        if (dmamap_vma_info(as, id, &info, &err) == 0 &&
            dmamap_remap_pfn_range(as, id, info.start, pfn, NP * PAGE, user_prot(1), 0, &err) == 0) {
            memset(buf, (int)seed, NP * PAGE);
            dmamap_access_bulk(as, info.start, buf, NP * PAGE, 1, &err);
            dmamap_access_bulk(as, info.start, buf, NP * PAGE, 0, &err);
            dmamap_flush_dcache_range(m, pfn << 12, NP * PAGE, &err);
        }
        dmamap_munmap(as, id, &err);
    }
    free(buf);
    dmamap_free_pages(m, pfn, NP, &err);
}

static void private_space(unsigned seed)
{
    struct dmamap_err err;
    dmamap_as *as = dmamap_as_new(m, 0, &err);
    if (!as)
        return;
    uint64_t pfn;
    if (dmamap_alloc_pages(m, 8, 1, 0, &pfn, &err) == 0) {
        int64_t id;
        if (dmamap_mmap(as, 0, 8 * PAGE, DMAMAP_VM_READ | DMAMAP_VM_WRITE | DMAMAP_VM_SHARED, user_prot(1), 0, &id,
                        &err) == 0) {
            struct dmamap_chunk c = {pfn, 8};
            dmamap_vma_set_fault(as, id, (seed & 1) ? DMAMAP_FAULT_PAGE : DMAMAP_FAULT_PFN, &c, 1, 0,
                                 (seed & 2) ? 4 : 1, 0, &err);
            if (!(seed & 1))
                dmamap_vma_set_flags(as, id, DMAMAP_VM_PFNMAP | DMAMAP_VM_IO, 0, &err);
            struct dmamap_vma_info info;
            if (dmamap_vma_info(as, id, &info, &err) == 0) {
                if (dmamap_touch(as, info.start, 8, PAGE, 1, &err) == 0)
                    touched++;
                else
                    refused++;
                uint64_t v;
                dmamap_write_n(as, info.start + 8, 8, seed, &err);
                dmamap_read_n(as, info.start + 8, 8, &v, &err);
            }
            dmamap_munmap(as, id, &err);
        }
        dmamap_free_pages(m, pfn, 8, &err);
    }
    if (seed % 8 == 5)
        bulk_access(as, seed);
    dmamap_as_close(as);
    dmamap_as_free(as);
}

static void shared_space(dmamap_as *as, unsigned seed)
{
    struct dmamap_err err;
    int64_t id;
    if (dmamap_mmap(as, 0, 4 * PAGE, DMAMAP_VM_READ | DMAMAP_VM_WRITE | DMAMAP_VM_SHARED, user_prot(1), 0, &id,
                    &err)) {
        refused += err.code == DMAMAP_ECLOSED;
        return;
    }
    struct dmamap_vma_info info;
    if (seed % 3 == 1 && dmamap_vma_info(as, id, &info, &err) == 0) {   /* shared RAM pages, as one list */
        uint64_t pfns[4] = {list_pfn + 2, list_pfn + 3, list_pfn, list_pfn + 1};
        if (dmamap_vm_insert_pages(as, id, info.start, pfns, 4, &err) == 0) {
            uint64_t v = 0;
            inserted++;
            dmamap_read_n(as, info.start + 24, 8, &v, &err);
            dmamap_access_try(as, info.start + 24, 8, 0, &v);   /* the binding's no-wait path: a TLB hit */
            dmamap_access_try(as, info.start + 32, 8, 1, &v);
        }
        dmamap_munmap(as, id, &err);
        return;
    }
    if (dmamap_vma_info(as, id, &info, &err) == 0) {
        int mmio = seed % 3 == 0;
        uint64_t pa = mmio ? L->mmio_base : L->sram_base + (seed % 16) * 4 * PAGE;
        uint64_t prot = dmamap_prot_set_cache(L->isa, user_prot(1), L->isa == DMAMAP_ISA_X86_64 ? 2 : 3);
        if (dmamap_remap_pfn_range(as, id, info.start, pa >> 12, 4 * PAGE, prot, 0, &err) == 0) {
            uint64_t v = 0;
            remapped++;
            dmamap_write_n(as, info.start + 16, 4, seed, &err);
            dmamap_read_n(as, info.start + 16, 4, &v, &err);
            dmamap_access_try(as, info.start + 16, 4, 1, &v);
            struct dmamap_xlate x;
            dmamap_translate(as, info.start, &x, &err);
            dmamap_zap_vma_ptes(as, id, info.start, PAGE, &err);
            dmamap_count_present(as, info.start, 4 * PAGE, &v, &err);
        }
    }
    dmamap_munmap(as, id, &err);
}

/* Faulting together: two threads fault VMAs of their own (page handler,
 * remapped now and then) and two they share (a PFN map and a page VMA: the
 * same PTEs raced for) in one address space, with touch loops in reader mode,
 * while a third mprotects them, zaps the shared PFN map, remaps the shared
 * page VMA and maps, faults and unmaps its own; then the space is closed
 * under them, and every page reference must have gone back. */
#define FT_PAGES 64
static dmamap_as *ft_as;
static _Atomic int64_t ft_ids[4];   /* each faulter's VMA, then the shared PFN map and page VMA */
static _Atomic uint64_t ft_start[4];
static _Atomic int ft_done;
static _Atomic unsigned long ft_faults;
static uint64_t ft_pfn;

static int64_t ft_map(uint64_t pfn, int pfnmap, uint64_t *start)
{
    struct dmamap_err err;
    int64_t id;
    struct dmamap_chunk c = {pfn, FT_PAGES};
    struct dmamap_vma_info info;
    if (dmamap_mmap(ft_as, 0, FT_PAGES * PAGE, DMAMAP_VM_READ | DMAMAP_VM_WRITE | DMAMAP_VM_SHARED, user_prot(1), 0,
                    &id, &err) ||
        (pfnmap && dmamap_vma_set_flags(ft_as, id, DMAMAP_VM_PFNMAP | DMAMAP_VM_IO, 0, &err)) ||
        dmamap_vma_set_fault(ft_as, id, pfnmap ? DMAMAP_FAULT_PFN : DMAMAP_FAULT_PAGE, &c, 1, 0, 1, 0, &err) ||
        dmamap_vma_info(ft_as, id, &info, &err))
        return -1;
    *start = info.start;
    return id;
}

static void *ft_faulter(void *arg)
{
    int k = (int)(uintptr_t)arg;
    struct dmamap_err err;
    uint64_t vas[FT_PAGES];
    for (int i = 0; !ft_done; i++) {
        uint64_t start = ft_start[k];
        for (int j = 0; j < FT_PAGES; j++)
            vas[j] = start + (uint64_t)((j * 37) % FT_PAGES) * PAGE;
        if (dmamap_touch(ft_as, start, FT_PAGES, PAGE, i & 1, &err) == 0)
            ft_faults += FT_PAGES;
        dmamap_touch_list(ft_as, vas, FT_PAGES, 0, &err);
        uint64_t v = 0;
        for (int j = 0; j < FT_PAGES; j += 8)   /* no-wait accesses beside the editor's exclusive calls */
            if (!dmamap_access_try(ft_as, start + (uint64_t)j * PAGE, 4, j & 8, &v))
                dmamap_read_n(ft_as, start + (uint64_t)j * PAGE, 4, &v, &err);
        dmamap_touch(ft_as, ft_start[2], FT_PAGES, PAGE, 0, &err);   /* the other faulter races these */
        dmamap_touch(ft_as, ft_start[3], FT_PAGES, PAGE, 0, &err);
        if (err.code == DMAMAP_ECLOSED)
            break;
        if (i % 4 == 3) {   /* fault it all again, from a fresh mapping */
            dmamap_munmap(ft_as, ft_ids[k], &err);
            int64_t id = ft_map(ft_pfn + (uint64_t)k * FT_PAGES, 0, &start);
            if (id < 0)
                break;
            ft_start[k] = start;
            ft_ids[k] = id;
        }
    }
    return NULL;
}

static void *ft_editor(void *arg)
{
    (void)arg;
    struct dmamap_err err;
    int64_t id;
    for (int i = 0; i < ITERS; i++) {
        int k = i % 3;
        dmamap_mprotect(ft_as, ft_ids[k], ft_start[k], FT_PAGES * PAGE, user_prot(i & 1), &err);
        dmamap_zap_vma_ptes(ft_as, ft_ids[2], ft_start[2] + PAGE * (uint64_t)(i % 4), 8 * PAGE, &err);
        uint64_t start;
        if (i % 4 == 3) {   /* the faulters fault the shared page VMA in again, racing for each PTE */
            dmamap_munmap(ft_as, ft_ids[3], &err);
            if ((id = ft_map(ft_pfn + 4 * FT_PAGES, 0, &start)) >= 0) {
                ft_start[3] = start;
                ft_ids[3] = id;
            }
        }
        id = ft_map(ft_pfn + 3 * FT_PAGES, 0, &start);
        if (id >= 0) {
            dmamap_touch(ft_as, start, FT_PAGES, PAGE, 1, &err);
            dmamap_munmap(ft_as, id, &err);
        }
    }
    while (ft_faults < 16 * FT_PAGES)   /* (the faulters got going) */
        sched_yield();
    dmamap_as_close(ft_as);   /* under the faulters: they get ECLOSED from here on */
    ft_done = 1;
    return NULL;
}

static int faulting_together(void)
{
    struct dmamap_err err;
    ft_as = dmamap_as_new(m, 0, &err);
    if (!ft_as || dmamap_alloc_pages(m, 5 * FT_PAGES, 1, 0, &ft_pfn, &err))
        return 1;
    for (int k = 0; k < 4; k++) {
        uint64_t start;
        if ((ft_ids[k] = ft_map(ft_pfn + (uint64_t)(k == 3 ? 4 : k) * FT_PAGES, k == 2, &start)) < 0)
            return 1;
        ft_start[k] = start;
    }
    ft_done = 0;
    ft_faults = 0;
    pthread_t t[3];
    pthread_create(&t[0], NULL, ft_faulter, (void *)0);
    pthread_create(&t[1], NULL, ft_faulter, (void *)1);
    pthread_create(&t[2], NULL, ft_editor, NULL);
    for (int k = 0; k < 3; k++)
        pthread_join(t[k], NULL);
    dmamap_as_free(ft_as);
    struct dmamap_page_info pi;
    for (uint64_t i = 0; i < 5 * FT_PAGES; i++)   /* every reference a PTE took went back */
        if (dmamap_page_info(m, ft_pfn + i, &pi, &err) || pi.mapcount != 0 || pi.refcount != 1) {
            fprintf(stderr, "page %llu: map count %d, references %d after the close\n", (unsigned long long)i,
                    pi.mapcount, pi.refcount);
            return 1;
        }
    dmamap_free_pages(m, ft_pfn, 5 * FT_PAGES, &err);
    printf("tsan harness: %lu faults taken together\n", (unsigned long)ft_faults);
    return ft_faults ? 0 : 1;
}

/* Freeing against get_page: an owner allocates a page and frees it again
 * (retrying while the page is referenced) while two threads take and drop
 * references on whatever page it last published, so increment-if-not-zero
 * races the free's 1 -> 0 exchange and the put_pages race each other. */
#define FG_ROUNDS 3000
static _Atomic uint64_t fg_pfn;
static _Atomic int fg_done, fg_bad;
static _Atomic unsigned long fg_got, fg_busy;

static void *fg_owner(void *arg)
{
    struct dmamap_err err;
    /* (on until the getters did take references: they may start late on a loaded machine) */
    for (long i = 0; i < FG_ROUNDS || (fg_got < 100 && i < 100L * FG_ROUNDS); i++) {
        uint64_t pfn;
        if (dmamap_alloc_pages(m, 1, 1, 0, &pfn, &err)) {
            fg_bad = 1;
            break;
        }
        fg_pfn = pfn;
        int rc;
        while ((rc = dmamap_free_pages(m, pfn, 1, &err)) == DMAMAP_EBUSY)
            fg_busy++;
        if (rc)
            fg_bad = 1;
    }
    fg_done = 1;
    return NULL;
}

static void *fg_getter(void *arg)
{
    struct dmamap_err err;
    while (!fg_done) {
        uint64_t pfn = fg_pfn;
        if (!pfn || dmamap_get_page(m, pfn, &err))
            continue;   /* freed meanwhile: refused, never revived */
        fg_got++;
        if (dmamap_put_page(m, pfn, &err))   /* the owner's reference is still there */
            fg_bad = 1;
    }
    return NULL;
}

static int freeing_racing_gets(void)
{
    struct dmamap_machine_stats before, after;
    dmamap_machine_stats(m, &before);
    fg_pfn = 0;
    fg_done = fg_bad = 0;
    fg_got = fg_busy = 0;
    pthread_t t[3];
    pthread_create(&t[0], NULL, fg_owner, NULL);
    pthread_create(&t[1], NULL, fg_getter, NULL);
    pthread_create(&t[2], NULL, fg_getter, NULL);
    for (int k = 0; k < 3; k++)
        pthread_join(t[k], NULL);
    dmamap_machine_stats(m, &after);
    printf("tsan harness: %lu references taken on pages being freed, %lu frees refused while held\n",
           (unsigned long)fg_got, (unsigned long)fg_busy);
    if (fg_bad || !fg_got || after.ram_pages_used != before.ram_pages_used) {
        fprintf(stderr, "free against get_page: %s, %llu pages in use before, %llu after\n",
                fg_bad ? "a call failed" : "no reference taken", (unsigned long long)before.ram_pages_used,
                (unsigned long long)after.ram_pages_used);
        return 1;
    }
    return 0;
}

static void *worker(void *arg)
{
    unsigned k = (unsigned)(uintptr_t)arg;
    struct dmamap_err err;
    struct dmamap_machine_stats st;
    struct dmamap_region regs[DMAMAP_MAX_REGIONS];
    uint8_t buf[256];
    pthread_barrier_wait(&start);
    for (unsigned i = 0; i < ITERS; i++) {
        unsigned seed = k * 1000003u + i;
        private_space(seed);
        shared_space(shared, seed);
        dmamap_dma_rw(m, dma_pa + k * PAGE, buf, sizeof buf, (int)(i & 1), &err);
        dmamap_flush_dcache_range(m, dma_pa, THREADS * PAGE, &err);
        dmamap_machine_stats(m, &st);
        dmamap_regions(m, regs, DMAMAP_MAX_REGIONS);
        dmamap_region_of(m, L->mmio_base + 8);
        if (k == 0 && i == ITERS / 2)
            dmamap_as_close(shared);   /* under the other threads' feet: they get ECLOSED from here on */
        if (k == 1 && i == ITERS - 20)
            stop_machine = 1;
    }
    return NULL;
}

static int run(const struct layout *lay)
{
    struct dmamap_err err;
    L = lay;
    uint64_t size = RAM + SRAM;
    void *backing = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (backing == MAP_FAILED)
        return 1;
    m = dmamap_machine_new(lay->isa, backing, size, lay->isa == DMAMAP_ISA_X86_64, &err);
    if (!m) {
        fprintf(stderr, "machine_new: %s\n", err.msg);
        return 1;
    }
    if (lay->isa == DMAMAP_ISA_AARCH64 && dmamap_machine_set_cache(m, 32 * 1024, 4, &err))
        return 1;
    dmamap_machine_set_io(m, io_cb, NULL);
    dmamap_machine_set_memtype_policy(m, DMAMAP_MEMTYPE_REPORT);
    struct dmamap_region r[] = {
        {DMAMAP_MEM_RAM, -1, 0, lay->ram_base, RAM, 0},
        {DMAMAP_MEM_SRAM, -1, 0, lay->sram_base, SRAM, RAM},
        {DMAMAP_MEM_MMIO, 0, 0, lay->mmio_base, PAGE, 0},
        {DMAMAP_MEM_IOWIN, -1, 0, lay->iowin_base, 0x10000, 0},
    };
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++)
        if (dmamap_add_region(m, &r[i], &err)) {
            fprintf(stderr, "add_region: %s\n", err.msg);
            return 1;
        }
    if (faulting_together() || freeing_racing_gets())
        return 1;
    shared = dmamap_as_new(m, 0, &err);
    if (!shared || dmamap_alloc_pages(m, 4, 1, 0, &list_pfn, &err))
        return 1;
    uint64_t pfn;
    if (dmamap_alloc_pages(m, THREADS, 1, 0, &pfn, &err))
        return 1;
    dma_pa = pfn << 12;
    stop_machine = 0;
    touched = remapped = inserted = refused = 0;
    pthread_t t[THREADS + 1];
    pthread_barrier_init(&start, NULL, THREADS);
    for (uintptr_t k = 0; k < THREADS; k++)
        pthread_create(&t[k], NULL, worker, (void *)k);
    while (!stop_machine)
        sched_yield();
    dmamap_machine_close(m);   /* the rest of the calls race the close */
    for (int k = 0; k < THREADS; k++)
        pthread_join(t[k], NULL);
    pthread_barrier_destroy(&start);
    dmamap_as_free(shared);
    dmamap_machine_free(m);
    munmap(backing, size);
    printf("tsan harness %s: %lu private touches, %lu shared remaps, %lu page-list inserts, %lu calls refused\n",
           lay->isa == DMAMAP_ISA_X86_64 ? "x86_64" : "aarch64", (unsigned long)touched,
           (unsigned long)remapped, (unsigned long)inserted, (unsigned long)refused);
    if (touched < THREADS * ITERS / 2 || !remapped || !inserted || !refused) {
        fprintf(stderr, "the harness did too little work to mean anything\n");
        return 1;
    }
    return 0;
}

/* A deliberate data race: .ci/run checks that TSan reports it, so a clean run
 * of the harness means something. */
static long canary_counter;

static void *canary_thread(void *arg)
{
    (void)arg;
    for (int i = 0; i < 100000; i++)
        canary_counter++;
    return NULL;
}

static int canary(void)
{
    pthread_t a, b;
    pthread_create(&a, NULL, canary_thread, NULL);
    pthread_create(&b, NULL, canary_thread, NULL);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    return canary_counter == 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "canary"))
        return canary();
    for (size_t i = 0; i < sizeof layouts / sizeof layouts[0]; i++)
        if (run(&layouts[i]))
            return 1;
    puts("tsan harness: done");
    return 0;
}
