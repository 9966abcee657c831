"""Address spaces, VMAs and the kernel's PTE primitives.

Names and argument order follow Linux (mm/memory.c, include/linux/mm.h), so a
driver writer recognises ``remap_pfn_range(vma, addr, pfn, size, prot)``.
"""

from __future__ import annotations

import enum
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from dmamap._ffi import _local, call, ffi, in_buffer, lib, out_buffer, raise_for, stash
from dmamap.errors import (
    InvalidArgumentError,
    MachineClosedError,
    SegmentationFault,
    VmaNotMappedError,
)

if TYPE_CHECKING:
    from dmamap.machine import Machine, Page

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
#: Accesses up to this size go straight to the core; larger ones are checked first.
_SMALL_ACCESS = 1 << 16
_U64_LIMIT = 1 << 64
_SCRATCH_MAX = 16 << 20   # reads up to this size go through a reused per-thread buffer

__all__ = [
    "PAGE_SHIFT", "PAGE_SIZE", "VmFlags", "PgProt", "Translation", "Vma", "VmFault", "AddressSpace",
    "AsStats", "VM_FAULT_NOPAGE", "VM_FAULT_SIGBUS", "remap_pfn_range", "vmf_insert_pfn",
    "vmf_insert_pfn_prot", "remap_pfn_chunks", "vmf_insert_mixed", "vm_insert_page", "zap_vma_ptes",
    "change_protection", "pgprot_noncached", "pgprot_writecombine", "pgprot_dmacoherent", "pgprot_cached",
]


class VmFlags(enum.IntFlag):
    """Linux vm_flags, same names and values."""

    VM_READ = 0x1
    VM_WRITE = 0x2
    VM_EXEC = 0x4
    VM_SHARED = 0x8
    VM_PFNMAP = 0x400
    VM_IO = 0x4000
    VM_DONTEXPAND = 0x40000
    VM_DONTDUMP = 0x4000000
    VM_MIXEDMAP = 0x10000000

    def __str__(self) -> str:
        # Flag names on every Python (3.11's IntFlag prints the bare integer).
        known = [f for f in type(self) if f in self]
        rest = int(self) & ~sum(int(f) for f in known)
        return "|".join([str(f.name) for f in known] + ([f"{rest:#x}"] if rest else [])) or "0"


class _FaultResult(enum.IntEnum):
    VM_FAULT_NOPAGE = 1
    VM_FAULT_SIGBUS = 2


VM_FAULT_NOPAGE = _FaultResult.VM_FAULT_NOPAGE
VM_FAULT_SIGBUS = _FaultResult.VM_FAULT_SIGBUS

_ISA_IDS = {"x86_64": 1, "aarch64": 2}
_NONCACHED = {"x86_64": "UC-", "aarch64": "DEVICE_nGnRnE"}
_WRITECOMBINE = {"x86_64": "WC", "aarch64": "NORMAL_NC"}
# x86 has no pgprot_dmacoherent: the generic fallback is pgprot_noncached.
_DMACOHERENT = {"x86_64": "UC-", "aarch64": "NORMAL_NC"}
_CACHED = {"x86_64": "WB", "aarch64": "NORMAL"}


def cache_names(isa: str) -> list[str]:
    """The ISA's cache-type names, indexed by the core's cache id."""
    names = _CACHE_NAMES.get(isa) if isinstance(isa, str) else None
    if names is None:   # fixed per ISA: ask the core once
        if not isinstance(isa, str):
            raise TypeError(f"ISA must be a str, not {type(isa).__name__}")
        if isa not in _ISA_IDS:
            raise InvalidArgumentError(f"unknown ISA {isa!r}; one of {', '.join(_ISA_IDS)}")
        i = _ISA_IDS[isa]
        names = _CACHE_NAMES[isa] = tuple(ffi.string(lib.dmamap_cache_name(i, c)).decode()
                                          for c in range(lib.dmamap_cache_count(i)))
    return list(names)


_CACHE_NAMES: dict[str, tuple[str, ...]] = {}


def cache_id(isa: str, name: str) -> int:
    if not isinstance(name, str):
        raise TypeError(f"cache type must be a str, not {type(name).__name__}")
    names = cache_names(isa)
    if name not in names:
        raise InvalidArgumentError(f"unknown {isa} cache type {name!r}; known: {', '.join(dict.fromkeys(names))}")
    return names.index(name)


