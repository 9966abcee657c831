/* Device DMA: a device reads and writes memory, never the CPU cache. */
#include <string.h>
#include "internal.h"

int dmamap_dma_rw(dmamap_machine *m, uint64_t pa, void *buf, uint64_t n, int is_write, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    if (!m || m->closed)
        return dmamap_fail(err, DMAMAP_ECLOSED, pa, "machine is closed");
    if (n == 0)
        return 0;
    if (!buf || pa + n < pa)
        return dmamap_fail(err, DMAMAP_EINVAL, pa, "bad DMA range %#llx+%#llx", (unsigned long long)pa,
                           (unsigned long long)n);
    uint8_t *host = dmamap_host_ptr(m, pa, n, NULL);
    if (!host)
        return dmamap_fail(err, DMAMAP_EPHYS, pa, "DMA to %#llx+%#llx does not hit one memory region",
                           (unsigned long long)pa, (unsigned long long)n);
    /* A coherent (snooping) machine has no cache model, so memory is the truth. */
    if (is_write) {
        memcpy(host, buf, n);
        m->dma_written += n;
    } else {
        memcpy(buf, host, n);
        m->dma_read += n;
    }
    return 0;
}
