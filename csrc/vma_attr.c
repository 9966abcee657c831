/* A VMA's attributes (mm/mmap.c, mm/mprotect.c): its info, flags, protection,
 * page offset, fault handler with its chunk list, and port window. */
#include <stdlib.h>
#include <string.h>
#include "internal.h"

int dmamap_vma_info(dmamap_as *as, int64_t id, struct dmamap_vma_info *out, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, 0);
    if (!out)
        return dmamap_fail(err, DMAMAP_EINVAL, 0, "NULL output");
    int rc;
    struct vma *v = vma_enter(as, id, 0, 0, NULL, 0, err, &rc);
    if (!v)
        return rc;
    *out = (struct dmamap_vma_info){v->start, v->end, v->flags, v->prot, v->fault_kind, 1, v->pgoff};
    return as_unlock(as, 0, err);
}

int dmamap_vma_set_flags(dmamap_as *as, int64_t id, uint64_t set, uint64_t clear, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, 0);
    uint64_t known = DMAMAP_VM_READ | DMAMAP_VM_WRITE | DMAMAP_VM_EXEC | DMAMAP_VM_SHARED | DMAMAP_VM_IO |
                     DMAMAP_VM_DONTEXPAND | DMAMAP_VM_PFNMAP | DMAMAP_VM_MIXEDMAP | DMAMAP_VM_DONTDUMP |
                     DMAMAP_VM_DONTCOPY | DMAMAP_VM_WIPEONFORK;
    if ((set | clear) & ~known)
        return dmamap_fail(err, DMAMAP_EINVAL, 0, "unknown vm_flags %#llx",
                           (unsigned long long)((set | clear) & ~known));
    int rc = 0;
    struct vma *v = vma_enter(as, id, 0, 0, NULL, 0, err, &rc);
    if (!v)
        return rc;
    uint64_t f = (v->flags | set) & ~clear;
    if ((f & (DMAMAP_VM_PFNMAP | DMAMAP_VM_MIXEDMAP)) == (DMAMAP_VM_PFNMAP | DMAMAP_VM_MIXEDMAP))
        rc = dmamap_fail(err, DMAMAP_EVMAKIND, v->start, "VMA [%#llx, %#llx) cannot be both VM_PFNMAP "
                         "and VM_MIXEDMAP", (unsigned long long)v->start, (unsigned long long)v->end);
    else
        v->flags = f;
    return as_unlock(as, rc, err);
}

int dmamap_vma_set_prot(dmamap_as *as, int64_t id, uint64_t prot, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, 0);
    if (prot_check(as, prot, err))
        return DMAMAP_EINVAL;
    int rc;
    struct vma *v = vma_enter(as, id, 0, 0, NULL, 0, err, &rc);
    if (!v)
        return rc;
    v->prot = prot;
    return as_unlock(as, 0, err);
}

int dmamap_vma_set_pgoff(dmamap_as *as, int64_t id, uint64_t pgoff, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, 0);
    if (pgoff > (~0ULL >> PAGE_SHIFT))
        return dmamap_fail(err, DMAMAP_EINVAL, 0, "vm_pgoff %#llx: the offset in bytes overflows",
                           (unsigned long long)pgoff);
    int rc;
    struct vma *v = vma_enter(as, id, 0, 0, NULL, 0, err, &rc);
    if (!v)
        return rc;
    v->pgoff = pgoff;
    return as_unlock(as, 0, err);
}

