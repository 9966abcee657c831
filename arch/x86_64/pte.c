/* x86-64 4-level paging, 4 KiB pages with 2 MiB / 1 GiB large pages
 * (Intel SDM vol. 3 ch. 4).  Cache type comes from the PAT index
 * 4*PAT + 2*PCD + PWT with Linux's PAT layout. */
#include "../../csrc/internal.h"

#define X86_P (1ULL << 0)
#define X86_RW (1ULL << 1)
#define X86_US (1ULL << 2)
#define X86_PWT (1ULL << 3)
#define X86_PCD (1ULL << 4)
#define X86_A (1ULL << 5)
#define X86_D (1ULL << 6)
#define X86_PS (1ULL << 7)
#define X86_PAT (1ULL << 7)       /* in a 4 KiB PTE */
#define X86_G (1ULL << 8)
#define X86_SPECIAL (1ULL << 9)   /* _PAGE_SPECIAL, software bit 1 */
#define X86_PAT_LARGE (1ULL << 12)
#define X86_NX (1ULL << 63)
#define X86_ADDR 0x000ffffffffff000ULL

static const char *const names[8] = {"WB", "WC", "UC-", "UC", "WB", "WP", "UC-", "WT"};
static const unsigned char cacheable[8] = {1, 0, 0, 0, 1, 1, 0, 1};
static const unsigned char device[8] = {0, 0, 1, 1, 0, 0, 1, 0};
static const int canonical[8] = {0, 1, 2, 3, 0, 5, 2, 7};

static uint64_t addr_mask(int level)
{
    return X86_ADDR & ~((1ULL << (PAGE_SHIFT + 9 * level)) - 1);
}

static uint64_t table_entry(uint64_t pa, int kernel)
{
    return (pa & X86_ADDR) | X86_P | X86_RW | X86_A | X86_D | (kernel ? 0 : X86_US);
}

static uint64_t leaf(uint64_t pa, uint64_t prot, int level)
{
    if (level == 0)
        return pa | prot;
    uint64_t pat = (prot & X86_PAT) ? X86_PAT_LARGE : 0;
    return pa | (prot & ~X86_PAT) | X86_PS | pat;
}

static int is_valid(const struct dmamap_arch *a, uint64_t e, int level)
{
    (void)a;
    (void)level;
    return (int)(e & X86_P);
}

static int is_table(uint64_t e, int level)
{
    return level > 0 && (e & X86_P) && !(e & X86_PS);
}

static uint64_t entry_pa(uint64_t e, int level)
{
    return e & addr_mask(level);
}

static uint64_t table_pa(uint64_t e)
{
    return e & X86_ADDR;
}

static uint64_t leaf_prot(uint64_t e, int level)
{
    if (level == 0)
        return e & ~X86_ADDR;
    uint64_t p = e & ~X86_ADDR & ~X86_PS;
    if (e & X86_PAT_LARGE)
        p |= X86_PAT;
    return p;
}

static int pat_index(uint64_t prot)
{
    return (int)(((prot & X86_PAT) ? 4 : 0) | ((prot & X86_PCD) ? 2 : 0) | ((prot & X86_PWT) ? 1 : 0));
}

static int prot_cache(const struct dmamap_arch *a, uint64_t prot)
{
    (void)a;
    return canonical[pat_index(prot)];
}

static uint64_t prot_set_cache(const struct dmamap_arch *a, uint64_t prot, int cache)
{
    (void)a;
    int idx = canonical[cache & 7];
    prot &= ~(X86_PAT | X86_PCD | X86_PWT);
    if (idx & 4)
        prot |= X86_PAT;
    if (idx & 2)
        prot |= X86_PCD;
    if (idx & 1)
        prot |= X86_PWT;
    return prot;
}

static uint64_t prot_make(const struct dmamap_arch *a, unsigned flags, int cache)
{
    uint64_t p = X86_P | X86_A;
    if (flags & DMAMAP_PROT_WRITE)
        p |= X86_RW;
    if (flags & DMAMAP_PROT_USER)
        p |= X86_US;
    else
        p |= X86_G | X86_D;
    if (!(flags & DMAMAP_PROT_EXEC))
        p |= X86_NX;
    if (!(flags & (DMAMAP_PROT_READ | DMAMAP_PROT_WRITE | DMAMAP_PROT_EXEC)))
        p &= ~X86_P;   /* PROT_NONE */
    return prot_set_cache(a, p, cache);
}