class PgProt(int):
    """A page protection: the ISA's raw PTE attribute bits (pgprot_val), plus its ISA."""

    isa: str

    def __new__(cls, value: int, isa: str) -> PgProt:
        if isa not in _ISA_IDS:
            raise InvalidArgumentError(f"unknown ISA {isa!r}")
        if type(value) is not int or not 0 <= value < 1 << 64:
            value = _addr("prot", value)
        obj = super().__new__(cls, value)
        obj.isa = isa
        return obj

    @classmethod
    def make(cls, isa: str, *, read: bool = True, write: bool = False, exec: bool = False,
             user: bool = True, cache: str | None = None) -> PgProt:
        cache_names(isa)   # a known ISA (TypeError / InvalidArgumentError otherwise)
        flags = (1 if read else 0) | (2 if write else 0) | (4 if exec else 0) | (8 if user else 0)
        c = cache_id(isa, cache or _CACHED[isa])
        return cls(lib.dmamap_prot_make(_ISA_IDS[isa], flags, c), isa)

    @property
    def cache(self) -> str:
        return cache_names(self.isa)[lib.dmamap_prot_cache(_ISA_IDS[self.isa], self)]

    def with_cache(self, name: str) -> PgProt:
        return PgProt(lib.dmamap_prot_set_cache(_ISA_IDS[self.isa], self, cache_id(self.isa, name)), self.isa)

    @property
    def writable(self) -> bool:
        return bool(lib.dmamap_prot_flags(_ISA_IDS[self.isa], self) & 2)

    def __repr__(self) -> str:
        f = lib.dmamap_prot_flags(_ISA_IDS[self.isa], self)
        rwx = "".join(c if f & b else "-" for c, b in (("r", 1), ("w", 2), ("x", 4)))
        return f"PgProt({int(self):#x}, {self.isa}, {rwx}, {self.cache})"


def _prot(prot: int, isa: str) -> PgProt:
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
    """Uncached: x86 UC-, AArch64 DEVICE_nGnRnE (as Linux)."""
    return _pgprot(prot).with_cache(_NONCACHED[prot.isa])


def pgprot_writecombine(prot: PgProt) -> PgProt:
    """Write-combining: x86 WC, AArch64 NORMAL_NC."""
    return _pgprot(prot).with_cache(_WRITECOMBINE[prot.isa])


def pgprot_dmacoherent(prot: PgProt) -> PgProt:
    """The attribute of coherent DMA memory on a non-coherent device: AArch64 NORMAL_NC."""
    return _pgprot(prot).with_cache(_DMACOHERENT[prot.isa])


def pgprot_cached(prot: PgProt) -> PgProt:
    """Normal write-back cacheable memory."""
    return _pgprot(prot).with_cache(_CACHED[prot.isa])


@dataclass(frozen=True)
class Translation:
    """What the MMU makes of one virtual address."""

    va: int
    pa: int
    page_size: int
    cache: str
    cacheable: bool
    writable: bool
    user: bool
    executable: bool
    special: bool
    device: bool
    entry: int
    entry_pa: int
    region: str | None

    @property
    def pfn(self) -> int:
        return self.pa >> PAGE_SHIFT

    def __repr__(self) -> str:
        flags = " ".join(f for f in ("cacheable", "writable", "user", "executable", "special", "device")
                         if getattr(self, f))
        return (f"Translation(va={self.va:#x}, pa={self.pa:#x}, page_size={self.page_size:#x}, cache={self.cache!r}, "
                f"flags={flags!r}, entry={self.entry:#018x}, entry_pa={self.entry_pa:#x}, region={self.region!r})")


@dataclass(frozen=True)
class AsStats:
    """Counters of one address space."""

    ptes_written: int
    ptes_cleared: int
    faults: int
    cow_faults: int
    tlb_hits: int
    tlb_misses: int
    tlb_flushes: int
    table_pages: int
    pio_traps: int


@dataclass(frozen=True)
class VmFault:
    """What a Python fault handler is told (struct vm_fault)."""

    vma: Vma
    address: int
    pgoff: int
    write: bool


FaultHandler = Callable[[VmFault], Union["Page", int, None]]

_REGION_NAMES = {1: "ram", 2: "sram", 3: "mmio", 4: "io-window"}


