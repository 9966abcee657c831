/* Reference loops the benchmarks compare against, timed in C, and helpers
 * that put the emulator and the host kernel on the same footing. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <sys/mman.h>
#include <unistd.h>
#include "internal.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* At most this much host memory per reference mapping: a reference loop, not an allocator. */
#define HOST_MAX (4ULL << 30)

/* The limit: store n PTE-like 8-byte values.  Returns elapsed ns. */
uint64_t dmamap_bench_store_loop(uint64_t *buf, uint64_t n, uint64_t value)
{
    uint64_t t0 = dmamap_now_ns();
    if (!buf)
        n = 0;
    for (uint64_t i = 0; i < n; i++)
        ((volatile uint64_t *)buf)[i] = value + (i << PAGE_SHIFT);
    return dmamap_now_ns() - t0;
}

/* The thread target's share-nothing reference: load the first byte of each of
 * npages pages of emulated memory from pa, in order and prefetched as a
 * sequential fault run loads them (touch.c), with no emulation around the
 * loads: a faulting thread's memory traffic without its work, on memory of
 * its own, so that what two threads of it get is what the machine gives two
 * threads of that traffic now.  *ns: the time taken. */
int dmamap_bench_load_pages(dmamap_machine *m, uint64_t pa, uint64_t npages, uint64_t *ns, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    if (!m || m->closed)
        return dmamap_fail(err, DMAMAP_ECLOSED, pa, "machine is closed");
    if (!ns || (pa & (PAGE_SIZE - 1)) || npages > (~0ULL >> PAGE_SHIFT) || pa + (npages << PAGE_SHIFT) < pa)
        return dmamap_fail(err, DMAMAP_EINVAL, pa, "load of %llu pages at %#llx: not a page-aligned range, or "
                           "no output", (unsigned long long)npages, (unsigned long long)pa);
    const uint8_t *host = npages ? dmamap_host_ptr(m, pa, npages << PAGE_SHIFT, NULL) : NULL;
    if (npages && !host)
        return dmamap_fail(err, DMAMAP_EPHYS, pa, "%#llx+%llu pages is not inside one memory region",
                           (unsigned long long)pa, (unsigned long long)npages);
    uint64_t t0 = dmamap_now_ns();
    uint8_t sink = 0;
    for (uint64_t i = 0; i < TOUCH_AHEAD && i < npages; i++)
        __builtin_prefetch(host + (i << PAGE_SHIFT), 0, 3);
    for (uint64_t i = 0; i < npages; i++) {
        if (i + TOUCH_AHEAD < npages)
            __builtin_prefetch(host + ((i + TOUCH_AHEAD) << PAGE_SHIFT), 0, 3);
        sink ^= __atomic_load_n(host + (i << PAGE_SHIFT), __ATOMIC_RELAXED);
    }
    *ns = dmamap_now_ns() - t0 + (sink & 0);
    return 0;
}

/* Give the host pages behind emulated memory [pa, pa+size) (RAM or SRAM)
 * their backing now, without changing their contents, so that a timed run
 * measures the emulator and not the host's first-touch faults on the sparse
 * memfd (the host reference below pre-populates its memfd the same way). */
int dmamap_bench_populate(dmamap_machine *m, uint64_t pa, uint64_t size, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    if (!m || m->closed)
        return dmamap_fail(err, DMAMAP_ECLOSED, pa, "machine is closed");
    if ((pa | size) & (PAGE_SIZE - 1) || pa + size < pa)
        return dmamap_fail(err, DMAMAP_EINVAL, pa, "populate range %#llx+%#llx is not page-aligned",
                           (unsigned long long)pa, (unsigned long long)size);
    if (size == 0)
        return 0;
    uint8_t *host = dmamap_host_ptr(m, pa, size, NULL);
    if (!host)
        return dmamap_fail(err, DMAMAP_EPHYS, pa, "%#llx+%#llx is not inside one memory region",
                           (unsigned long long)pa, (unsigned long long)size);
    if (madvise(host, size, MADV_POPULATE_WRITE) == 0)
        return 0;
    for (uint64_t off = 0; off < size; off += PAGE_SIZE) {   /* kernels before 5.14 */
        volatile uint8_t *b = host + off;
        *b = *b;
    }
    return 0;
}

/* A memfd of `size` bytes whose pages exist, for dmamap_bench_host_touch.
 * Returns the descriptor (close it with os.close), or a negative errno. */
