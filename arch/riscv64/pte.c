/* RISC-V Sv39 (privileged spec, "Sv39: Page-Based 39-bit Virtual-Memory
 * System") with Svpbmt page-based memory types: 3 levels of 512 entries,
 * 4 KiB pages, 2 MiB and 1 GiB leaves.  A PTE is V 0, R 1, W 2, X 3, U 4,
 * G 5, A 6, D 7, RSW 9:8 (Linux: _PAGE_SPECIAL = bit 8), PPN 53:10, reserved
 * 60:54, PBMT 62:61 (0 PMA, 1 NC, 2 IO, 3 reserved), N 63 (Svnapot, not
 * modelled, so reserved here).  A non-leaf PTE has V set and R = W = X = 0.
 * The memory-type field is data (mt_mask / mt_enc), so variants such as
 * T-Head XTheadMae (bits 63:59) register without C. */
#include "../../csrc/internal.h"

#define RV_V (1ULL << 0)
#define RV_R (1ULL << 1)
#define RV_W (1ULL << 2)
#define RV_X (1ULL << 3)
#define RV_U (1ULL << 4)
#define RV_G (1ULL << 5)
#define RV_A (1ULL << 6)
#define RV_D (1ULL << 7)
#define RV_SPECIAL (1ULL << 8)     /* RSW bit 0: _PAGE_SPECIAL in Linux's pgtable-bits.h */
#define RV_PFN_SHIFT 10
#define RV_PPN_BITS 44
#define RV_OA (((1ULL << RV_PPN_BITS) - 1) << RV_PFN_SHIFT)   /* bits 53:10 */
#define RV_MT_FIELD (0x3ffULL << 54)   /* 63:54: N, PBMT and the bits reserved for extensions */
#define RV_PBMT (3ULL << 61)
#define RV_SATP_SV39 (8ULL << 60)

static const char *const names[3] = {"PMA", "NC", "IO"};
static const unsigned char cacheable[3] = {1, 0, 0};
static const unsigned char device[3] = {0, 0, 1};
static const uint64_t svpbmt[3] = {0, 1ULL << 61, 2ULL << 61};

static uint64_t entry_pa(uint64_t e, int level)
{
    uint64_t pa = ((e & RV_OA) >> RV_PFN_SHIFT) << PAGE_SHIFT;
    return pa & ~((1ULL << (PAGE_SHIFT + 9 * level)) - 1);
}

static uint64_t table_pa(uint64_t e)
{
    return ((e & RV_OA) >> RV_PFN_SHIFT) << PAGE_SHIFT;
}

static uint64_t table_entry(uint64_t pa, int kernel)
{
    (void)kernel;   /* non-leaf: V only; A, D and U are reserved there */
    return ((pa >> PAGE_SHIFT) << RV_PFN_SHIFT) | RV_V;
}

static uint64_t leaf(uint64_t pa, uint64_t prot, int level)
{
    (void)level;   /* the same format at every level */
    return ((pa >> PAGE_SHIFT) << RV_PFN_SHIFT) | prot;
}

static int is_table(uint64_t e, int level)
{
    return level > 0 && (e & (RV_V | RV_R | RV_W | RV_X)) == RV_V;
}

static int is_valid(const struct dmamap_arch *a, uint64_t e, int level)
{
    if (!(e & RV_V) || !(e & (RV_R | RV_X)))   /* invalid, or a pointer where a leaf must be */
        return 0;
    if ((e & RV_W) && !(e & RV_R))              /* W without R is reserved */
        return 0;
    if ((e & a->reserved) || dmamap_mt_prot_cache(a, e) < 0)
        return 0;
    /* a superpage's PPN bits below its size must be zero (misaligned superpage) */
    return !(e & RV_OA & ((1ULL << (RV_PFN_SHIFT + 9 * level)) - 1));
}

static uint64_t leaf_prot(uint64_t e, int level)
{
    (void)level;
    return e & ~RV_OA;
}

static uint64_t prot_make(const struct dmamap_arch *a, unsigned flags, int cache)
{
    uint64_t p = RV_V | RV_A;
    if (flags & (DMAMAP_PROT_READ | DMAMAP_PROT_WRITE))
        p |= RV_R;   /* Linux maps PROT_WRITE to R|W: W alone is reserved */
    if (flags & DMAMAP_PROT_WRITE)
        p |= RV_W | RV_D;
    if (flags & DMAMAP_PROT_EXEC)
        p |= RV_X;
    if (flags & DMAMAP_PROT_USER)
        p |= RV_U;
    else
        p |= RV_G | RV_D;
    if (!(flags & (DMAMAP_PROT_READ | DMAMAP_PROT_WRITE | DMAMAP_PROT_EXEC)))
        p &= ~RV_V;   /* PROT_NONE */
    return dmamap_mt_prot_set_cache(a, p, cache);
}