class Vma:
    """One mapping of an address space (struct vm_area_struct)."""

    def __init__(self, mm: AddressSpace, vid: int, start: int, end: int) -> None:
        self.mm = mm
        self.id = vid
        self.start = start
        self.end = end
        self.fault_handler: FaultHandler | None = None
        self.private_data: Any = None
        self._on_unmap: list[Callable[[], None]] = []
        self._gone = False
        self._unmap_lock = threading.Lock()

    def _add_unmap_callback(self, cb: Callable[[], None]) -> None:
        """Run ``cb`` once when this VMA goes (munmap or its address space
        closing), or at once if it has gone already (a close on another thread)."""
        with self._unmap_lock:
            if not self._gone:
                self._on_unmap.append(cb)
                return
        cb()

    def _unmapped(self) -> None:
        """The VMA is gone: run its unmap callbacks, each exactly once."""
        with self._unmap_lock:
            self._gone = True
            cbs, self._on_unmap = self._on_unmap, []
        for cb in cbs:
            cb()

    def _info(self) -> Any:
        info = ffi.new("struct dmamap_vma_info *")
        try:
            call(lib.dmamap_vma_info, self.mm._ptr(), self.id, info)
        except VmaNotMappedError:   # the core forgot the range: name it here
            raise VmaNotMappedError(f"VMA [{self.start:#x}, {self.end:#x}) is not mapped (already unmapped)",
                                    self.start) from None
        return info

    @property
    def machine(self) -> Machine:
        return self.mm.machine

    @property
    def live(self) -> bool:
        info = ffi.new("struct dmamap_vma_info *")
        return lib.dmamap_vma_info(self.mm._as, self.id, info, ffi.NULL) == 0

    @property
    def vm_flags(self) -> VmFlags:
        return VmFlags(self._info().flags)

    flags = vm_flags

    @property
    def vm_page_prot(self) -> PgProt:
        """The protection new PTEs of this VMA get (vma->vm_page_prot)."""
        return PgProt(self._info().page_prot, self.mm.machine.isa)

    @vm_page_prot.setter
    def vm_page_prot(self, prot: int) -> None:
        call(lib.dmamap_vma_set_prot, self.mm._ptr(), self.id, _prot(prot, self.mm.machine.isa))

    page_prot = vm_page_prot

    @property
    def pfnmap(self) -> bool:
        return bool(self.vm_flags & VmFlags.VM_PFNMAP)

    @property
    def mixedmap(self) -> bool:
        return bool(self.vm_flags & VmFlags.VM_MIXEDMAP)

    @property
    def io(self) -> bool:
        return bool(self.vm_flags & VmFlags.VM_IO)

    @property
    def shared(self) -> bool:
        return bool(self.vm_flags & VmFlags.VM_SHARED)

    def __len__(self) -> int:
        return self.end - self.start

    @property
    def nr_pages(self) -> int:
        return (self.end - self.start) >> PAGE_SHIFT

    def vm_flags_set(self, flags: int) -> None:
        call(lib.dmamap_vma_set_flags, self.mm._ptr(), self.id, _addr("flags", flags), 0)

    def vm_flags_clear(self, flags: int) -> None:
        call(lib.dmamap_vma_set_flags, self.mm._ptr(), self.id, 0, _addr("flags", flags))

    def set_fault_handler(self, handler: FaultHandler | None) -> None:
        """Install a Python fault handler (vm_ops->fault); None removes it.

        The handler gets a :class:`VmFault` and returns a :class:`Page` (RAM
        only), or inserts PTEs itself and returns ``VM_FAULT_NOPAGE``, or
        returns ``VM_FAULT_SIGBUS``.
        """
        if handler is not None and not callable(handler):
            raise TypeError("fault handler must be callable")
        self.fault_handler = handler
        kind = 3 if handler is not None else 0
        call(lib.dmamap_vma_set_fault, self.mm._ptr(), self.id, kind, ffi.NULL, 0, 0, 0, 0)

    def set_builtin_fault(self, kind: str, chunks: Iterable[tuple[int, int]], *, first_page: int = 0,
                          fault_around: int = 1, large: bool = False) -> None:
        """Install a C fault handler: ``"page"`` hands out page descriptors of the
        (pfn, npages) chunks, ``"pfn"`` inserts their PFNs; ``first_page`` is the
        chunk-list page mapped at ``vma.start``."""
        kinds = {"page": 1, "pfn": 2}
        if kind not in kinds:
            raise InvalidArgumentError(f"built-in fault kind must be 'page' or 'pfn', not {kind!r}")
        cl = []
        for c in chunks:
            if not isinstance(c, (tuple, list)) or len(c) != 2:
                raise TypeError(f"chunks must be (pfn, npages) pairs, not {c!r}")
            cl.append((_addr("chunk pfn", c[0]), _addr("chunk npages", c[1])))
        arr = ffi.new("struct dmamap_chunk[]", max(len(cl), 1))
        for i, (p, n) in enumerate(cl):
            if n == 0:
                raise InvalidArgumentError(f"chunk {i} (pfn {p}, {n} pages) is invalid")
            arr[i].pfn, arr[i].npages = p, n
        call(lib.dmamap_vma_set_fault, self.mm._ptr(), self.id, kinds[kind], arr, len(cl),
             _addr("first_page", first_page), _addr("fault_around", fault_around), int(bool(large)))

    def set_pio_trap(self, port: int, count: int | None = None) -> None:
        """Make accesses at ``start + i`` trap into port ``port + i``, for ``i < count``
        (default: the whole VMA, clipped to the port space)."""
        port = _addr("port", port)
        if count is None:
            count = min(len(self), max(0x10000 - port, 1))
        call(lib.dmamap_vma_set_pio, self.mm._ptr(), self.id, port, _addr("count", count))

    def __repr__(self) -> str:
        state = "" if self.live else ", unmapped"
        return f"<Vma [{self.start:#x}, {self.end:#x}){state}>"


