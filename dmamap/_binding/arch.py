"""Bindings of the ISA table and the PTE attribute encoders (csrc/arch.c)."""

from __future__ import annotations

from dataclasses import dataclass

from dmamap._binding import call, ffi, lib

__all__ = ["IsaRecord", "NAME_MAX", "CACHE_MAX", "isa_count", "isa_record", "register_variant", "prot_make",
           "prot_cache", "prot_set_cache", "prot_flags"]

NAME_MAX: int = lib.DMAMAP_ISA_NAME_MAX
CACHE_MAX: int = lib.DMAMAP_CACHE_MAX


@dataclass(frozen=True)
class IsaRecord:
    """``struct dmamap_isa_info`` and the ISA's cache-type table, as Python values."""

    id: int
    name: str
    base: int
    levels: int
    va_bits: int
    cache_names: tuple[str, ...]
    cacheable: tuple[bool, ...]
    device: tuple[bool, ...]
    noncached: int
    writecombine: int
    dmacoherent: int
    cached: int
    device_align_fault: bool
    faulting_store_partial: bool
    kernel_half: int
    user_lo: int
    user_hi: int
    kern_lo: int
    kern_hi: int
    page_offset: int
    vmalloc_start: int
    vmalloc_end: int
    ram_base: int
    ram_max: int
    sram_base: int
    sram_max: int
    mmio_base: int
    mmio_size: int
    iowin_base: int
    mt_field: int
    mt_mask: int


def isa_count() -> int:
    """How many ISAs (built-in and registered variants) the core knows."""
    return int(lib.dmamap_isa_count())


_INT_FIELDS = ("id", "base", "levels", "va_bits", "noncached", "writecombine", "dmacoherent", "cached",
               "kernel_half", "user_lo", "user_hi", "kern_lo", "kern_hi", "page_offset", "vmalloc_start",
               "vmalloc_end", "ram_base", "ram_max", "sram_base", "sram_max", "mmio_base", "mmio_size",
               "iowin_base", "mt_field", "mt_mask")


def isa_record(index: int) -> IsaRecord | None:
    """The ISA at position ``index`` of the core's table, or None past its end."""
    info = ffi.new("struct dmamap_isa_info *")
    if lib.dmamap_isa_info(index, info) != 0:
        return None
    i = int(info.id)
    n = int(info.ncache)
    return IsaRecord(
        name=ffi.string(info.name).decode(),
        cache_names=tuple(ffi.string(lib.dmamap_cache_name(i, c)).decode() for c in range(n)),
        cacheable=tuple(lib.dmamap_cache_is_cacheable(i, c) == 1 for c in range(n)),
        device=tuple(lib.dmamap_cache_is_device(i, c) == 1 for c in range(n)),
        device_align_fault=bool(info.device_align_fault), faulting_store_partial=bool(info.faulting_store_partial),
        **{f: int(getattr(info, f)) for f in _INT_FIELDS},
    )


def register_variant(name: bytes, base: int, mt_mask: int, types: list[tuple[bytes, int, bool, bool]],
                     noncached: int, writecombine: int, dmacoherent: int, cached: int) -> int:
    """Register an ISA variant (``struct dmamap_isa_variant``); returns its id."""
    v = ffi.new("struct dmamap_isa_variant *")
    v.name = name
    v.base = base
    v.mt_mask = mt_mask
    v.ncache = len(types)
    for i, (tname, bits, cacheable, device) in enumerate(types):
        v.cache[i].name = tname
        v.cache[i].bits = bits
        v.cache[i].cacheable = int(cacheable)
        v.cache[i].device = int(device)
    v.noncached, v.writecombine, v.dmacoherent, v.cached = noncached, writecombine, dmacoherent, cached
    return call(lib.dmamap_isa_register_variant, v)


def prot_make(isa: int, flags: int, cache: int) -> int:
    """The PTE attribute bits of a generic protection (``ProtFlag``) and cache id."""
    return int(lib.dmamap_prot_make(isa, flags, cache))


def prot_cache(isa: int, prot: int) -> int:
    """The cache id a protection encodes (negative: none the ISA defines)."""
    return int(lib.dmamap_prot_cache(isa, prot))


def prot_set_cache(isa: int, prot: int, cache: int) -> int:
    return int(lib.dmamap_prot_set_cache(isa, prot, cache))


def prot_flags(isa: int, prot: int) -> int:
    """The generic ``ProtFlag`` bits a protection grants."""
    return int(lib.dmamap_prot_flags(isa, prot))
