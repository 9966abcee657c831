/* Write-back, write-allocate, set-associative data cache with 64-byte lines,
 * sitting between CPU accesses through cacheable mappings and memory on
 * non-coherent machines.  Device DMA bypasses it (no snooping).  Physically
 * indexed, or (cache_vipt) virtually indexed and physically tagged: when a way
 * is larger than a page, two virtual aliases of one physical line with
 * different colours live in different sets and can disagree (ARMv6-era cores).
 * Maintenance by physical address reaches every alias. */
#include <stdlib.h>
#include <string.h>
#include "internal.h"

#define LINE_MASK (~(uint64_t)(CACHE_LINE - 1))

/* The ways' state and, 64-byte aligned after it, their bytes: one zeroed allocation (free() releases it). */
struct cache_line *dmamap_cache_alloc(int sets, int ways, uint8_t **data)
{
    size_t n = (size_t)sets * (size_t)ways;
    size_t meta = (n * sizeof(struct cache_line) + CACHE_LINE - 1) & ~(size_t)(CACHE_LINE - 1);
    void *p = aligned_alloc(CACHE_LINE, meta + n * CACHE_LINE);
    if (!p)
        return NULL;
    memset(p, 0, meta + n * CACHE_LINE);
    *data = (uint8_t *)p + meta;
    return p;
}

static inline uint8_t *line_data(dmamap_machine *m, const struct cache_line *l)
{
    return m->cache_data + (size_t)(l - m->cache) * CACHE_LINE;
}

/* The host bytes behind a line's physical address (RAM without a map scan: the hot case). */
static inline uint8_t *line_host(dmamap_machine *m, uint64_t pa)
{
    uint64_t roff = pa - (m->ram_base_pfn << PAGE_SHIFT);
    if (m->ram_host && roff < (m->ram_pages << PAGE_SHIFT))
        return m->ram_host + roff;   /* RAM is whole pages, so the whole line is inside */
    return dmamap_host_ptr(m, pa, CACHE_LINE, NULL);
}

/* 64 bytes as four 16-byte vectors (GCC/Clang vector extension: SSE2 on x86-64, NEON on AArch64). */
typedef uint8_t v16 __attribute__((vector_size(16), may_alias, aligned(1)));

/* A full-line read that missed: the bytes come out of memory once, into the line and the caller's buffer
 * (all loaded before anything is stored, as a fill followed by a copy out of the line). */
static inline void fill_copy(uint8_t *line, uint8_t *out, const uint8_t *host)
{
    const v16 *s = (const v16 *)host;
    v16 a = s[0], b = s[1], c = s[2], d = s[3];
    v16 *l = (v16 *)line, *o = (v16 *)out;
    l[0] = a; l[1] = b; l[2] = c; l[3] = d;
    o[0] = a; o[1] = b; o[2] = c; o[3] = d;
}

static inline void copy_line(uint8_t *dst, const uint8_t *src)
{
    const v16 *s = (const v16 *)src;
    v16 a = s[0], b = s[1], c = s[2], d = s[3];
    v16 *o = (v16 *)dst;
    o[0] = a; o[1] = b; o[2] = c; o[3] = d;
}

/* Without counting: the caller counts (once per call on the access path). */
static inline void writeback_nocount(dmamap_machine *m, struct cache_line *l)
{
    uint8_t *host = line_host(m, l->tag & LINE_MASK);
    if (host)
        copy_line(host, line_data(m, l));
    l->tag &= ~CL_DIRTY;
}

static void writeback(dmamap_machine *m, struct cache_line *l)
{
    writeback_nocount(m, l);
    m->cache_wb++;
}

/* The victim of a line that misses in ways: the first invalid way, else the least recently used one (an
 * invalid way's stamp is 0 and a valid one's at least 1, so that is the first way with the lowest stamp);
 * *hit is the way holding tag, if one does (then the victim is meaningless).  Every way is looked at,
 * with selects rather than branches: which way is oldest follows the data, and mispredicted branches
 * cost more than the scan. */
