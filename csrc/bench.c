/* Reference loops the benchmarks compare against, timed in C. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <sys/mman.h>
#include <unistd.h>
#include "internal.h"

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

/* The real thing: let the host kernel map `size` bytes of a memfd, either
 * with MAP_POPULATE or by first-touch faults every touch_stride bytes.
 * Returns elapsed ns, or a negative errno. */
int64_t dmamap_bench_host_map(uint64_t size, int populate, uint64_t touch_stride)
{
    if (size == 0 || (size & (PAGE_SIZE - 1)) || size > (4ULL << 30) || (!populate && touch_stride == 0))
        return -22;   /* a reference loop, not an allocator: at most 4 GiB of host memory */
    int fd = memfd_create("dmamap-bench", 0);
    if (fd < 0)
        return -1;
    if (ftruncate(fd, (off_t)size) != 0) {
        close(fd);
        return -1;
    }
    /* Give the memfd its pages first, so both variants time only the mapping. */
    void *pre = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (pre == MAP_FAILED) {
        close(fd);
        return -12;
    }
    munmap(pre, size);
    uint64_t t0 = dmamap_now_ns();
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | (populate ? MAP_POPULATE : 0), fd, 0);
    if (p == MAP_FAILED) {
        close(fd);
        return -12;
    }
    if (!populate) {
        volatile uint8_t *b = p;
        uint64_t sum = 0;
        for (uint64_t off = 0; off < size; off += touch_stride)
            sum += b[off];
        (void)sum;
    }
    uint64_t t = dmamap_now_ns() - t0;
    munmap(p, size);
    close(fd);
    return (int64_t)t;
}