int dmamap_bench_host_memfd(uint64_t size)
{
    if (size == 0 || (size & (PAGE_SIZE - 1)) || size > HOST_MAX)
        return -EINVAL;
    int fd = memfd_create("dmamap-bench", MFD_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (ftruncate(fd, (off_t)size) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    void *pre = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (pre == MAP_FAILED) {
        close(fd);
        return -ENOMEM;
    }
    munmap(pre, size);
    return fd;
}

/* The host kernel doing what the emulator does: map `size` bytes of memfd
 * `fd` (with MAP_POPULATE when `populate`, else lazily), then touch one byte
 * at each of `count` addresses: vas[i] - base when vas is given, otherwise
 * i * stride.  A write touch reads the byte and stores it back, as
 * dmamap_touch does.  times[0..2] receive the ns spent in mmap, in the
 * touches and in munmap.  Returns mmap + touch ns, or a negative errno. */
int64_t dmamap_bench_host_touch(int fd, uint64_t size, int populate, const uint64_t *vas, uint64_t base,
                                uint64_t count, uint64_t stride, int is_write, uint64_t *times)
{
    if (fd < 0 || size == 0 || (size & (PAGE_SIZE - 1)) || size > HOST_MAX || (!vas && count && !stride))
        return -EINVAL;
    uint64_t t0 = dmamap_now_ns();
    uint8_t *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | (populate ? MAP_POPULATE : 0), fd, 0);
    if (p == MAP_FAILED)
        return -ENOMEM;
    uint64_t t1 = dmamap_now_ns();
    volatile uint8_t *b = p;
    uint64_t sum = 0;
    for (uint64_t i = 0; i < count; i++) {
        uint64_t off = vas ? vas[i] - base : i * stride;
        if (off >= size)
            continue;
        uint8_t v = b[off];
        sum += v;
        if (is_write)
            b[off] = v;
    }
    (void)sum;
    uint64_t t2 = dmamap_now_ns();
    munmap(p, size);
    uint64_t t3 = dmamap_now_ns();
    if (times) {
        times[0] = t1 - t0;
        times[1] = t2 - t1;
        times[2] = t3 - t2;
    }
    return (int64_t)(t2 - t0);
}

/* One-shot form: a fresh memfd, mapped with MAP_POPULATE or touched every
 * touch_stride bytes.  Returns elapsed ns (mmap + touches), or a negative errno. */
int64_t dmamap_bench_host_map(uint64_t size, int populate, uint64_t touch_stride)
{
    if (size == 0 || (size & (PAGE_SIZE - 1)) || size > HOST_MAX || (!populate && touch_stride == 0))
        return -EINVAL;
    int fd = dmamap_bench_host_memfd(size);
    if (fd < 0)
        return fd;
    uint64_t count = populate ? 0 : (size + touch_stride - 1) / touch_stride;
    int64_t t = dmamap_bench_host_touch(fd, size, populate, NULL, 0, count, touch_stride ? touch_stride : 1, 0, NULL);
    close(fd);
    return t;
}

/* ---- host-kernel references, each measuring one thing, with the kernel's own fault count ---- */

static uint64_t minflt_now(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_THREAD, &ru) == 0 ? (uint64_t)ru.ru_minflt : 0;
}

/* CPU time of the calling thread, user + system: a fault's kernel work is
 * system time; time the thread spent preempted by other processes is not. */
static uint64_t cpu_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint64_t majflt_now(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_THREAD, &ru) == 0 ? (uint64_t)ru.ru_majflt : 0;
}

/* Map `size` bytes and touch `count` addresses (vas[i] - base, or i * stride).
 * flags: DMAMAP_HOST_* (dmamap.h): how the mapping is filled (lazily,
 * MAP_POPULATE or madvise(MADV_POPULATE_WRITE)), what it is (the memfd `fd`,
 * MAP_SHARED; or anonymous private memory, 2 MiB-aligned, with MADV_HUGEPAGE
 * or MADV_NOHUGEPAGE), and how a page is touched: a load (a read fault: the
 * kernel maps up to fault_around_bytes of page-cache pages around it), a
 * store only (a write fault: exactly one page), or a load then a store.
 * out[0..9]: mmap (+ populate) ns, touch ns, munmap ns (wall clock), minor
 * faults during the map and during the touches (getrusage, this thread),
 * major faults, whether the populate madvise was refused (1) -- the call then
 * fails with -EINVAL and nothing is left mapped -- and the same three phases
 * in CPU time of this thread (user + system, CLOCK_THREAD_CPUTIME_ID), which
 * other processes' load does not inflate.  Returns 0 or a negative errno. */