def _check_vma(vma: Vma) -> Vma:
    if not isinstance(vma, Vma):
        raise TypeError(f"expected a Vma, got {type(vma).__name__}")
    return vma


def _addr(name: str, v: int) -> int:
    """``v`` as a plain int in [0, 2**64): bools and non-ints are a TypeError; an
    int subclass is taken at its true value, whatever its comparisons say."""
    if type(v) is not int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an int, not {type(v).__name__}")
        v = int.__index__(v)
    if not 0 <= v < 1 << 64:
        raise InvalidArgumentError(f"{name} {v:#x} is not a 64-bit unsigned value", v if v >= 0 else 0)
    return v


def _u64_buffer(obj: object) -> Any:
    """A cffi ``uint64_t[]`` view of a contiguous buffer of unsigned 64-bit ints, else None."""
    if isinstance(obj, (list, tuple, range, bytes, bytearray, str)):
        return None
    try:
        mv = memoryview(obj)  # type: ignore[arg-type]
    except TypeError:
        return None
    if mv.ndim != 1 or mv.itemsize != 8 or mv.format.lstrip("@=<") not in ("Q", "L") or not mv.c_contiguous:
        return None
    return ffi.from_buffer("uint64_t[]", mv)


class AddressSpace:
    """One set of page tables (an mm_struct) with its VMAs and software TLB."""

    def __init__(self, machine: Machine, *, kernel: bool = False) -> None:
        from dmamap.machine import Machine

        if not isinstance(machine, Machine):
            raise TypeError(f"expected a Machine, got {type(machine).__name__}")
        self.machine = machine
        self.kernel = kernel
        err = ffi.new("struct dmamap_err *")
        ptr = lib.dmamap_as_new(machine._ptr(), int(kernel), err)
        if ptr == ffi.NULL:
            from dmamap._ffi import raise_for

            raise_for(err.code, err)
        # The C state lives as long as this object (never None), so a call racing
        # a close meets a closed address space, never freed memory.
        self._as: Any = ptr
        self._closed = False
        self._lock = threading.Lock()   # guards _vmas and _closed
        self._vmas: dict[int, Vma] = {}
        self._handle = ffi.new_handle(self)
        lib.dmamap_as_set_fault_cb(ptr, lib._dmamap_fault_cb, self._handle)
        state = machine._state
        try:
            machine._add_space(self, ptr)
        except BaseException:
            lib.dmamap_as_free(ptr)
            raise
        weakref.finalize(self, state.free_space, ptr)

    def _ptr(self) -> Any:
        if self._closed:
            raise MachineClosedError("address space is closed")
        self.machine._ptr()
        return self._as

    def _check_open(self) -> None:
        """Raise MachineClosedError if this space or its machine is closed, even
        while a close on another thread is still running (the core knows first)."""
        self._ptr()
        if lib.dmamap_as_closed(self._as):
            raise MachineClosedError("address space is closed")

    def close(self) -> None:
        """Tear down every mapping and free the page tables; later calls raise
        MachineClosedError.  Idempotent and thread-safe; a call on another
        thread finishes first or gets MachineClosedError, and a fault handler
        that closes its own address space ends its fault with it."""
        if not self.machine.closed:
            lib.dmamap_as_close(self._as)   # idempotent; waits for calls inside the core to finish
        with self._lock:
            if self._closed:
                return
            self._closed = True
            vmas, self._vmas = list(self._vmas.values()), {}
        for vma in vmas:
            vma._unmapped()
        self.machine._forget_space(self)

    def _detach(self) -> None:
        """The machine is closing: refuse later calls; the C state goes with the machine's."""
        with self._lock:
            self._closed = True
            self._vmas = {}

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def root(self) -> int:
        """Root table physical address: the CR3 (x86-64) or TTBR0 (AArch64) value."""
        return int(lib.dmamap_as_root(self._ptr()))

    @property
    def stats(self) -> AsStats:
        s = ffi.new("struct dmamap_as_stats *")
        lib.dmamap_as_stats(self._ptr(), s)
        return AsStats(*(int(getattr(s, f)) for f in AsStats.__dataclass_fields__))

    @property
    def vmas(self) -> list[Vma]:
        return sorted(self._vmas.values(), key=lambda v: v.start)

    def mmap(self, length: int, *, prot: str = "rw", shared: bool = True, flags: int = 0,
             addr: int = 0, align: int | None = None) -> Vma:
        """Create a VMA of ``length`` bytes (rounded up to pages) with no PTEs yet.

        ``prot`` is any of ``"r"``, ``"w"``, ``"x"`` combined, or ``""`` for PROT_NONE.
        Mappings of 2 MiB or more are 2 MiB-aligned so large pages can be used.
        """
        length = _addr("length", length)
        if length == 0:
            raise InvalidArgumentError("mmap length is zero")
        if not isinstance(prot, str):
            raise TypeError(f"prot must be a str, not {type(prot).__name__}")
        if set(prot) - set("rwx"):
            raise InvalidArgumentError(f"prot must combine 'r', 'w', 'x', not {prot!r}")
        length = (length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
        if length >= 1 << 64:
            raise InvalidArgumentError("mmap length wraps when rounded up to pages")
        vmf = _addr("flags", flags)   # unknown bits are refused by the core
        for ch, bit in (("r", VmFlags.VM_READ), ("w", VmFlags.VM_WRITE), ("x", VmFlags.VM_EXEC)):
            if ch in prot:
                vmf |= bit
        if shared:
            vmf |= VmFlags.VM_SHARED
        # vm_get_page_prot: private writable mappings start read-only (COW).
        pp = PgProt.make(self.machine.isa, read=bool(prot), write="w" in prot and shared,
                         exec="x" in prot, user=not self.kernel)
        if align is None:
            align = 1 << 21 if length >= 1 << 21 else PAGE_SIZE
        out = ffi.new("int64_t *")
        call(lib.dmamap_mmap, self._ptr(), _addr("addr", addr), length, vmf, pp, _addr("align", align), out)
        info = ffi.new("struct dmamap_vma_info *")
        call(lib.dmamap_vma_info, self._as, out[0], info)
        vma = Vma(self, int(out[0]), int(info.start), int(info.end))
        with self._lock:
            if self._closed:   # closed by another thread meanwhile: the core forgot the VMA
                raise MachineClosedError("address space is closed")
            self._vmas[vma.id] = vma
        return vma

    def _own(self, vma: Vma) -> Vma:
        _check_vma(vma)
        if vma.mm is not self:
            raise VmaNotMappedError(f"{vma!r} belongs to another address space", vma.start)
        return vma

    def munmap(self, vma: Vma, *, flush_tlb: bool = True) -> None:
        """Unmap the VMA: clear its PTEs (freeing empty tables) and flush the TLB.

        ``flush_tlb=False`` leaves the TLB to the caller (a port that batches
        shootdowns must call :meth:`flush_tlb` before anyone relies on the unmap).
        """
        self._own(vma)
        if flush_tlb:
            call(lib.dmamap_munmap, self._ptr(), vma.id)
        else:
            call(lib.dmamap_munmap_flags, self._ptr(), vma.id, 1)
        with self._lock:
            self._vmas.pop(vma.id, None)
        vma._unmapped()

    def find_vma(self, va: int) -> Vma | None:
        vid = lib.dmamap_vma_find(self._ptr(), _addr("va", va))
        return self._vmas.get(vid)

    def translate(self, va: int) -> Translation | None:
        """Walk the page tables for ``va``: a Translation, or None if not present."""
        x = ffi.new("struct dmamap_xlate *")
        if not call(lib.dmamap_translate, self._ptr(), _addr("va", va), x):
            return None
        names = cache_names(self.machine.isa)
        return Translation(va=va, pa=int(x.pa), page_size=int(x.page_size), cache=names[x.cache],
                           cacheable=bool(x.cacheable), writable=bool(x.writable), user=bool(x.user),
                           executable=bool(x.executable), special=bool(x.special), device=bool(x.device),
                           entry=int(x.entry), entry_pa=int(x.entry_pa), region=_REGION_NAMES.get(x.region))

    def _check_span(self, va: int, n: int) -> None:
        """A large access must lie in VMAs end to end: refuse it (SIGSEGV at the
        first gap) before allocating a host buffer or faulting anything."""
        end = va + n
        if end > 1 << 64:
            raise SegmentationFault(f"access {va:#x}+{n:#x} wraps the address space (SIGSEGV)", va)
        if n <= _SMALL_ACCESS:
            return
        p = self._ptr()
        info = ffi.new("struct dmamap_vma_info *")
        cur = va
        while cur < end:
            vid = lib.dmamap_vma_find(p, cur)
            if vid < 0 or lib.dmamap_vma_info(p, vid, info, ffi.NULL) != 0:
                self._ptr()   # closed meanwhile (by another thread): say so
                raise SegmentationFault(f"access to {cur:#x}, which no VMA maps (SIGSEGV)", cur)
            cur = int(info.end)

    def read(self, va: int, n: int) -> bytes:
        """Read ``n`` bytes as the CPU would (through TLB, faults, cache)."""
        n, va = _addr("n", n), _addr("va", va)
        if not n:
            return b""
        self._check_span(va, n)
        if n > _SCRATCH_MAX:
            buf = out_buffer(n)
            call(lib.dmamap_access, self._ptr(), va, ffi.from_buffer(buf), n, 0)
            return bytes(buf)
        # Fill a reused per-thread buffer and copy it out once: a fresh zeroed
        # buffer plus a copy would cost two rounds of host page faults per call.
        scratch = getattr(_local, "scratch", None)
        if scratch is None or len(scratch) < n:
            scratch = ffi.new("uint8_t[]", max(n, 1 << 16))
        _local.scratch = None   # a callback reading memory re-entrantly gets its own
        try:
            call(lib.dmamap_access, self._ptr(), va, scratch, n, 0)
            return ffi.buffer(scratch, n)[:]
        finally:
            _local.scratch = scratch

    def write(self, va: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` as the CPU would."""
        cdata, n = in_buffer("data", data)
        va = _addr("va", va)
        if n:
            self._check_span(va, n)
            call(lib.dmamap_access, self._ptr(), va, cdata, n, 1)

    # One-register accesses are the hot path of a register-poking driver: no
    # allocation per call (a per-thread value slot), no generic call() wrapper,
    # and the full argument checks only for what is not a plain in-range int.
    def _read_n(self, va: int, size: int) -> int:
        p = self._as
        if p is None or self.machine._state.closed:
            p = self._ptr()   # raises MachineClosedError
        if type(va) is not int or not 0 <= va < _U64_LIMIT:
            va = _addr("va", va)
        try:
            v, err = _local.rw
        except AttributeError:
            v, err = _local.rw = (ffi.new("uint64_t *"), _local.err)
        rc = lib.dmamap_read_n(p, va, size, v, err)
        if rc < 0 or _local.pending is not None:
            raise_for(rc if rc < 0 else -14, err)
        return v[0]

    def _write_n(self, va: int, size: int, value: int) -> None:
        if type(value) is not int or not 0 <= value < 1 << (8 * size):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"value must be an int, not {type(value).__name__}")
            if not 0 <= value < 1 << (8 * size):
                raise InvalidArgumentError(f"value {value:#x} does not fit in {size} bytes", va)
        p = self._as
        if p is None or self.machine._state.closed:
            p = self._ptr()
        if type(va) is not int or not 0 <= va < _U64_LIMIT:
            va = _addr("va", va)
        err = _local.err
        rc = lib.dmamap_write_n(p, va, size, value, err)
        if rc < 0 or _local.pending is not None:
            raise_for(rc if rc < 0 else -14, err)

    def read8(self, va: int) -> int:
        return self._read_n(va, 1)

    def read16(self, va: int) -> int:
        return self._read_n(va, 2)

    def read32(self, va: int) -> int:
        return self._read_n(va, 4)

    def read64(self, va: int) -> int:
        return self._read_n(va, 8)

    def write8(self, va: int, value: int) -> None:
        self._write_n(va, 1, value)

    def write16(self, va: int, value: int) -> None:
        self._write_n(va, 2, value)

    def write32(self, va: int, value: int) -> None:
        self._write_n(va, 4, value)

    def write64(self, va: int, value: int) -> None:
        self._write_n(va, 8, value)

    def touch(self, va: int, count: int = 1, stride: int = PAGE_SIZE, *, write: bool = False) -> None:
        """Touch ``count`` addresses ``stride`` apart in one C call (faulting as needed)."""
        call(lib.dmamap_touch, self._ptr(), _addr("va", va), _addr("count", count), _addr("stride", stride),
             int(write))

    def touch_list(self, addresses: Iterable[int], *, write: bool = False) -> None:
        """Touch each address of a list in order, in one C call.

        A buffer of unsigned 64-bit integers (``array.array("Q")``, a numpy
        ``uint64`` array) is passed to C as it is, without a Python-level loop.
        """
        arr = _u64_buffer(addresses)
        if arr is None:
            lst = [_addr("address", a) for a in addresses]
            arr = ffi.new("uint64_t[]", lst)
        call(lib.dmamap_touch_list, self._ptr(), arr, len(arr), int(write))

    def count_present(self, va: int, size: int) -> int:
        """How many 4 KiB pages of [va, va+size) have a present translation."""
        out = ffi.new("uint64_t *")
        call(lib.dmamap_count_present, self._ptr(), _addr("va", va), _addr("size", size), out)
        return int(out[0])

    def flush_tlb(self) -> None:
        lib.dmamap_tlb_flush_all(self._ptr())

    # ---- fault callback ----
    def _fault(self, vid: int, va: int, write: bool, pfn_out: Any) -> int:
        from dmamap.machine import Page

        vma = self._vmas.get(vid)   # one dict read: atomic
        if vma is None or vma.fault_handler is None:
            return -5
        res = vma.fault_handler(VmFault(vma, va, (va - vma.start) >> PAGE_SHIFT, write))
        if isinstance(res, Page):
            if res.machine is not self.machine:
                raise InvalidArgumentError("fault handler returned a page of another machine", va)
            pfn_out[0] = res.pfn
            return 0
        if res is None or res == VM_FAULT_NOPAGE:
            return 1
        if res == VM_FAULT_SIGBUS:
            return 2
        raise InvalidArgumentError(f"fault handler returned {res!r}; expected a Page, VM_FAULT_NOPAGE or "
                                   f"VM_FAULT_SIGBUS", va)

    def __enter__(self) -> AddressSpace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._closed:
            return "<AddressSpace closed>"
        return f"<AddressSpace {'kernel' if self.kernel else 'user'} root={self.root:#x} vmas={len(self._vmas)}>"


@ffi.def_extern()
def _dmamap_fault_cb(ctx: Any, vid: int, va: int, is_write: int, pfn_out: Any) -> int:
    try:
        mm: AddressSpace = ffi.from_handle(ctx)
        return mm._fault(vid, va, bool(is_write), pfn_out)
    except BaseException as exc:  # noqa: BLE001 - re-raised when the C call returns
        stash(exc)
        return -14


# ---- kernel-named primitives ----

def _isa(vma: Vma) -> str:
    return vma.mm.machine.isa


def remap_pfn_range(vma: Vma, addr: int, pfn: int, size: int, prot: int, *, large: bool = False,
                    track: bool = True) -> None:
    """Prefault ``size`` bytes at ``addr`` with PFNs from ``pfn`` (special PTEs).

    Only empty PTEs may be filled; on failure the partial remap is rolled back.
    Marks the VMA VM_IO | VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP.  ``large``
    uses 2 MiB / 1 GiB entries where alignment allows; ``track=False`` skips
    memtype tracking (only the kernel's own direct map uses it).
    """
    _check_vma(vma)
    size = _addr("size", size)
    size = (size + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    if size >= 1 << 64:
        raise InvalidArgumentError("remap_pfn_range: size wraps when rounded up to pages", vma.start)
    flags = (1 if large else 0) | (0 if track else 2)
    call(lib.dmamap_remap_pfn_range, vma.mm._ptr(), vma.id, _addr("addr", addr), _addr("pfn", pfn), size,
         _prot(prot, _isa(vma)), flags)


def remap_pfn_chunks(vma: Vma, addr: int, chunks: Iterable[tuple[int, int]], first_page: int, nr_pages: int,
                     prot: int, *, large: bool = False) -> None:
    """remap_pfn_range of pages [first_page, first_page+nr_pages) of a (pfn, npages)
    chunk list, laid out linearly from ``addr``, in one C call; all or nothing."""
    _check_vma(vma)
    cl = [(_addr("chunk pfn", p), _addr("chunk pages", n)) for p, n in chunks]
    if not cl:
        raise InvalidArgumentError("remap_pfn_chunks: empty chunk list", addr)
    arr = ffi.new("struct dmamap_chunk[]", cl)
    call(lib.dmamap_remap_pfn_chunks, vma.mm._ptr(), vma.id, _addr("addr", addr), arr, len(cl),
         _addr("first_page", first_page), _addr("nr_pages", nr_pages), _prot(prot, _isa(vma)), 1 if large else 0)


def vmf_insert_pfn_prot(vma: Vma, addr: int, pfn: int, prot: int) -> int:
    """Insert one PFN with an explicit protection; returns VM_FAULT_NOPAGE."""
    _check_vma(vma)
    call(lib.dmamap_vmf_insert_pfn_prot, vma.mm._ptr(), vma.id, _addr("addr", addr), _addr("pfn", pfn),
         _prot(prot, _isa(vma)))
    return VM_FAULT_NOPAGE


def vmf_insert_pfn(vma: Vma, addr: int, pfn: int) -> int:
    """Insert one PFN into a VM_PFNMAP / VM_MIXEDMAP VMA with its vm_page_prot."""
    _check_vma(vma)
    return vmf_insert_pfn_prot(vma, addr, pfn, vma.page_prot)


def vmf_insert_mixed(vma: Vma, addr: int, pfn: int) -> int:
    """Insert a PFN into a VM_MIXEDMAP VMA: as a page if it is RAM, special otherwise."""
    _check_vma(vma)
    call(lib.dmamap_vmf_insert_mixed, vma.mm._ptr(), vma.id, _addr("addr", addr), _addr("pfn", pfn))
    return VM_FAULT_NOPAGE


def vm_insert_page(vma: Vma, addr: int, page: Page) -> None:
    """Insert a RAM page (takes a reference); marks the VMA VM_MIXEDMAP."""
    from dmamap.machine import Page

    _check_vma(vma)
    if not isinstance(page, Page):
        raise TypeError(f"vm_insert_page takes a Page, not {type(page).__name__}")
    if page.machine is not vma.machine:
        raise InvalidArgumentError("page belongs to another machine", addr)
    call(lib.dmamap_vm_insert_page, vma.mm._ptr(), vma.id, _addr("addr", addr), page.pfn)


def zap_vma_ptes(vma: Vma, addr: int, size: int) -> None:
    """Clear the PTEs of [addr, addr+size) of a VM_PFNMAP VMA and flush the TLB."""
    _check_vma(vma)
    call(lib.dmamap_zap_vma_ptes, vma.mm._ptr(), vma.id, _addr("addr", addr), _addr("size", size))


def change_protection(vma: Vma, addr: int, size: int, prot: int) -> None:
    """Rewrite the attributes of present PTEs in [addr, addr+size) and flush the TLB."""
    _check_vma(vma)
    call(lib.dmamap_mprotect, vma.mm._ptr(), vma.id, _addr("addr", addr), _addr("size", size),
         _prot(prot, _isa(vma)))