static inline struct cache_line *way_lookup(struct cache_line *ways, uint64_t nways, uint64_t tag,
                                            struct cache_line **hit)
{
    uint64_t oldest = ways[0].lru, victim = 0, found = nways;
    for (uint64_t w = 0; w < nways; w++) {
        uint64_t lru = ways[w].lru;
        found = (ways[w].tag & ~CL_DIRTY) == tag ? w : found;
        victim = lru < oldest ? w : victim;
        oldest = lru < oldest ? lru : oldest;
    }
    *hit = found < nways ? &ways[found] : NULL;
    return &ways[victim];
}

/* CPU reads and writes through the cache, line by line in address order, with the lock taken once per call.
 * Per line: a hit refreshes its LRU stamp; a miss takes an invalid way, else the least recently used one
 * (written back first when dirty) and fills it from memory.  A write that covers a whole line that missed
 * skips the fill's copy, since every filled byte is overwritten at once: the bytes, dirty state, LRU order
 * and counters (the miss is counted, the fill happened as far as anything can observe) are those of a fill
 * followed by the write.  Counters are added once per call. */
static inline struct cache_line *line_access(dmamap_machine *m, struct cache_line *ways, int nways, uint64_t pa,
                                             uint64_t chunk, uint8_t *host, uint8_t *b, int is_write,
                                             uint64_t *clock, uint64_t *hits, uint64_t *misses, uint64_t *wbs)
{
    uint64_t off = pa & (CACHE_LINE - 1);
    uint64_t tag = (pa & LINE_MASK) | CL_VALID;
    struct cache_line *l, *victim = way_lookup(ways, (uint64_t)nways, tag, &l);
    if (l) {
        uint8_t *ld = line_data(m, l);
        ++*hits;
        l->lru = ++*clock;
        if (is_write) {
            if (chunk == CACHE_LINE)
                copy_line(ld, b);
            else
                memcpy(ld + off, b, chunk);
            l->tag = tag | CL_DIRTY;
        } else if (chunk == CACHE_LINE) {
            copy_line(b, ld);
        } else {
            memcpy(b, ld + off, chunk);
        }
        return l;
    }
    l = victim;
    uint8_t *ld = line_data(m, l);
    ++*misses;
    if (l->tag & CL_DIRTY) {
        writeback_nocount(m, l);
        ++*wbs;
    }
    l->lru = ++*clock;
    if (chunk == CACHE_LINE) {
        if (is_write) {
            copy_line(ld, b);   /* the fill's bytes, all overwritten */
            l->tag = tag | CL_DIRTY;
        } else {
            fill_copy(ld, b, host);
            l->tag = tag;
        }
    } else {
        copy_line(ld, host - off);
        if (is_write) {
            memcpy(ld + off, b, chunk);
            l->tag = tag | CL_DIRTY;
        } else {
            memcpy(b, ld + off, chunk);
            l->tag = tag;
        }
    }
    return l;
}

/* CPU reads and writes through the cache, line by line in address order, with the lock taken once per call.
 * Per line: a hit refreshes its LRU stamp; a miss takes an invalid way, else the least recently used one
 * (written back first when dirty) and fills it from memory.  A write that covers a whole line that missed
 * skips the fill's copy, since every filled byte is overwritten at once: the bytes, dirty state, LRU order
 * and counters (the miss is counted, the fill happened as far as anything can observe) are those of a fill
 * followed by the write.  Counters are added once per call. */
static void cache_rw(dmamap_machine *m, uint64_t va, uint64_t pa, uint8_t *host, uint8_t *b, uint64_t n,
                     int is_write)
{
    uint64_t hits = 0, misses = 0, wbs = 0;
    LOCK(&m->cache_lock);
    uint64_t clock = m->cache_clock;
    const uint64_t set_mask = (uint64_t)(m->cache_sets - 1);
    const int nways = m->cache_ways;
    const int vipt = m->cache_vipt;
    while (n) {
        uint64_t off = pa & (CACHE_LINE - 1);
        uint64_t chunk = CACHE_LINE - off < n ? CACHE_LINE - off : n;
        uint64_t set = ((vipt ? va : pa) / CACHE_LINE) & set_mask;
        line_access(m, &m->cache[set * (uint64_t)nways], nways, pa, chunk, host, b, is_write, &clock, &hits,
                    &misses, &wbs);
        b += chunk;
        host += chunk;
        pa += chunk;
        va += chunk;
        n -= chunk;
    }
    m->cache_clock = clock;
    if (hits)
        m->cache_hits += hits;
    if (misses)
        m->cache_misses += misses;
    if (wbs)
        m->cache_wb += wbs;
    UNLOCK(&m->cache_lock);
}

