/* Error reports: every fallible call fills struct dmamap_err and returns its code. */
#include <stdio.h>
#include "internal.h"

int dmamap_fail(struct dmamap_err *err, int code, uint64_t addr, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        err->code = code;
        err->addr = addr;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

void dmamap_err_clear(struct dmamap_err *err)
{
    if (err) {
        err->code = 0;
        err->addr = 0;
        err->aux = 0;
        err->msg[0] = 0;
    }
}
