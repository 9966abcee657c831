/* Thread-scaling measurement of the dmamap C core, without Python: each
 * thread repeatedly maps a buffer of its own with the built-in page fault
 * handler, faults all of it in with one dmamap_touch and unmaps it (as the
 * benchmark's threads target does), in one shared address space or one
 * address space per thread.  Prints the
 * throughput of one thread and of two, and each thread's CPU time, so that
 * lock contention shows even on a loaded machine (CPU time per fault grows)
 * when wall-clock scaling cannot.
 *
 *   gcc -O2 -std=c11 -D_GNU_SOURCE -Icsrc tests/tsan/scale.c csrc/ *.c arch/ * / *.c -o scale -lpthread
 *   ./scale [x86|arm] [MiB per thread] [rounds] [touch]
 *
 * With "touch", only the touches are timed (each round's VMA is mapped before
 * the clock and unmapped after it).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include "dmamap.h"

#define PAGE 4096ULL

static dmamap_machine *m;
static int isa;
static uint64_t bufsize, rounds;
static uint64_t pfns[2];
static pthread_barrier_t bar;

struct job {
    dmamap_as *as;
    int k;
    double cpu_ns;
    long vcsw, ivcsw;   /* context switches: blocked (waiting for a lock), preempted */
};

static double now(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

/* One round: map the buffer with the built-in page fault handler, fault all
 * of it in with one touch, unmap it. */
static void round_trip(dmamap_as *as, int k)
{
    struct dmamap_err err;
    int64_t id;
    uint64_t prot = dmamap_prot_make(isa, DMAMAP_PROT_READ | DMAMAP_PROT_WRITE | DMAMAP_PROT_USER, 0);
    struct dmamap_chunk c = {pfns[k], bufsize / PAGE};
    struct dmamap_vma_info info;
    if (dmamap_mmap(as, 0, bufsize, DMAMAP_VM_READ | DMAMAP_VM_WRITE | DMAMAP_VM_SHARED, prot, 0, &id, &err) ||
        dmamap_vma_set_fault(as, id, DMAMAP_FAULT_PAGE, &c, 1, 0, 1, 0, &err) ||
        dmamap_vma_info(as, id, &info, &err) ||
        dmamap_touch(as, info.start, bufsize / PAGE, PAGE, 0, &err) ||
        dmamap_munmap(as, id, &err)) {
        fprintf(stderr, "round: %s\n", err.msg);
        exit(1);
    }
}

static int touch_only;   /* time the touches alone: every VMA is mapped before the clock, unmapped after */

static void *worker(void *arg)
{
    struct job *j = arg;
    struct dmamap_err err;
    int64_t ids[64];
    uint64_t starts[64];
    round_trip(j->as, j->k);   /* (the tables are there from now on) */
    if (touch_only)
        for (uint64_t r = 0; r < rounds; r++) {
            uint64_t prot = dmamap_prot_make(isa, DMAMAP_PROT_READ | DMAMAP_PROT_WRITE | DMAMAP_PROT_USER, 0);
            struct dmamap_chunk c = {pfns[j->k], bufsize / PAGE};
            struct dmamap_vma_info info;
            if (dmamap_mmap(j->as, 0, bufsize, DMAMAP_VM_READ | DMAMAP_VM_WRITE | DMAMAP_VM_SHARED, prot, 0, &ids[r],
                            &err) ||
                dmamap_vma_set_fault(j->as, ids[r], DMAMAP_FAULT_PAGE, &c, 1, 0, 1, 0, &err) ||
                dmamap_vma_info(j->as, ids[r], &info, &err))
                exit(1);
            starts[r] = info.start;
        }
    pthread_barrier_wait(&bar);
    struct rusage r0, r1;
    getrusage(RUSAGE_THREAD, &r0);
    double c0 = now(CLOCK_THREAD_CPUTIME_ID);
    for (uint64_t r = 0; r < rounds; r++)
        if (!touch_only)
            round_trip(j->as, j->k);
        else if (dmamap_touch(j->as, starts[r], bufsize / PAGE, PAGE, 0, &err))
            exit(1);
    j->cpu_ns = now(CLOCK_THREAD_CPUTIME_ID) - c0;
    getrusage(RUSAGE_THREAD, &r1);
    j->vcsw = r1.ru_nvcsw - r0.ru_nvcsw;
    j->ivcsw = r1.ru_nivcsw - r0.ru_nivcsw;
    pthread_barrier_wait(&bar);
    for (uint64_t r = 0; touch_only && r < rounds; r++)
        dmamap_munmap(j->as, ids[r], &err);
    return NULL;
}

static long vcsw, ivcsw;

static double trial(int n, int shared, double *cpu)
{
    struct dmamap_err err;
    struct job jobs[2];
    pthread_t t[2];
    dmamap_as *one = shared ? dmamap_as_new(m, 0, &err) : NULL;
    pthread_barrier_init(&bar, NULL, n + 1);
    for (int k = 0; k < n; k++) {
        jobs[k].as = shared ? one : dmamap_as_new(m, 0, &err);
        jobs[k].k = k;
        pthread_create(&t[k], NULL, worker, &jobs[k]);
    }
    pthread_barrier_wait(&bar);
    double w0 = now(CLOCK_MONOTONIC);
    pthread_barrier_wait(&bar);
    double w = now(CLOCK_MONOTONIC) - w0;
    for (int k = 0; k < n; k++) {
        pthread_join(t[k], NULL);
        cpu[k] = jobs[k].cpu_ns;
        if (n == 2)
            vcsw += jobs[k].vcsw, ivcsw += jobs[k].ivcsw;
        if (!shared)
            dmamap_as_free(jobs[k].as);
    }
    if (shared)
        dmamap_as_free(one);
    pthread_barrier_destroy(&bar);
    return w;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    struct dmamap_err err;
    int arm = argc > 1 && !strcmp(argv[1], "arm");
    isa = arm ? DMAMAP_ISA_AARCH64 : DMAMAP_ISA_X86_64;
    bufsize = (argc > 2 ? strtoull(argv[2], NULL, 0) : 16) << 20;
    rounds = argc > 3 ? strtoull(argv[3], NULL, 0) : 20;
    touch_only = argc > 4 && !strcmp(argv[4], "touch");
    if (touch_only && rounds > 64)
        rounds = 64;
    uint64_t ram = 2 * bufsize + (64ULL << 20), base = arm ? 0x40000000ULL : 0;
    void *backing = mmap(NULL, ram, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    m = dmamap_machine_new(isa, backing, ram, !arm, &err);
    struct dmamap_region r = {DMAMAP_MEM_RAM, -1, 0, base, ram, 0};
    if (!m || dmamap_add_region(m, &r, &err)) {
        fprintf(stderr, "machine: %s\n", err.msg);
        return 1;
    }
    for (int k = 0; k < 2; k++)
        if (dmamap_alloc_pages(m, bufsize / PAGE, 512, 0, &pfns[k], &err)) {
            fprintf(stderr, "alloc: %s\n", err.msg);
            return 1;
        }
    double faults = (double)rounds * (bufsize / PAGE);
    for (int shared = 1; shared >= 0; shared--) {
        double w1[5], w2[5], c1[5], c2[5], cpu[2];
        vcsw = ivcsw = 0;
        for (int i = 0; i < 5; i++) {
            w1[i] = trial(1, shared, cpu);
            c1[i] = cpu[0];
            w2[i] = trial(2, shared, cpu);
            c2[i] = (cpu[0] + cpu[1]) / 2;
        }
        qsort(w1, 5, sizeof(double), cmp), qsort(w2, 5, sizeof(double), cmp);
        qsort(c1, 5, sizeof(double), cmp), qsort(c2, 5, sizeof(double), cmp);
        printf("%s %s: 1 thread %.1f ns/fault (cpu %.1f), 2 threads %.1f ns/fault each (cpu %.1f): "
               "wall speedup %.2fx, cpu/fault ratio %.2f; with 2: %ld blocked, %ld preempted\n", arm ? "arm" : "x86",
               shared ? "one address space " : "two address spaces", w1[2] / faults, c1[2] / faults,
               w2[2] / faults, c2[2] / faults, 2 * w1[2] / w2[2], c2[2] / c1[2], vcsw, ivcsw);
    }
    dmamap_machine_free(m);
    return 0;
}