void dmamap_cache_read(dmamap_machine *m, uint64_t va, uint64_t pa, uint8_t *host, void *buf, uint64_t n)
{
    cache_rw(m, va, pa, host, buf, n, 0);
}

void dmamap_cache_write(dmamap_machine *m, uint64_t va, uint64_t pa, uint8_t *host, const void *buf, uint64_t n)
{
    cache_rw(m, va, pa, host, (uint8_t *)buf, n, 1);
}

/* ---- A run of pages accessed in order (the bulk path) ----
 * Exactly what cache_rw does page after page, with less work for the lines a long run evicts again itself.
 * In one set, the run's lines are distinct; after a line is accessed each later access in its set either
 * refreshes (hit) or replaces (miss) one of the ways older than it, so once W later lines of the run came
 * to the set (W ways) every way holds a line of the run, every further access misses and evicts the oldest:
 * the set is a FIFO.  So, numbering the run's lines in set s as 1..k:
 *   - lines 1..W go through the exact per-line model (they may hit or evict what was cached before);
 *   - line i > W misses and takes the way of line i-W, evicting it (written back if dirty);
 *   - a line i <= k-W is itself evicted before the run ends: it never needs to be in a line, its bytes go
 *     between memory and the buffer directly (a read sees memory, every earlier write-back of the same
 *     address being one of that set's first W events; a write's line would be written back whole);
 *   - lines k-W < i land in the cache as a miss puts them there.
 * The LRU stamps are the clock values the per-line model would give (one tick per line in run order), the
 * counters the same counts.  This needs the buffer apart from emulated memory (else a direct copy could
 * race a write-back the model orders differently) and a physically indexed cache (a VIPT alias of one
 * physical line lives in another set); otherwise, and for short runs, pages go through cache_rw. */


static int apart_from_memory(const dmamap_machine *m, const uint8_t *b, uint64_t n)
{
    const uint8_t *ram = m->ram_host, *ram_end = ram ? ram + (m->ram_pages << PAGE_SHIFT) : NULL;
    const uint8_t *bk = m->backing, *bk_end = bk ? bk + m->backing_size : NULL;
    return (!ram || b + n <= ram || b >= ram_end) && (!bk || b + n <= bk || b >= bk_end);
}

static inline void direct_flush(uint8_t *host, uint8_t *buf, uint64_t len, int is_write)
{
    if (!len)
        return;
    if (is_write)
        memmove(host, buf, len);
    else
        memmove(buf, host, len);
}

/* The direct copies of a run gather into runs of contiguous memory and buffer
 * (a direct_run), each moved with one memmove: add len bytes at host / b,
 * moving the run so far first when they do not continue it. */
struct direct_run {
    uint8_t *host, *buf;
    uint64_t len;
};

static inline void direct_add(struct direct_run *r, uint8_t *host, uint8_t *b, uint64_t len, int is_write)
{
    if (host != r->host + r->len || b != r->buf + r->len) {
        direct_flush(r->host, r->buf, r->len, is_write);
        *r = (struct direct_run){host, b, 0};
    }
    r->len += len;
}

