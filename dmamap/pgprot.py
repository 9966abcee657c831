"""Page protections (pgprot_t): an ISA's raw PTE attribute bits with the ISA
they belong to, and the kernel's pgprot_* helpers, which pick the memory type
Linux picks on each ISA (from the ISA's descriptor, never a per-ISA table)."""

from __future__ import annotations

from dmamap._binding import ProtFlag, arch
from dmamap._check import u64
from dmamap.errors import InvalidArgumentError
from dmamap.isa import isa_info

__all__ = ["PgProt", "pgprot_of", "cache_names", "cache_id", "check_prot", "pgprot_noncached", "pgprot_writecombine",
           "pgprot_dmacoherent", "pgprot_cached"]


def _isa_id(isa: str) -> int:
    return isa_info(isa).id


def cache_names(isa: str) -> list[str]:
    """The ISA's cache-type names, indexed by the core's cache id."""
    return list(isa_info(isa).cache_names)


def cache_id(isa: str, name: str) -> int:
    if not isinstance(name, str):
        raise TypeError(f"cache type must be a str, not {type(name).__name__}")
    names = isa_info(isa).cache_names
    if name not in names:
        raise InvalidArgumentError(f"unknown {isa} cache type {name!r}; known: {', '.join(dict.fromkeys(names))}")
    return names.index(name)


#: with_cache results by (ISA, raw bits, cache name): the same few protections are recomputed on
#: every mapping (dma_pgprot), and the answer is a pure function of the key (an ISA's memory types
#: never change once registered).  PgProt values are immutable.
_WITH_CACHE: dict[tuple[str, int, str], PgProt] = {}
_WITH_CACHE_MAX = 4096


class PgProt(int):
    """A page protection: the ISA's raw PTE attribute bits (pgprot_val), plus its ISA."""

    isa: str

    def __new__(cls, value: int, isa: str) -> PgProt:
        isa_info(isa)   # a known ISA (TypeError / InvalidArgumentError otherwise)
        if type(value) is not int or not 0 <= value < 1 << 64:
            value = u64("prot", value)
        obj = super().__new__(cls, value)
        obj.isa = isa
        return obj

    @classmethod
    def make(cls, isa: str, *, read: bool = True, write: bool = False, exec: bool = False,
             user: bool = True, cache: str | None = None) -> PgProt:
        info = isa_info(isa)   # a known ISA (TypeError / InvalidArgumentError otherwise)
        flags = ((ProtFlag.READ if read else 0) | (ProtFlag.WRITE if write else 0) | (ProtFlag.EXEC if exec else 0)
                 | (ProtFlag.USER if user else 0))
        c = cache_id(isa, cache or info.cached)
        return cls(arch.prot_make(info.id, flags, c), isa)

    @property
    def cache(self) -> str:
        c = arch.prot_cache(_isa_id(self.isa), self)
        if c < 0:
            raise InvalidArgumentError(f"protection {int(self):#x} encodes a memory type {self.isa} reserves")
        return cache_names(self.isa)[c]

    def with_cache(self, name: str) -> PgProt:
        key = (self.isa, int(self), name)
        got = _WITH_CACHE.get(key) if type(name) is str else None
        if got is None:
            got = PgProt(arch.prot_set_cache(_isa_id(self.isa), self, cache_id(self.isa, name)), self.isa)
            if len(_WITH_CACHE) < _WITH_CACHE_MAX:
                _WITH_CACHE[key] = got
        return got

    @property
    def writable(self) -> bool:
        return bool(arch.prot_flags(_isa_id(self.isa), self) & ProtFlag.WRITE)

    def __repr__(self) -> str:
        f = arch.prot_flags(_isa_id(self.isa), self)
        rwx = "".join(c if f & b else "-" for c, b in (("r", ProtFlag.READ), ("w", ProtFlag.WRITE),
                                                        ("x", ProtFlag.EXEC)))
        return f"PgProt({int(self):#x}, {self.isa}, {rwx}, {self.cache})"


_OF: dict[tuple[int, str], PgProt] = {}


def pgprot_of(value: int, isa: str) -> PgProt:
    """``PgProt(value, isa)`` for raw bits read from the core, the same object for the same
    bits (the helpers' hot path builds one per mapping)."""
    got = _OF.get((value, isa))
    if got is None:
        got = PgProt(value, isa)
        if len(_OF) < _WITH_CACHE_MAX:
            _OF[(int(got), isa)] = got
    return got


def check_prot(prot: int, isa: str) -> PgProt:
    """``prot`` as a PgProt of ``isa`` (a plain int is taken as raw bits)."""
    if isinstance(prot, PgProt):
        if prot.isa != isa:
            raise InvalidArgumentError(f"pgprot for {prot.isa} used on a {isa} machine")
        return prot
    if isinstance(prot, bool) or not isinstance(prot, int):
        raise TypeError(f"prot must be a PgProt or int, not {type(prot).__name__}")
    if not 0 <= prot < 1 << 64:
        raise InvalidArgumentError(f"prot {prot:#x} is not a 64-bit value")
    return PgProt(prot, isa)


def _pgprot(prot: PgProt) -> PgProt:
    if not isinstance(prot, PgProt):
        raise TypeError(f"expected a PgProt, got {type(prot).__name__}")
    return prot


def pgprot_noncached(prot: PgProt) -> PgProt:
    """Uncached, as Linux: x86 UC-, AArch64 DEVICE_nGnRnE, RISC-V IO."""
    return _pgprot(prot).with_cache(isa_info(prot.isa).noncached)


def pgprot_writecombine(prot: PgProt) -> PgProt:
    """Write-combining: x86 WC, AArch64 NORMAL_NC, RISC-V NC."""
    return _pgprot(prot).with_cache(isa_info(prot.isa).writecombine)


def pgprot_dmacoherent(prot: PgProt) -> PgProt:
    """The attribute of coherent DMA memory on a non-coherent device: AArch64 NORMAL_NC;
    elsewhere the generic fallback, pgprot_noncached (x86 UC-, RISC-V IO)."""
    return _pgprot(prot).with_cache(isa_info(prot.isa).dmacoherent)


def pgprot_cached(prot: PgProt) -> PgProt:
    """Normal write-back cacheable memory."""
    return _pgprot(prot).with_cache(isa_info(prot.isa).cached)
