/* The built-in ISAs: one line each.  Each arch/<name>/ file defines
 * `const struct dmamap_arch dmamap_arch_<name>`; the build compiles every
 * arch file, and csrc/arch.c builds its table from this list. */
DMAMAP_ARCH(x86_64)
DMAMAP_ARCH(aarch64)
DMAMAP_ARCH(riscv64)