/* How many of the run's lines fall in each set: a difference array over the sets, one entry pair per segment. */
static void count_sets(uint32_t *total, int32_t *diff, uint64_t nsets, const struct dmamap_cache_seg *seg,
                       size_t nseg)
{
    uint64_t all = 0;
    for (size_t j = 0; j < nseg; j++) {
        uint64_t count = seg[j].n / CACHE_LINE, first = (seg[j].pa / CACHE_LINE) & (nsets - 1);
        all += count / nsets;
        count %= nsets;
        uint64_t end = first + count;
        diff[first]++;
        if (end <= nsets) {
            diff[end]--;
        } else {
            diff[nsets]--;
            diff[0]++;
            diff[end - nsets]--;
        }
    }
    int64_t run = 0;
    for (uint64_t c = 0; c < nsets; c++) {
        run += diff[c];
        total[c] = (uint32_t)(all + (uint64_t)run);
    }
}

/* Whether the next line of each of these sets is one that goes directly and evicts one that did too. */
__attribute__((optimize("tree-vectorize")))
static int all_direct(const uint32_t *restrict seen, const uint32_t *restrict total, uint64_t count, uint32_t W)
{
    uint32_t bad = 0;
    for (uint64_t c = 0; c < count; c++)
        bad |= (uint32_t)(seen[c] < 2 * W) | (uint32_t)(seen[c] + 1 + W > total[c]);
    return !bad;
}

__attribute__((optimize("tree-vectorize")))
static void count_seen(uint32_t *restrict seen, uint64_t count)
{
    for (uint64_t c = 0; c < count; c++)
        seen[c]++;
}

/* A run contiguous in memory and buffer with at least 3W lines in every set (lines >= 3 * capacity): each
 * set's first W lines are the run's first `capacity` lines, its last W the run's last `capacity`, and
 * every line between goes directly.  The model's effects, in an order none of them can tell apart:
 *   1. the first lines, tags and stamps only: each is evicted again by the line W after it in its set, so
 *      its bytes never need to be in the line.  What one evicts is written back if dirty; a dirty line a
 *      read hits is written back now instead of at its eviction; a write's line is counted as written
 *      back at its eviction (below) and its bytes go directly;
 *   2. every line but the last `capacity` moves directly, in one memmove, after step 1's write-backs (as
 *      in the model, where each comes before the run's own access of that address, if any);
 *   3. the last lines fill the ways the first ones took, in turn (line i of a set takes the way of line
 *      i-W), stamped as the model stamps them; what they evict went directly.
 * For a write, every line but the last `capacity` is evicted dirty within the run: one write-back each. */
