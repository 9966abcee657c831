/* AArch64 VMSAv8-64 stage 1, 4 KiB granule, 39-bit VA (3 levels, T0SZ=25),
 * as Linux ARM64_VA_BITS_39.  Memory type from AttrIndx[4:2] through MAIR
 * with Linux's layout. */
#include "../../csrc/internal.h"

#define A64_VALID (1ULL << 0)
#define A64_TABLE (1ULL << 1)     /* table at L0-L2, page at L3 */
#define A64_ATTRIDX(x) ((uint64_t)(x) << 2)
#define A64_ATTRIDX_MASK (7ULL << 2)
#define A64_AP_USER (1ULL << 6)   /* AP[1]: EL0 access */
#define A64_AP_RDONLY (1ULL << 7) /* AP[2] */
#define A64_SH_INNER (3ULL << 8)
#define A64_AF (1ULL << 10)
#define A64_NG (1ULL << 11)
#define A64_PXN (1ULL << 53)
#define A64_UXN (1ULL << 54)
#define A64_SPECIAL (1ULL << 56)
#define A64_ADDR 0x0000fffffffff000ULL

/* MAIR_EL1 attribute slots as Linux programs them. */
static const char *const names[8] = {"NORMAL", "NORMAL_TAGGED", "NORMAL_NC", "DEVICE_nGnRnE",
                                     "DEVICE_nGnRE", "MAIR5", "MAIR6", "MAIR7"};
static const unsigned char cacheable[8] = {1, 1, 0, 0, 0, 0, 0, 0};
/* Unprogrammed MAIR slots read as 0x00, i.e. Device-nGnRnE. */
static const unsigned char device[8] = {0, 0, 0, 1, 1, 1, 1, 1};

static uint64_t addr_mask(int level)
{
    return A64_ADDR & ~((1ULL << (PAGE_SHIFT + 9 * level)) - 1);
}

static uint64_t table_entry(uint64_t pa, int kernel)
{
    (void)kernel;
    return (pa & A64_ADDR) | A64_VALID | A64_TABLE;
}

static uint64_t leaf(uint64_t pa, uint64_t prot, int level)
{
    if (level == 0)
        return pa | prot;
    return (pa | prot) & ~A64_TABLE;   /* block descriptor */
}

static int is_valid(const struct dmamap_arch *a, uint64_t e, int level)
{
    (void)a;
    if (!(e & A64_VALID))
        return 0;
    return level > 0 || (e & A64_TABLE);   /* 0b01 at L3 is reserved */
}

static int is_table(uint64_t e, int level)
{
    return level > 0 && (e & 3) == 3;
}

static uint64_t entry_pa(uint64_t e, int level)
{
    return e & addr_mask(level);
}

static uint64_t table_pa(uint64_t e)
{
    return e & A64_ADDR;
}

static uint64_t leaf_prot(uint64_t e, int level)
{
    return (e & ~addr_mask(level)) | A64_TABLE;
}

static int prot_cache(const struct dmamap_arch *a, uint64_t prot)
{
    (void)a;
    return (int)((prot & A64_ATTRIDX_MASK) >> 2);
}

static uint64_t prot_set_cache(const struct dmamap_arch *a, uint64_t prot, int cache)
{
    (void)a;
    return (prot & ~A64_ATTRIDX_MASK) | A64_ATTRIDX(cache & 7);
}

static uint64_t prot_make(const struct dmamap_arch *a, unsigned flags, int cache)
{
    uint64_t p = A64_VALID | A64_TABLE | A64_AF | A64_SH_INNER | A64_PXN | A64_UXN;
    if (flags & DMAMAP_PROT_USER) {
        p |= A64_AP_USER | A64_NG;
        if (flags & DMAMAP_PROT_EXEC)
            p &= ~A64_UXN;
    } else if (flags & DMAMAP_PROT_EXEC) {
        p &= ~A64_PXN;
    }
    if (!(flags & DMAMAP_PROT_WRITE))
        p |= A64_AP_RDONLY;
    if (!(flags & (DMAMAP_PROT_READ | DMAMAP_PROT_WRITE | DMAMAP_PROT_EXEC)))
        p &= ~A64_VALID;   /* PROT_NONE */
    return prot_set_cache(a, p, cache);
}

static unsigned prot_flags(uint64_t prot)
{
    unsigned f = 0;
    if (prot & A64_VALID)
        f |= DMAMAP_PROT_READ;
    if ((prot & A64_VALID) && !(prot & A64_AP_RDONLY))
        f |= DMAMAP_PROT_WRITE;
    if (prot & A64_AP_USER) {
        f |= DMAMAP_PROT_USER;
        if ((prot & A64_VALID) && !(prot & A64_UXN))
            f |= DMAMAP_PROT_EXEC;
    } else if ((prot & A64_VALID) && !(prot & A64_PXN)) {
        f |= DMAMAP_PROT_EXEC;
    }
    return f;
}

static void decode(const struct dmamap_arch *a, uint64_t e, int level, struct dmamap_xlate *out)
{
    out->cache = prot_cache(a, e);
    out->writable = !(e & A64_AP_RDONLY);
    out->user = !!(e & A64_AP_USER);
    out->executable = out->user ? !(e & A64_UXN) : !(e & A64_PXN);
    out->special = !!(e & A64_SPECIAL);
    (void)level;
}

static uint64_t root_value(uint64_t root_pa)
{
    return root_pa;   /* TTBR0_EL1: ASID 0, CnP 0 */
}

static uint64_t set_special(uint64_t prot)
{
    return prot | A64_SPECIAL;
}

const struct dmamap_arch dmamap_arch_aarch64 = {
    .isa = DMAMAP_ISA_AARCH64,
    .name = "aarch64",
    .levels = 3,
    .va_bits = 39,
    .max_block_level = 2,
    .user_lo = 0x1000ULL,
    .user_hi = 1ULL << 39,
    .kern_lo = 0xffffff8000000000ULL,
    .kern_hi = 0xffffffffffffffffULL,
    .page_offset = 0xffffff8000000000ULL,
    .vmalloc_start = 0xffffffc008000000ULL,
    .vmalloc_end = 0xfffffffdbf000000ULL,
    /* As QEMU virt: SRAM low, PCI MMIO and the I/O window below RAM at 1 GiB;
     * RAM up to the 256 GiB the direct map spans below vmalloc. */
    .ram_base = 0x40000000ULL,
    .ram_max = 0x4000000000ULL,
    .sram_base = 0x04000000ULL,
    .sram_max = 0x0c000000ULL,
    .mmio_base = 0x10000000ULL,
    .mmio_size = 0x2eff0000ULL,
    .iowin_base = 0x3eff0000ULL,
    .oa_mask = A64_ADDR,
    .pfn_shift = PAGE_SHIFT,
    .reserved = 3ULL << 48,        /* RES0 output-address bits 49:48 (no FEAT_LPA) */
    .device_align_fault = 1,
    .faulting_store_partial = 1,   /* the architecture permits a partial write */
    .kernel_half = 0,              /* the kernel has its own root (TTBR1) */
    .ncache = 8,
    .cache_names = names,
    .cache_cacheable = cacheable,
    .cache_device = device,
    .noncached = 3,      /* DEVICE_nGnRnE */
    .writecombine = 2,   /* NORMAL_NC */
    .dmacoherent = 2,    /* NORMAL_NC */
    .cached = 0,         /* NORMAL */
    .memtype_compatible = dmamap_memtype_by_class,
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