static unsigned prot_flags(uint64_t prot)
{
    unsigned f = 0;
    if (prot & X86_P)
        f |= DMAMAP_PROT_READ;
    if (prot & X86_RW)
        f |= DMAMAP_PROT_WRITE;
    if ((prot & X86_P) && !(prot & X86_NX))
        f |= DMAMAP_PROT_EXEC;
    if (prot & X86_US)
        f |= DMAMAP_PROT_USER;
    return f;
}

static void decode(const struct dmamap_arch *a, uint64_t e, int level, struct dmamap_xlate *out)
{
    uint64_t prot = leaf_prot(e, level);
    out->cache = prot_cache(a, prot);
    out->writable = !!(e & X86_RW);
    out->user = !!(e & X86_US);
    out->executable = !(e & X86_NX);
    out->special = !!(e & X86_SPECIAL);
}

static uint64_t root_value(uint64_t root_pa)
{
    return root_pa;   /* CR3: PCID 0, PWT = PCD = 0 */
}

static uint64_t set_special(uint64_t prot)
{
    return prot | X86_SPECIAL;
}

/* arch/x86/include/asm/pgtable.h is_new_memtype_allowed: a PFN map asking for
 * `want` may take the reserved `got` except UC-/WC/WT over WB and WT over WC. */
static int memtype_adopt(const struct dmamap_arch *a, int want, int got)
{
    (void)a;
    want = canonical[want];
    got = canonical[got];
    if (got == 0 && (want == 2 || want == 1 || want == 7))
        return 0;
    return !(want == 7 && got == 1);
}

const struct dmamap_arch dmamap_arch_x86_64 = {
    .isa = DMAMAP_ISA_X86_64,
    .name = "x86_64",
    .levels = 4,
    .va_bits = 48,
    .max_block_level = 2,
    .user_lo = 0x1000ULL,
    .user_hi = 0x0000800000000000ULL,
    .kern_lo = 0xffff800000000000ULL,
    .kern_hi = 0xffffffffffffffffULL,
    .page_offset = 0xffff888000000000ULL,
    .vmalloc_start = 0xffffc90000000000ULL,
    .vmalloc_end = 0xffffe90000000000ULL,
    /* A PC whose physical map fits 39 address bits (many Intel clients, QEMU's
     * default CPU): RAM from 0 up to 192 GiB, on-bus SRAM above it, a 64-bit PCI
     * MMIO window of 64 GiB at 256 GiB, then the I/O-port window. */
    .ram_base = 0,
    .ram_max = 0x3000000000ULL,
    .sram_base = 0x3000000000ULL,
    .sram_max = 0x100000000ULL,
    .mmio_base = 0x4000000000ULL,
    .mmio_size = 0x1000000000ULL,
    .iowin_base = 0x5000000000ULL,
    .oa_mask = X86_ADDR,
    .pfn_shift = PAGE_SHIFT,
    .reserved = 0,
    .device_align_fault = 0,
    .faulting_store_partial = 0,   /* a faulting instruction has no effect (SDM vol. 3 6.5) */
    .kernel_half = 256,            /* pgd_alloc: clone_pgd_range of entries 256..511 */
    .ncache = 8,
    .cache_names = names,
    .cache_cacheable = cacheable,
    .cache_device = device,
    .noncached = 2,      /* UC- */
    .writecombine = 1,   /* WC */
    .dmacoherent = 2,    /* no pgprot_dmacoherent: the generic fallback, pgprot_noncached */
    .cached = 0,         /* WB */
    .memtype_compatible = dmamap_memtype_exact,
    .memtype_adopt = memtype_adopt,
    .page_alias_reported = 1,
    .table_entry = table_entry,
    .leaf = leaf,
    .is_valid = is_valid,
    .is_table = is_table,
    .entry_pa = entry_pa,
    .table_pa = table_pa,
    .decode = decode,
    .prot_make = prot_make,
    .prot_cache = prot_cache,
    .prot_set_cache = prot_set_cache,
    .prot_flags = prot_flags,
    .leaf_prot = leaf_prot,
    .set_special = set_special,
    .root_value = root_value,
};