static void run_contiguous(dmamap_machine *m, const struct dmamap_cache_seg *s, uint64_t lines, uint16_t *ring,
                           int is_write, uint64_t *clock, uint64_t *hits, uint64_t *wbs)
{
    const uint64_t nsets = (uint64_t)m->cache_sets, set_mask = nsets - 1, W = (uint64_t)m->cache_ways;
    const uint64_t capacity = nsets * W, first = (s->pa / CACHE_LINE) & set_mask, c0 = *clock;
    struct cache_line *const cache = m->cache;
    uint64_t h = 0, wb = 0;
    /* set by set (sets do not interact): line L = j * nsets + k is line j+1 of set first + k */
    const uint64_t stride = nsets * CACHE_LINE;
    for (uint64_t k = 0; k < nsets; k++) {
        uint64_t set = (first + k) & set_mask, base = s->pa + k * CACHE_LINE;
        struct cache_line *ways = &cache[set * W];
        uint16_t *slots = &ring[set * W];
        int any_hit = 0;
        for (uint64_t w = 0; w < W; w++)
            any_hit |= (ways[w].tag & CL_VALID) && (ways[w].tag & LINE_MASK) - base < W * stride;
        if (!any_hit) {
            /* every line misses, so the W lines evict the W ways, each once: each way is written
             * back if dirty and taken by one of them.  Which takes which is the model's choice
             * (oldest first) but nothing can tell: step 3 replaces every way's tag and stamp, and
             * a later victim is chosen by stamp alone (distinct by then).  So line j takes way j,
             * with no sort and no tag or stamp written here. */
            for (uint64_t w = 0; w < W; w++) {
                if (ways[w].tag & CL_DIRTY) {
                    writeback_nocount(m, &ways[w]);
                    wb++;
                }
                slots[w] = (uint16_t)w;
            }
            continue;
        }
        for (uint64_t j = 0; j < W; j++) {
            uint64_t L = j * nsets + k, tag = (base + j * stride) | CL_VALID;
            struct cache_line *l, *victim = way_lookup(ways, W, tag, &l);
            int hit = l != NULL;
            l = hit ? l : victim;
            h += (uint64_t)hit;
            if ((l->tag & CL_DIRTY) && (!hit || !is_write)) {
                writeback_nocount(m, l);   /* the victim's, or (a read's hit) the one due at its eviction */
                wb++;
            }
            l->tag = tag;
            l->lru = c0 + L + 1;
            slots[j] = (uint16_t)(l - ways);
        }
    }
    direct_flush(s->host, s->buf, (lines - capacity) * CACHE_LINE, is_write);
    /* the last lines, nsets at a time from a multiple of nsets: line L takes the way of line j+1 of its
     * set, j = (L / nsets) % W */
    const int shift = __builtin_ctzll(nsets);
    for (uint64_t L = lines - capacity; L < lines;) {
        uint64_t j = (L >> shift) % W, end = ((L >> shift) + 1) << shift;
        for (end = end < lines ? end : lines; L < end; L++) {
            uint64_t set = (first + L) & set_mask;
            struct cache_line *l = &cache[set * W + ring[set * W + j]];
            uint8_t *ld = line_data(m, l), *b = s->buf + L * CACHE_LINE;
            l->lru = c0 + L + 1;
            if (is_write) {
                copy_line(ld, b);
                l->tag = (s->pa + L * CACHE_LINE) | CL_VALID | CL_DIRTY;
            } else {   /* (one load for the line and the buffer, as a fill then a read of the line) */
                fill_copy(ld, b, s->host + L * CACHE_LINE);
                l->tag = (s->pa + L * CACHE_LINE) | CL_VALID;
            }
        }
    }
    *clock = c0 + lines;
    *hits += h;
    *wbs += wb + (is_write ? lines - capacity : 0);
}

/* Any other run (pages scattered in memory, or too short for run_contiguous), piece by piece: a
 * segment's lines in consecutive sets up to the last set, each line as this section's first comment
 * says, with sets (2 * nsets, zeroed) counting the run's lines per set and diff (nsets + 1, zeroed) as
 * scratch. */
