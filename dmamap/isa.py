"""The instruction sets the core knows, read from its ISA table.

Nothing here is per-ISA: names, page-table shape, cache-type names, the
kernel's pgprot_* choices and the default physical layout all come from the C
descriptors (``arch/*/``) through ``dmamap_isa_info``.  An ISA *variant* that
differs only in how PTEs encode memory types (T-Head XTheadMae on riscv64) is
registered at run time from data with :func:`register_isa_variant`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from dmamap._binding import arch
from dmamap.errors import InvalidArgumentError

__all__ = ["Isa", "Layout", "IsaVariant", "MemType", "ISAS", "isa_info", "isa_names", "register_isa_variant"]

_NAME_MAX = arch.NAME_MAX
_CACHE_MAX = arch.CACHE_MAX


@dataclass(frozen=True)
class Layout:
    """Where things sit in one ISA's physical and kernel virtual address space."""

    ram_base: int
    ram_max: int        #: largest RAM a machine may have: regions never overlap, the direct map holds it
    sram_base: int
    sram_max: int
    mmio_base: int
    mmio_size: int
    iowin_base: int
    page_offset: int


@dataclass(frozen=True)
class Isa:
    """One ISA (or variant) as its C descriptor describes it."""

    id: int
    name: str
    base: str                        #: the ISA a variant derives from (itself otherwise)
    levels: int
    va_bits: int
    cache_names: tuple[str, ...]     #: indexed by the core's cache id
    cacheable: frozenset[str]
    device: frozenset[str]
    noncached: str                   #: pgprot_noncached
    writecombine: str                #: pgprot_writecombine
    dmacoherent: str                 #: pgprot_dmacoherent (or its generic fallback)
    cached: str                      #: normal write-back memory
    device_align_fault: bool         #: unaligned accesses to Device memory fault
    faulting_store_partial: bool     #: a faulting store may have written part of its bytes
    kernel_half: int                 #: first root index shared by every user root (0: separate roots)
    user_range: tuple[int, int]
    kernel_range: tuple[int, int]
    vmalloc: tuple[int, int]
    layout: Layout
    mt_field: int                    #: PTE bits a variant may use for memory types (0: none)
    mt_mask: int


@dataclass(frozen=True)
class MemType:
    """One memory type of an ISA variant: its name, PTE encoding and class."""

    name: str
    bits: int
    cacheable: bool = False
    device: bool = False


@dataclass(frozen=True)
class IsaVariant:
    """An ISA variant described as data: a base ISA whose memory-type field
    (``Isa.mt_field``) encodes ``types`` within ``mt_mask``, and which of them
    the kernel's pgprot_noncached / writecombine / dmacoherent / cached pick."""

    name: str
    base: str
    mt_mask: int
    types: tuple[MemType, ...]
    noncached: str
    writecombine: str
    dmacoherent: str
    cached: str
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


_lock = threading.Lock()
_by_name: dict[str, Isa] = {}
#: ISA name -> core id, for every ISA the core knows (variants join when registered).
ISAS: dict[str, int] = {}


def _read(index: int) -> Isa:
    r = arch.isa_record(index)
    if r is None:
        raise InvalidArgumentError(f"no ISA at index {index}")
    names = r.cache_names
    base_name = r.name
    if r.base != r.id:
        base_name = next(isa.name for isa in _by_name.values() if isa.id == r.base)
    return Isa(
        id=r.id, name=r.name, base=base_name, levels=r.levels, va_bits=r.va_bits, cache_names=names,
        cacheable=frozenset(n for n, c in zip(names, r.cacheable, strict=True) if c),
        device=frozenset(n for n, d in zip(names, r.device, strict=True) if d),
        noncached=names[r.noncached], writecombine=names[r.writecombine], dmacoherent=names[r.dmacoherent],
        cached=names[r.cached], device_align_fault=r.device_align_fault,
        faulting_store_partial=r.faulting_store_partial, kernel_half=r.kernel_half,
        user_range=(r.user_lo, r.user_hi), kernel_range=(r.kern_lo, r.kern_hi),
        vmalloc=(r.vmalloc_start, r.vmalloc_end),
        layout=Layout(ram_base=r.ram_base, ram_max=r.ram_max, sram_base=r.sram_base, sram_max=r.sram_max,
                      mmio_base=r.mmio_base, mmio_size=r.mmio_size, iowin_base=r.iowin_base,
                      page_offset=r.page_offset),
        mt_field=r.mt_field, mt_mask=r.mt_mask,
    )


def _refresh() -> None:
    """Read every ISA the core has that Python has not seen yet (in table order)."""
    with _lock:
        for index in range(len(_by_name), arch.isa_count()):
            isa = _read(index)
            _by_name[isa.name] = isa
            ISAS[isa.name] = isa.id


def isa_names() -> list[str]:
    """Every ISA name the core knows, built-ins first."""
    return list(ISAS)


def isa_info(name: str) -> Isa:
    """The descriptor of ISA ``name``; unknown names list the known ones."""
    if not isinstance(name, str):
        raise TypeError(f"ISA must be a str, not {type(name).__name__}")
    isa = _by_name.get(name)
    if isa is None:
        _refresh()   # a variant another module registered through the core directly
        isa = _by_name.get(name)
        if isa is None:
            raise InvalidArgumentError(f"unknown ISA {name!r}; one of {', '.join(ISAS)}")
    return isa


def register_isa_variant(variant: IsaVariant) -> Isa:
    """Register an ISA variant with the core (idempotent for an identical
    description) and return its :class:`Isa`.  The core validates it: the mask
    must lie in the base ISA's memory-type field, encodings must be distinct
    and inside the mask, the cached type cacheable."""
    if not isinstance(variant, IsaVariant):
        raise TypeError(f"expected an IsaVariant, not {type(variant).__name__}")
    base = isa_info(variant.base)
    types = tuple(variant.types)
    if not 1 <= len(types) <= _CACHE_MAX or not all(isinstance(t, MemType) for t in types):
        raise InvalidArgumentError(f"an ISA variant has 1 to {_CACHE_MAX} MemType entries")
    names = [t.name for t in types]
    picks = []
    for attr in ("noncached", "writecombine", "dmacoherent", "cached"):
        pick = getattr(variant, attr)
        if pick not in names:
            raise InvalidArgumentError(f"{attr}={pick!r} is not one of the variant's memory types {names}")
        picks.append(names.index(pick))
    arch.register_variant(_cname("variant name", variant.name), base.id, _u64("mt_mask", variant.mt_mask),
                          [(_cname("memory type name", t.name), _u64(f"{t.name} bits", t.bits), bool(t.cacheable),
                            bool(t.device)) for t in types], *picks)
    _refresh()
    return _by_name[variant.name]


def _cname(what: str, s: str) -> bytes:
    if not isinstance(s, str):
        raise TypeError(f"{what} must be a str, not {type(s).__name__}")
    b = s.encode()
    if not 0 < len(b) < _NAME_MAX:
        raise InvalidArgumentError(f"{what} {s!r} must be 1-{_NAME_MAX - 1} bytes")
    return b


def _u64(what: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not 0 <= value < 1 << 64:
        raise InvalidArgumentError(f"{what} {value:#x} is not a 64-bit value")
    return value


_refresh()