static unsigned prot_flags(uint64_t prot)
{
    unsigned f = 0;
    if (!(prot & RV_V))
        return (prot & RV_U) ? DMAMAP_PROT_USER : 0;
    if (prot & RV_R)
        f |= DMAMAP_PROT_READ;
    if (prot & RV_W)
        f |= DMAMAP_PROT_WRITE;
    if (prot & RV_X)
        f |= DMAMAP_PROT_EXEC;
    if (prot & RV_U)
        f |= DMAMAP_PROT_USER;
    return f;
}

static void decode(const struct dmamap_arch *a, uint64_t e, int level, struct dmamap_xlate *out)
{
    (void)level;
    int c = dmamap_mt_prot_cache(a, e);
    /* a reserved encoding makes the entry invalid (is_valid); name it I/O meanwhile */
    out->cache = c < 0 ? a->noncached : c;
    out->writable = !!(e & RV_W);
    out->user = !!(e & RV_U);
    out->executable = !!(e & RV_X);
    out->special = !!(e & RV_SPECIAL);
}

static uint64_t set_special(uint64_t prot)
{
    return prot | RV_SPECIAL;
}

static uint64_t root_value(uint64_t root_pa)
{
    return RV_SATP_SV39 | (root_pa >> PAGE_SHIFT);   /* satp: MODE 8 (Sv39), ASID 0, PPN */
}

const struct dmamap_arch dmamap_arch_riscv64 = {
    .isa = DMAMAP_ISA_RISCV64,
    .name = "riscv64",
    .levels = 3,
    .va_bits = 39,
    .max_block_level = 2,
    /* Linux's Sv39 layout (Documentation/arch/riscv/vm-layout.rst) */
    .user_lo = 0x1000ULL,
    .user_hi = 1ULL << 38,
    .kern_lo = 0xffffffc000000000ULL,
    .kern_hi = 0xffffffffffffffffULL,
    .page_offset = 0xffffffd600000000ULL,
    .vmalloc_start = 0xffffffc600000000ULL,
    .vmalloc_end = 0xffffffd600000000ULL,
    /* QEMU virt: RAM at 2 GiB (up to the 128 GiB of the direct map), PCIe MMIO
     * 0x4000_0000..0x8000_0000, PCIe PIO at 0x0300_0000, SRAM in the free hole
     * between the flash and the PCIe ECAM. */
    .ram_base = 0x80000000ULL,
    .ram_max = 0x2000000000ULL,
    .sram_base = 0x24000000ULL,
    .sram_max = 0x0c000000ULL,
    .mmio_base = 0x40000000ULL,
    .mmio_size = 0x40000000ULL,
    .iowin_base = 0x03000000ULL,
    .oa_mask = RV_OA,
    .pfn_shift = RV_PFN_SHIFT,
    .reserved = (0x7fULL << 54) | (1ULL << 63),
    .device_align_fault = 1,       /* misaligned I/O accesses raise access faults */
    .faulting_store_partial = 1,   /* a misaligned store that traps may be partly visible */
    .kernel_half = 256,            /* pgd_alloc copies the kernel's PGD entries */
    .ncache = 3,
    .cache_names = names,
    .cache_cacheable = cacheable,
    .cache_device = device,
    .noncached = 2,      /* pgprot_noncached: _PAGE_IO */
    .writecombine = 1,   /* pgprot_writecombine: _PAGE_NOCACHE */
    .dmacoherent = 2,    /* no arch pgprot_dmacoherent: the generic fallback, pgprot_noncached */
    .cached = 0,         /* PMA */
    .memtype_compatible = dmamap_memtype_by_class,
    .mt_field = RV_MT_FIELD,
    .mt_mask = RV_PBMT,
    .mt_enc = svpbmt,
    .table_entry = table_entry,
    .leaf = leaf,
    .is_valid = is_valid,
    .is_table = is_table,
    .entry_pa = entry_pa,
    .table_pa = table_pa,
    .decode = decode,
    .prot_make = prot_make,
    .prot_cache = dmamap_mt_prot_cache,
    .prot_set_cache = dmamap_mt_prot_set_cache,
    .prot_flags = prot_flags,
    .leaf_prot = leaf_prot,
    .set_special = set_special,
    .root_value = root_value,
};
