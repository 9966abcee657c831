/* The software TLB's invalidation (with the paging-structure cache, as INVLPG
 * and TLBI drop both). */
#include "internal.h"

void dmamap_tlb_flush_range(dmamap_as *as, uint64_t va, uint64_t size)
{
    as->st.tlb_flushes++;
    dmamap_pt_cache_reset(as);   /* invalidation drops paging-structure caches too (INVLPG, TLBI) */
    /* every CPU's TLB (a shootdown): the caller holds the lock exclusively */
    uint64_t n = size >> PAGE_SHIFT;
    for (int k = 0; k < AS_CPUS; k++) {
        if (k && !as->cpu[k].used)   /* (slot 0 is the exclusive holder's: always in use) */
            continue;
        struct tlb_entry *tlb = as->cpu[k].tlb;
        if (n >= TLB_SIZE) {
            for (int i = 0; i < TLB_SIZE; i++)
                tlb[i].vpn = ~0ULL;
            continue;
        }
        for (uint64_t vpn = va >> PAGE_SHIFT; vpn < (va >> PAGE_SHIFT) + n; vpn++) {
            struct tlb_entry *t = &tlb[vpn % TLB_SIZE];
            if (t->vpn == vpn)
                t->vpn = ~0ULL;
        }
    }
}

void dmamap_tlb_flush_all(dmamap_as *as)
{
    if (!as)
        return;
    LOCK(&as->lock);
    dmamap_tlb_flush_range(as, 0, (uint64_t)TLB_SIZE << PAGE_SHIFT);
    UNLOCK(&as->lock);
}