int dmamap_bench_host_ref(int fd, uint64_t size, uint32_t flags, const uint64_t *vas, uint64_t base,
                          uint64_t count, uint64_t stride, uint64_t *out)
{
    uint32_t fill = flags & DMAMAP_HOST_FILL_MASK, touch = flags & DMAMAP_HOST_TOUCH_MASK;
    int anon = !!(flags & (DMAMAP_HOST_ANON | DMAMAP_HOST_THP));
    if (!out || size == 0 || (size & (PAGE_SIZE - 1)) || size > HOST_MAX || (!vas && count && !stride) ||
        (!anon && fd < 0) || fill > DMAMAP_HOST_MADV_POPULATE || (touch && touch != DMAMAP_HOST_TOUCH_READ &&
        touch != DMAMAP_HOST_TOUCH_STORE && touch != DMAMAP_HOST_TOUCH_RMW) ||
        (flags & ~(DMAMAP_HOST_FILL_MASK | DMAMAP_HOST_TOUCH_MASK | DMAMAP_HOST_ANON | DMAMAP_HOST_THP)))
        return -EINVAL;
    memset(out, 0, 10 * sizeof *out);
    const uint64_t huge = 2ULL << 20;
    uint64_t f0 = minflt_now(), j0 = majflt_now(), c0 = cpu_now_ns(), t0 = dmamap_now_ns();
    uint8_t *p, *raw = NULL;
    uint64_t raw_len = 0;
    int mflags = fill == DMAMAP_HOST_MAP_POPULATE ? MAP_POPULATE : 0;
    if (anon) {
        /* over-allocate and trim to a 2 MiB boundary: a huge page needs an aligned PMD */
        raw_len = size + huge;
        raw = mmap(NULL, raw_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (raw == MAP_FAILED)
            return -errno;
        p = (uint8_t *)(((uintptr_t)raw + huge - 1) & ~(uintptr_t)(huge - 1));
        if (p > raw)
            munmap(raw, (size_t)(p - raw));
        if (p + size < raw + raw_len)
            munmap(p + size, (size_t)(raw + raw_len - (p + size)));
        if (madvise(p, size, (flags & DMAMAP_HOST_THP) ? MADV_HUGEPAGE : MADV_NOHUGEPAGE) != 0) {
            int e = errno;
            munmap(p, size);
            return -e;
        }
        if (mflags)   /* MAP_POPULATE cannot follow the trim: prefault by stores */
            for (uint64_t off = 0; off < size; off += PAGE_SIZE)
                ((volatile uint8_t *)p)[off] = 0;
    } else {
        p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | mflags, fd, 0);
        if (p == MAP_FAILED)
            return -errno;
    }
    if (fill == DMAMAP_HOST_MADV_POPULATE && madvise(p, size, MADV_POPULATE_WRITE) != 0) {
        int e = errno;
        munmap(p, size);
        out[6] = e == EINVAL;
        return -e;
    }
    uint64_t f1 = minflt_now(), c1 = cpu_now_ns(), t1 = dmamap_now_ns();
    volatile uint8_t *b = p;
    uint64_t sum = 0;
    for (uint64_t i = 0; touch && i < count; i++) {
        uint64_t off = vas ? vas[i] - base : i * stride;
        if (off >= size)
            continue;
        if (touch == DMAMAP_HOST_TOUCH_STORE) {
            b[off] = (uint8_t)i;
        } else {
            uint8_t v = b[off];
            sum += v;
            if (touch == DMAMAP_HOST_TOUCH_RMW)
                b[off] = v;
        }
    }
    (void)sum;
    /* the clock reads, not getrusage, sit at the touch phase's edges: a one-page touch
     * takes a few hundred ns, as much as a syscall */
    uint64_t t2 = dmamap_now_ns(), c2 = cpu_now_ns(), f2 = minflt_now();
    uint64_t c2u = cpu_now_ns(), t2u = dmamap_now_ns();
    munmap(p, size);
    uint64_t t3 = dmamap_now_ns(), c3 = cpu_now_ns();
    out[0] = t1 - t0;
    out[1] = t2 - t1;
    out[2] = t3 - t2u;
    out[3] = f1 - f0;
    out[4] = f2 - f1;
    out[5] = majflt_now() - j0;
    out[7] = c1 - c0;
    out[8] = c2 - c1;
    out[9] = c3 - c2u;
    return 0;
}

/* The kernel's fault-around window in bytes (/sys/kernel/mm/... is debugfs
 * only; the default is 64 KiB), measured: the pages one read fault maps in
 * a memfd mapping of at least 2 MiB, found with mincore-free probing of the
 * fault count.  The window is aligned in the virtual address space, so the
 * probe starts at a 2 MiB-aligned address when the mapping holds one with
 * 2 MiB after it (pass 4 MiB), else at the mapping's start. */
int64_t dmamap_bench_host_fault_around(int fd, uint64_t size)
{
    if (fd < 0 || size < (2ULL << 20) || size > HOST_MAX)
        return -EINVAL;
    uint8_t *p = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return -errno;
    uint64_t skip = (uint64_t)(-(uintptr_t)p & ((2ULL << 20) - 1));
    volatile uint8_t *b = skip + (2ULL << 20) <= size ? p + skip : p;
    uint64_t sum = b[0], n = 1;
    uint64_t f0 = minflt_now();
    for (; n < 512; n++) {   /* the first page not mapped by the first fault faults again */
        sum += b[n * PAGE_SIZE];
        if (minflt_now() != f0)
            break;
    }
    (void)sum;
    munmap(p, size);
    return (int64_t)(n * PAGE_SIZE);
}

uint64_t dmamap_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}