int dmamap_vma_set_fault(dmamap_as *as, int64_t id, int kind, const struct dmamap_chunk *chunks, int nchunks,
                         uint64_t first_page, uint64_t fault_around, int large, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, 0);
    if (kind < DMAMAP_FAULT_NONE || kind > DMAMAP_FAULT_PIO)
        return dmamap_fail(err, DMAMAP_EINVAL, 0, "unknown fault handler kind %d", kind);
    int needs_chunks = kind == DMAMAP_FAULT_PAGE || kind == DMAMAP_FAULT_PFN;
    if (needs_chunks && (nchunks <= 0 || !chunks))
        return dmamap_fail(err, DMAMAP_EINVAL, 0, "a built-in fault handler needs at least one chunk");
    if (nchunks < 0 || fault_around > 512)
        return dmamap_fail(err, DMAMAP_EINVAL, 0, "fault_around %llu is above 512 pages",
                           (unsigned long long)fault_around);
    if (kind == DMAMAP_FAULT_PIO && first_page > 0xffff)
        return dmamap_fail(err, DMAMAP_EINVAL, first_page, "port %#llx outside the port space",
                           (unsigned long long)first_page);
    struct dmamap_chunk *c = NULL;
    uint64_t *cs = NULL;
    if (needs_chunks) {
        c = malloc((size_t)nchunks * sizeof *c);
        cs = malloc(((size_t)nchunks + 1) * sizeof *cs);
        if (!c || !cs) {
            free(c);
            free(cs);
            return dmamap_fail(err, DMAMAP_ENOMEM, 0, "host out of memory for chunks");
        }
        cs[0] = 0;
        for (int i = 0; i < nchunks; i++) {
            if (chunks[i].npages == 0 || chunks[i].pfn + chunks[i].npages < chunks[i].pfn ||
                chunks[i].pfn + chunks[i].npages > (1ULL << 36) || cs[i] + chunks[i].npages < cs[i]) {
                free(c);
                free(cs);
                return dmamap_fail(err, DMAMAP_EINVAL, chunks[i].pfn << PAGE_SHIFT, "chunk %d (pfn %#llx, "
                                   "%llu pages) is empty or outside the physical address space", i,
                                   (unsigned long long)chunks[i].pfn, (unsigned long long)chunks[i].npages);
            }
            c[i] = chunks[i];
            cs[i + 1] = cs[i] + chunks[i].npages;
        }
        uint64_t total = cs[nchunks];
        if (first_page >= total) {
            free(c);
            free(cs);
            return dmamap_fail(err, DMAMAP_EINVAL, 0, "first page %llu is past the %llu chunk pages",
                               (unsigned long long)first_page, (unsigned long long)total);
        }
    }
    int rc;
    struct vma *v = vma_enter(as, id, 0, 0, NULL, 0, err, &rc);
    if (!v) {
        free(c);
        free(cs);
        return rc;
    }
    free(v->chunks);
    free(v->chunk_start);
    v->chunks = c;
    v->chunk_start = cs;
    v->nchunks = needs_chunks ? nchunks : 0;
    v->fault_kind = kind;
    v->first_page = kind == DMAMAP_FAULT_PIO ? 0 : first_page;
    v->pio_port = kind == DMAMAP_FAULT_PIO ? first_page : 0;
    v->pio_count = kind == DMAMAP_FAULT_PIO ? v->end - v->start : 0;
    v->fault_around = fault_around;
    v->large = large;
    return as_unlock(as, 0, err);
}

int dmamap_vma_set_pio(dmamap_as *as, int64_t id, uint64_t port, uint64_t count, struct dmamap_err *err)
{
    if (count == 0 || port > 0xffff || count > 0x10000 - port)
        return dmamap_fail(err, DMAMAP_EINVAL, port, "ports %#llx+%llu are outside the 64 KiB port space",
                           (unsigned long long)port, (unsigned long long)count);
    int rc = dmamap_vma_set_fault(as, id, DMAMAP_FAULT_PIO, NULL, 0, port, 0, 0, err);
    if (rc)
        return rc;
    struct vma *v = vma_enter(as, id, 0, 0, NULL, 0, err, &rc);
    if (!v)
        return rc;
    if (count < v->pio_count)
        v->pio_count = count;
    return as_unlock(as, 0, err);
}

/* Index into v->chunks of chunk-list page idx (relative to vma start), or -1. */
int chunk_find(const struct vma *v, uint64_t idx)
{
    idx += v->first_page;
    int lo = 0, hi = v->nchunks;
    if (!hi || idx >= v->chunk_start[hi])
        return -1;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (v->chunk_start[mid] <= idx)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* pfn backing page `idx` of the VMA's chunk list, or ~0 past its end. */
uint64_t chunk_pfn(const struct vma *v, uint64_t idx, uint64_t *run)
{
    int c = chunk_find(v, idx);
    if (c < 0)
        return ~0ULL;
    idx += v->first_page;
    if (run)
        *run = v->chunk_start[c + 1] - idx;
    return v->chunks[c].pfn + (idx - v->chunk_start[c]);
}

int dmamap_vma_set_wrnotify(dmamap_as *as, int64_t id, int on, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    AS_CHECK(as, err, 0);
    int rc;
    struct vma *v = vma_enter(as, id, 0, 0, NULL, 0, err, &rc);
    if (!v)
        return rc;
    const struct dmamap_arch *a = as->m->arch;
    int shared_w = (v->flags & (DMAMAP_VM_WRITE | DMAMAP_VM_SHARED)) == (DMAMAP_VM_WRITE | DMAMAP_VM_SHARED);
    int cache = a->prot_cache(a, v->prot);
    if (shared_w && cache >= 0) {   /* vma_set_page_prot: write-notify VMAs start read-only */
        unsigned f = a->prot_flags(v->prot);
        v->prot = a->prot_make(a, on ? f & ~DMAMAP_PROT_WRITE : f | DMAMAP_PROT_WRITE, cache);
    }
    v->wrnotify = !!on;
    return as_unlock(as, 0, err);
}