static void run_scattered(dmamap_machine *m, const struct dmamap_cache_seg *seg, size_t nseg, uint32_t *sets,
                          int32_t *diff, uint16_t *ring, int is_write, uint64_t *clock, uint64_t *hits,
                          uint64_t *misses, uint64_t *wbs)
{
    const uint64_t nsets = (uint64_t)m->cache_sets, set_mask = nsets - 1;
    const uint32_t W = (uint32_t)m->cache_ways;
    uint32_t *seen = sets, *total = sets + nsets;
    count_sets(total, diff, nsets, seg, nseg);

    struct cache_line *const cache = m->cache;
    struct direct_run dr = {NULL, NULL, 0};
    /* piece by piece: a segment's lines in consecutive sets, up to the last set */
    for (size_t j = 0; j < nseg; j++)
    for (uint64_t pa0 = seg[j].pa, pend = seg[j].pa + seg[j].n; pa0 < pend;) {
        uint64_t set = (pa0 / CACHE_LINE) & set_mask;
        uint64_t count = (pend - pa0) / CACHE_LINE;
        if (count > nsets - set)
            count = nsets - set;
        uint8_t *host = seg[j].host + (pa0 - seg[j].pa), *b = seg[j].buf + (pa0 - seg[j].pa);
        uint64_t plen = count * CACHE_LINE;
        pa0 += plen;
        if (all_direct(seen + set, total + set, count, W)) {
            /* every line of the segment goes directly, and evicts a line that went directly too */
            count_seen(seen + set, count);
            *misses += count;
            *clock += count;
            if (is_write)
                *wbs += count;
            direct_add(&dr, host, b, plen, is_write);
            continue;
        }
        for (uint64_t pa = pa0 - plen, end = pa0; pa < end;
             pa += CACHE_LINE, host += CACHE_LINE, b += CACHE_LINE, set = (set + 1) & set_mask) {
            uint32_t i = ++seen[set];
            if (i > W && i + W <= total[set]) {
                /* taking the way of line i-W and evicted again by line i+W: memory and buffer directly
                 * (the way itself changes only when line i-W is one of the first W, below) */
                if (i - W <= W) {
                    struct cache_line *l = &cache[set * W + ring[set * W + (i - 1) % W]];
                    if (l->tag & CL_DIRTY) {
                        writeback_nocount(m, l);
                        ++*wbs;
                    }
                    l->tag = 0;   /* a placeholder until a later line of the run takes the way */
                    l->lru = 0;
                } else if (is_write) {
                    ++*wbs;   /* evicting a line of the run that went directly, written */
                }
                ++*misses;
                ++*clock;
                direct_add(&dr, host, b, CACHE_LINE, is_write);
                continue;
            }
            struct cache_line *ways = &cache[set * W];
            uint16_t *slot = &ring[set * W + (i - 1) % W];
            if (i <= W) {
                /* the exact model; the line's way remembered for line i+W */
                struct cache_line *l = line_access(m, ways, (int)W, pa, CACHE_LINE, host, b, is_write, clock,
                                                   hits, misses, wbs);
                *slot = (uint16_t)(l - ways);
                continue;
            }
            /* one of the set's last W lines: a miss into the way of line i-W */
            struct cache_line *l = &ways[*slot];
            uint8_t *ld = line_data(m, l);
            ++*misses;
            if (i - W <= W) {
                if (l->tag & CL_DIRTY) {
                    writeback_nocount(m, l);
                    ++*wbs;
                }
            } else if (is_write) {
                ++*wbs;   /* line i-W went directly, and was written */
            }
            l->lru = ++*clock;
            if (is_write) {
                copy_line(ld, b);
                l->tag = (pa & LINE_MASK) | CL_VALID | CL_DIRTY;
            } else {
                fill_copy(ld, b, host);
                l->tag = (pa & LINE_MASK) | CL_VALID;
            }
        }
    }
    direct_flush(dr.host, dr.buf, dr.len, is_write);
}

void dmamap_cache_run(dmamap_machine *m, const struct dmamap_cache_seg *seg, size_t nseg, int is_write)
{
    uint64_t bytes = 0, lines = 0;
    for (size_t j = 0; j < nseg; j++) {
        bytes += seg[j].n;
        lines += seg[j].n / CACHE_LINE;
    }
    LOCK(&m->cache_lock);   /* the geometry too is read under it (dmamap_machine_set_cache replaces it) */
    const uint64_t nsets = (uint64_t)m->cache_sets, capacity = nsets * (uint64_t)m->cache_ways;
    int shortcut = !m->cache_vipt && lines > 2 * capacity && apart_from_memory(m, seg[0].buf, bytes);
    int contiguous = 1;
    for (size_t j = 0; shortcut && j < nseg; j++) {   /* whole lines only (the bulk path's pages are) */
        shortcut = !((seg[j].pa | seg[j].n) & (CACHE_LINE - 1));
        contiguous = contiguous && (j == 0 || (seg[j].pa == seg[j - 1].pa + seg[j - 1].n &&
                                               seg[j].host == seg[j - 1].host + seg[j - 1].n &&
                                               seg[j].buf == seg[j - 1].buf + seg[j - 1].n));
    }
    contiguous = contiguous && lines >= 3 * capacity;
    uint16_t *ring = shortcut ? malloc(capacity * sizeof *ring) : NULL;
    uint32_t *sets = shortcut && !contiguous ? calloc(2 * nsets, sizeof *sets) : NULL;
    int32_t *diff = shortcut && !contiguous ? calloc(nsets + 1, sizeof *diff) : NULL;
    if (!ring || (!contiguous && (!sets || !diff))) {
        free(sets);
        free(ring);
        free(diff);
        UNLOCK(&m->cache_lock);
        for (size_t j = 0; j < nseg; j++)
            cache_rw(m, seg[j].va, seg[j].pa, seg[j].host, seg[j].buf, seg[j].n, is_write);
        return;
    }
    uint64_t hits = 0, misses = 0, wbs = 0, clock = m->cache_clock;
    if (contiguous) {
        struct dmamap_cache_seg one = {seg[0].va, seg[0].pa, bytes, seg[0].host, seg[0].buf};
        run_contiguous(m, &one, lines, ring, is_write, &clock, &hits, &wbs);
        misses = lines - hits;
    } else {
        run_scattered(m, seg, nseg, sets, diff, ring, is_write, &clock, &hits, &misses, &wbs);
    }
    m->cache_clock = clock;
    m->cache_hits += hits;
    m->cache_misses += misses;
    m->cache_wb += wbs;
    UNLOCK(&m->cache_lock);
    free(sets);
    free(diff);
    free(ring);
}

void dmamap_cache_maint(dmamap_machine *m, uint64_t pa, uint64_t size, int clean, int inval)
{
    if (!m->cache || size == 0)
        return;
    uint64_t end = pa + size < pa ? ~0ULL : pa + size;
    m->cache_maint_lines += (end - (pa & LINE_MASK) + CACHE_LINE - 1) / CACHE_LINE;
    LOCK(&m->cache_lock);
    size_t nlines = (size_t)m->cache_sets * m->cache_ways;
    for (size_t i = 0; i < nlines; i++) {
        struct cache_line *l = &m->cache[i];
        uint64_t lpa = l->tag & LINE_MASK;
        if (!(l->tag & CL_VALID) || lpa + CACHE_LINE <= pa || lpa >= end)
            continue;
        if (clean && (l->tag & CL_DIRTY))
            writeback(m, l);
        if (inval) {
            l->tag = 0;
            l->lru = 0;   /* invalid ways are stamped 0 (cache_rw's victim choice relies on it) */
        }
    }
    UNLOCK(&m->cache_lock);
}

static int maint(dmamap_machine *m, uint64_t pa, uint64_t size, int clean, int inval, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    if (!m || m->closed)
        return dmamap_fail(err, DMAMAP_ECLOSED, pa, "machine is closed");
    if (pa + size < pa)
        return dmamap_fail(err, DMAMAP_EINVAL, pa, "cache maintenance range %#llx+%#llx wraps",
                           (unsigned long long)pa, (unsigned long long)size);
    dmamap_cache_maint(m, pa, size, clean, inval);
    return 0;
}

int dmamap_flush_dcache_range(dmamap_machine *m, uint64_t pa, uint64_t size, struct dmamap_err *err)
{
    return maint(m, pa, size, 1, 1, err);
}

int dmamap_invalidate_dcache_range(dmamap_machine *m, uint64_t pa, uint64_t size, struct dmamap_err *err)
{
    return maint(m, pa, size, 0, 1, err);
}

int dmamap_clean_dcache_range(dmamap_machine *m, uint64_t pa, uint64_t size, struct dmamap_err *err)
{
    return maint(m, pa, size, 1, 0, err);
}

int dmamap_machine_set_vipt(dmamap_machine *m, int vipt, struct dmamap_err *err)
{
    dmamap_err_clear(err);
    if (!m || m->closed)
        return dmamap_fail(err, DMAMAP_ECLOSED, 0, "machine is closed");
    if (!m->cache)
        return dmamap_fail(err, DMAMAP_EINVAL, 0, "a coherent machine has no cache model to index virtually");
    LOCK(&m->cache_lock);
    /* the lines already cached were placed by physical index: write them back and start afresh */
    size_t nlines = (size_t)m->cache_sets * m->cache_ways;
    for (size_t i = 0; i < nlines; i++) {
        if (m->cache[i].tag & CL_DIRTY)
            writeback(m, &m->cache[i]);
        m->cache[i].tag = 0;
        m->cache[i].lru = 0;
    }
    m->cache_vipt = !!vipt;
    UNLOCK(&m->cache_lock);
    return 0;
}
