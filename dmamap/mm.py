"""Address spaces, VMAs and the kernel's PTE primitives.

Names and argument order follow Linux (mm/memory.c, include/linux/mm.h), so a
driver writer recognises ``remap_pfn_range(vma, addr, pfn, size, prot)``.
"""

from __future__ import annotations

import contextlib
import enum
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, Union

from dmamap._binding import Err, FaultKind, FaultResult, Region, RemapFlag, VmFlag, in_buffer, new_handle, u64_array
from dmamap._binding import mm as cmm
from dmamap._binding import vmops as cvm
from dmamap._check import PAGE_SHIFT, PAGE_SIZE, hex_repr, page_align, u64
from dmamap.errors import (
    AddressRangeError,
    DmamapError,
    InvalidArgumentError,
    MachineClosedError,
    MmapError,
    SegmentationFault,
    VmaNotMappedError,
    ZeroCopyError,
)
from dmamap.pgprot import (
    PgProt,
    cache_names,
    check_prot,
    pgprot_cached,
    pgprot_dmacoherent,
    pgprot_noncached,
    pgprot_writecombine,
)
from dmamap.physmem import Page, PhysicalMemory
from dmamap.vm_ops import PMD_ORDER, VM_FAULT_FALLBACK, VmOperations, fault_around_pages, fault_around_window

if TYPE_CHECKING:
    from dmamap.machine import Machine

#: mmap's prot letters as plain vm_flags bits (IntFlag arithmetic costs a microsecond a go).
_PROT_FLAGS = (("r", int(VmFlag.VM_READ)), ("w", int(VmFlag.VM_WRITE)), ("x", int(VmFlag.VM_EXEC)))
_VM_SHARED = int(VmFlag.VM_SHARED)
_FAULT_FLAG_WRITE = 1     # DMAMAP_FAULT_FLAG_WRITE
_FAULT_FLAG_MKWRITE = 2   # DMAMAP_FAULT_FLAG_MKWRITE: the call is page_mkwrite
_PMD_SIZE = PAGE_SIZE << PMD_ORDER
#: Accesses up to this size go straight to the core; larger ones are checked first.
_SMALL_ACCESS = 1 << 16
_U64_LIMIT = 1 << 64
# The register fast path's cffi functions, looked up once.
_READ, _WRITE = cmm.READ_FAST, cmm.WRITE_FAST
_ALL_ONES = cmm.ALL_ONES


def _check_va(va: object) -> int:
    return u64("va", va)   # type: ignore[arg-type]


def _bytes_of(buf: Any, name: str, *, writable: bool) -> memoryview:
    """A flat byte view of any buffer (numpy arrays included), without a copy;
    a non-contiguous one is copied for reading and refused for writing into."""
    try:
        mv = memoryview(buf)
    except TypeError:
        raise TypeError(f"{name} must support the buffer protocol (bytes, bytearray, memoryview, array, numpy), "
                        f"not {type(buf).__name__}") from None
    try:
        contiguous = mv.c_contiguous
    except ValueError:   # released
        raise TypeError(f"{name} is a released memoryview") from None
    if writable and mv.readonly:
        raise TypeError(f"{name} is read-only")
    if not contiguous:
        if writable:
            raise TypeError(f"{name} is not C-contiguous: read into a contiguous buffer")
        return memoryview(mv.tobytes())
    return mv if mv.format == "B" and mv.ndim == 1 else mv.cast("B")

__all__ = [
    "PAGE_SHIFT", "PAGE_SIZE", "VmFlags", "PgProt", "Translation", "Vma", "VmFault", "AddressSpace",
    "AsStats", "VM_FAULT_NOPAGE", "VM_FAULT_SIGBUS", "remap_pfn_range", "vmf_insert_pfn",
    "vmf_insert_pfn_prot", "remap_pfn_chunks", "vmf_insert_mixed", "vm_insert_page", "zap_vma_ptes",
    "vmf_insert_pfn_pmd", "VM_FAULT_FALLBACK", "PMD_ORDER",
    "change_protection", "pgprot_noncached", "pgprot_writecombine", "pgprot_dmacoherent", "pgprot_cached",
]


#: Linux vm_flags, same names and values (the core's constants).
VmFlags = VmFlag


class _FaultResult(enum.IntEnum):
    VM_FAULT_NOPAGE = FaultResult.NOPAGE
    VM_FAULT_SIGBUS = FaultResult.SIGBUS


VM_FAULT_NOPAGE = _FaultResult.VM_FAULT_NOPAGE
VM_FAULT_SIGBUS = _FaultResult.VM_FAULT_SIGBUS

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
    faults_page: int = 0
    faults_pfn: int = 0
    faults_huge: int = 0
    faults_python: int = 0
    around_ptes: int = 0
    page_walks: int = 0


@dataclass(frozen=True)
class VmFault:
    """What a Python fault handler is told (struct vm_fault); ``pgoff`` is the
    page's offset in the mapped object, ``vma.vm_pgoff`` included (linear_page_index)."""

    vma: Vma
    address: int
    pgoff: int
    write: bool

    __repr__ = hex_repr("address")


FaultHandler = Callable[[VmFault], Union["Page", int, None]]


class _MapGroup:
    """The pieces one mmap became by splits, and what runs when the last goes."""

    def __init__(self, first: Vma) -> None:
        self.pieces: set[Vma] = {first}
        self.callbacks: list[Callable[[], None]] = []
        self.lock = threading.Lock()

    @property
    def live(self) -> bool:
        return any(p.live for p in list(self.pieces))

    def add_piece(self, vma: Vma) -> None:
        with self.lock:
            self.pieces.add(vma)
        vma._group = self

    def add_callback(self, cb: Callable[[], None]) -> None:
        with self.lock:
            if self.pieces:
                self.callbacks.append(cb)
                return
        cb()

    def piece_gone(self, vma: Vma) -> None:
        with self.lock:
            self.pieces.discard(vma)
            cbs: list[Callable[[], None]] = []
            if not self.pieces:
                cbs, self.callbacks = self.callbacks, []
        for cb in cbs:
            cb()


class Vma:
    """One mapping of an address space (struct vm_area_struct)."""

    def __init__(self, mm: AddressSpace, vid: int, start: int, end: int) -> None:
        self.mm = mm
        self.id = vid
        self.start = start
        self.end = end
        self.fault_handler: FaultHandler | None = None
        self.private_data: Any = None
        self.vm_file: Any = None   # the DeviceFile mmapped, if any (vma->vm_file)
        self._vm_ops: VmOperations | None = None
        self._dma_mapping: Any = None   # (device, buffer records) of a helper's coherent mapping
        self._gone = False
        self._group = _MapGroup(self)

    def _add_unmap_callback(self, cb: Callable[[], None]) -> None:
        """Run ``cb`` once when this mapping goes (munmap of its last piece, or its
        address space closing), or at once if it has gone already."""
        self._group.add_callback(cb)

    def _unmapped(self) -> None:
        """This piece is gone: vm_ops.close, then the mapping's unmap callbacks
        when its last piece goes."""
        self._gone = True
        ops = self._vm_ops
        try:
            if ops is not None and ops.close is not None:
                ops.close(self)
        finally:
            self._group.piece_gone(self)

    @property
    def vm_ops(self) -> VmOperations | None:
        """The VMA's :class:`VmOperations` (vma->vm_ops); setting it installs its
        fault handler, if it has one."""
        return self._vm_ops

    @vm_ops.setter
    def vm_ops(self, ops: VmOperations | None) -> None:
        if ops is not None and not isinstance(ops, VmOperations):
            raise TypeError(f"vm_ops must be a VmOperations, not {type(ops).__name__}")
        if ops is not None and ops.fault is not None:
            self.set_fault_handler(ops.fault)
        wants = ops is not None and ops.page_mkwrite is not None
        old = self._vm_ops
        if wants != (old is not None and old.page_mkwrite is not None):
            # vma_wants_writenotify: with page_mkwrite, PTEs start read-only
            cvm.vma_set_wrnotify(self.mm._ptr(), self.id, wants)
        self._vm_ops = ops

    @property
    def mapping_live(self) -> bool:
        """Whether any piece of the mapping this VMA came from (by splits) is still mapped."""
        return self._group.live

    def _info(self) -> cmm.VmaInfo:
        try:
            return cmm.vma_info(self.mm._ptr(), self.id)
        except VmaNotMappedError:   # the core forgot the range: name it here
            raise VmaNotMappedError(f"VMA [{self.start:#x}, {self.end:#x}) is not mapped (already unmapped)",
                                    self.start) from None

    @property
    def machine(self) -> Machine:
        return self.mm.machine

    @property
    def live(self) -> bool:
        return cmm.vma_live(self.mm._as, self.id)

    @property
    def vm_flags(self) -> VmFlags:
        return VmFlags(self._info().flags)

    flags = vm_flags

    @property
    def vm_page_prot(self) -> PgProt:
        """The protection new PTEs of this VMA get (vma->vm_page_prot)."""
        return PgProt(self._info().prot, self.mm.machine.isa)

    @vm_page_prot.setter
    def vm_page_prot(self, prot: int) -> None:
        cmm.vma_set_prot(self.mm._ptr(), self.id, check_prot(prot, self.mm.machine.isa))

    page_prot = vm_page_prot

    @property
    def vm_pgoff(self) -> int:
        """The mapping's offset in the mapped object, in pages (mmap's offset >> PAGE_SHIFT)."""
        return self._info().pgoff

    @vm_pgoff.setter
    def vm_pgoff(self, pgoff: int) -> None:
        cmm.vma_set_pgoff(self.mm._ptr(), self.id, u64("vm_pgoff", pgoff))

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
        cmm.vma_set_flags(self.mm._ptr(), self.id, u64("flags", flags), 0)

    def vm_flags_clear(self, flags: int) -> None:
        cmm.vma_set_flags(self.mm._ptr(), self.id, 0, u64("flags", flags))

    def set_fault_handler(self, handler: FaultHandler | None) -> None:
        """Install a Python fault handler (vm_ops->fault); None removes it.

        The handler gets a :class:`VmFault` and returns a :class:`Page` (RAM
        only), or inserts PTEs itself and returns ``VM_FAULT_NOPAGE``, or
        returns ``VM_FAULT_SIGBUS``.
        """
        if handler is not None and not callable(handler):
            raise TypeError("fault handler must be callable")
        self.fault_handler = handler
        cmm.vma_set_fault(self.mm._ptr(), self.id, FaultKind.PYTHON if handler is not None else FaultKind.NONE)

    def set_builtin_fault(self, kind: str, chunks: Iterable[tuple[int, int]], *, first_page: int = 0,
                          fault_around: int = 1, large: bool = False) -> None:
        """Install a C fault handler: ``"page"`` hands out page descriptors of the
        (pfn, npages) chunks, ``"pfn"`` inserts their PFNs; ``first_page`` is the
        chunk-list page mapped at ``vma.start``."""
        kinds = {"page": FaultKind.PAGE, "pfn": FaultKind.PFN}
        if kind not in kinds:
            raise InvalidArgumentError(f"built-in fault kind must be 'page' or 'pfn', not {kind!r}")
        cl = []
        for c in chunks:
            if not isinstance(c, (tuple, list)) or len(c) != 2:
                raise TypeError(f"chunks must be (pfn, npages) pairs, not {c!r}")
            cl.append((u64("chunk pfn", c[0]), u64("chunk npages", c[1])))
        for i, (p, n) in enumerate(cl):
            if n == 0:
                raise InvalidArgumentError(f"chunk {i} (pfn {p}, {n} pages) is invalid")
        if not cl:
            raise InvalidArgumentError("a built-in fault handler needs at least one chunk")
        cmm.vma_set_fault(self.mm._ptr(), self.id, kinds[kind], cl, u64("first_page", first_page),
                          u64("fault_around", fault_around), bool(large))

    def set_pio_trap(self, port: int, count: int | None = None) -> None:
        """Make accesses at ``start + i`` trap into port ``port + i``, for ``i < count``
        (default: the whole VMA, clipped to the port space)."""
        port = u64("port", port)
        if count is None:
            count = min(len(self), max(0x10000 - port, 1))
        cmm.vma_set_pio(self.mm._ptr(), self.id, port, u64("count", count))

    def __repr__(self) -> str:
        state = "" if self.live else ", unmapped"
        return f"<Vma [{self.start:#x}, {self.end:#x}){state}>"


def _check_vma(vma: Vma) -> Vma:
    if not isinstance(vma, Vma):
        raise TypeError(f"expected a Vma, got {type(vma).__name__}")
    return vma


class AddressSpace(cmm.CpuAccess):
    """One set of page tables (an mm_struct) with its VMAs and software TLB.

    Its register accesses (read8 .. read64, write8 .. write64) are methods of
    the C base class: one register poke costs about what ``struct.unpack_from``
    on a plain mmap costs."""

    def __init__(self, machine: PhysicalMemory, *, kernel: bool = False) -> None:
        if not isinstance(machine, PhysicalMemory):
            raise TypeError(f"expected a Machine, got {type(machine).__name__}")
        self.machine: Machine = machine   # type: ignore[assignment]
        self.kernel = kernel
        ptr = cmm.as_new(machine._ptr(), kernel)
        # The C state lives as long as this object (never None), so a call racing
        # a close meets a closed address space, never freed memory.
        self._as: Any = ptr
        self._closed = False
        self._lock = threading.Lock()   # guards _vmas and _closed
        self._vmas: dict[int, Vma] = {}
        self._handle = new_handle(self)
        cmm.as_set_fault_handle(ptr, self._handle)
        cmm.bind_cpu(self, ptr)
        try:
            machine._add_space(self, ptr)   # also frees ptr when this object is garbage
        except BaseException:
            cmm.as_free(ptr)
            raise

    def _ptr(self) -> Any:
        if self._closed:
            raise MachineClosedError("address space is closed")
        self.machine._ptr()
        return self._as

    def _check_open(self) -> None:
        """Raise MachineClosedError if this space or its machine is closed, even
        while a close on another thread is still running (the core knows first)."""
        self._ptr()
        if cmm.as_closed(self._as):
            raise MachineClosedError("address space is closed")

    def close(self) -> None:
        """Tear down every mapping and free the page tables; later calls raise
        MachineClosedError.  Idempotent and thread-safe; a call on another
        thread finishes first or gets MachineClosedError, and a fault handler
        that closes its own address space ends its fault with it."""
        if not self.machine.closed:
            cmm.as_close(self._as)   # idempotent; waits for calls inside the core to finish
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
        """The root table as the MMU takes it: the CR3 (x86-64), TTBR0 (AArch64) or satp (RISC-V) value."""
        return cmm.as_root(self._ptr())

    @property
    def stats(self) -> AsStats:
        return AsStats(**cmm.as_stats(self._ptr()))

    @property
    def vmas(self) -> list[Vma]:
        return sorted(self._vmas.values(), key=lambda v: v.start)

    def mmap(self, length: int, *, prot: str = "rw", shared: bool = True, flags: int = 0,
             addr: int = 0, align: int | None = None, offset: int = 0) -> Vma:
        """Create a VMA of ``length`` bytes (rounded up to pages) with no PTEs yet.

        ``offset`` (bytes, page-aligned, as mmap(2)'s) becomes ``vma.vm_pgoff``
        in pages, for the driver that maps the object.

        ``prot`` is any of ``"r"``, ``"w"``, ``"x"`` combined, or ``""`` for PROT_NONE.
        Mappings of 2 MiB or more are 2 MiB-aligned so large pages can be used.
        """
        length = u64("length", length)
        if length == 0:
            raise InvalidArgumentError("mmap length is zero")
        if not isinstance(prot, str):
            raise TypeError(f"prot must be a str, not {type(prot).__name__}")
        if set(prot) - set("rwx"):
            raise InvalidArgumentError(f"prot must combine 'r', 'w', 'x', not {prot!r}")
        length = page_align("mmap", length)
        offset = u64("offset", offset)
        if offset % PAGE_SIZE:
            raise InvalidArgumentError(f"mmap offset {offset:#x} is not page-aligned (EINVAL)", offset)
        if (offset >> PAGE_SHIFT) + (length >> PAGE_SHIFT) > (1 << 64) >> PAGE_SHIFT:
            raise InvalidArgumentError(f"mmap offset {offset:#x} + length {length:#x} overflows (EOVERFLOW)", offset)
        vmf = u64("flags", flags)   # unknown bits are refused by the core
        for ch, bit in _PROT_FLAGS:
            if ch in prot:
                vmf |= bit
        if shared:
            vmf |= _VM_SHARED
        # vm_get_page_prot: private writable mappings start read-only (COW).
        pp = PgProt.make(self.machine.isa, read=bool(prot), write="w" in prot and shared,
                         exec="x" in prot, user=not self.kernel)
        if align is None:
            align = 1 << 21 if length >= 1 << 21 else PAGE_SIZE
        vid, start, end = cmm.mmap(self._ptr(), u64("addr", addr), length, vmf, pp, u64("align", align))
        vma = Vma(self, vid, start, end)
        if offset:
            try:
                vma.vm_pgoff = offset >> PAGE_SHIFT
            except BaseException:
                with contextlib.suppress(DmamapError):   # the space may have closed meanwhile
                    cmm.munmap(self._ptr(), vid, flush_tlb=True)
                raise
        with self._lock:
            if self._closed:   # closed by another thread meanwhile: the core forgot the VMA
                raise MachineClosedError("address space is closed")
            self._vmas[vma.id] = vma
        return self._merge_around(vma)

    def _merge(self, a: Vma, b: Vma) -> bool:
        """mm/vma.c vma_merge of b, directly after a, into a when they are one
        object mapped alike: the same vm_file, vm_ops (none with ``close``), fault
        handler and private data here; flags, protection, vm_pgoff and chunk
        contiguity in the core.  b is then gone (its ``close`` is never called:
        the kernel merges no VMA that has one).  The kernel address space's VMAs
        (ioremap, vmalloc and allocator aliases, each with its own bookkeeping)
        never merge."""
        ops = a._vm_ops
        if self.kernel or a.end != b.start or a.vm_file is not b.vm_file or ops is not b._vm_ops or \
                (ops is not None and ops.close is not None) or a.fault_handler is not b.fault_handler or \
                a.private_data is not b.private_data or a._dma_mapping is not b._dma_mapping:
            return False
        try:
            cvm.vma_merge(self._ptr(), a.id, b.id)
        except (InvalidArgumentError, VmaNotMappedError):   # not mergeable, or unmapped meanwhile
            return False
        a.end = b.end
        with self._lock:
            self._vmas.pop(b.id, None)
        b._gone = True
        ga, gb = a._group, b._group
        if gb is not ga:   # one mapping now: b's pieces and unmap callbacks join a's
            with gb.lock:
                pieces, cbs = gb.pieces - {b}, gb.callbacks
                gb.pieces, gb.callbacks = set(), []
            for p in pieces:
                ga.add_piece(p)
            for cb in cbs:
                ga.add_callback(cb)
        with ga.lock:
            ga.pieces.discard(b)
        return True

    def _merge_around(self, vma: Vma) -> Vma:
        """Merge ``vma`` with the VMAs right before and after it where they may
        (mmap next to a compatible VMA, mprotect back to a neighbour's flags);
        returns the VMA that now holds its range."""
        with self._lock:
            prev = next((v for v in self._vmas.values() if v.end == vma.start), None)
            nxt = next((v for v in self._vmas.values() if v.start == vma.end), None)
        if prev is not None and self._merge(prev, vma):
            vma = prev
        if nxt is not None:
            self._merge(vma, nxt)
        return vma

    def _own(self, vma: Vma) -> Vma:
        _check_vma(vma)
        if vma.mm is not self:
            raise VmaNotMappedError(f"{vma!r} belongs to another address space", vma.start)
        return vma

    def split_vma(self, vma: Vma, addr: int) -> Vma:
        """Split ``vma`` at page boundary ``addr`` (mm/mmap.c __split_vma): ``vma``
        keeps [start, addr), the returned VMA gets [addr, end) with the same
        flags, protection, fault handler, ``vm_pgoff`` moved on and the memtype
        reservations; both stay one mapping for its unmap callbacks."""
        self._own(vma)
        addr = u64("addr", addr)
        ops = vma.vm_ops
        if ops is not None and ops.may_split is not None and vma.start < addr < vma.end:
            ops.may_split(vma, addr)   # raises to refuse
        nid = cmm.vma_split(self._ptr(), vma.id, addr)
        new = Vma(self, nid, addr, vma.end)
        new.fault_handler, new.private_data, new.vm_file = vma.fault_handler, vma.private_data, vma.vm_file
        new._vm_ops, new._dma_mapping = ops, vma._dma_mapping
        vma._group.add_piece(new)
        vma.end = addr
        with self._lock:
            self._vmas[nid] = new
        if ops is not None and ops.open is not None:
            ops.open(new)
        return new

    def munmap(self, vma: Vma, addr: int | None = None, length: int | None = None, *,
               flush_tlb: bool = True) -> None:
        """Unmap the VMA, or [addr, addr+length) of it (splitting it as munmap(2)
        does): clear the PTEs (freeing empty tables) and flush the TLB.

        ``flush_tlb=False`` leaves the TLB to the caller (a port that batches
        shootdowns must call :meth:`flush_tlb` before anyone relies on the unmap).
        """
        self._own(vma)
        if addr is not None or length is not None:
            vma = self._split_range(vma, addr, length, "munmap")
        cmm.munmap(self._ptr(), vma.id, flush_tlb=flush_tlb)
        with self._lock:
            self._vmas.pop(vma.id, None)
        vma._unmapped()

    def _split_range(self, vma: Vma, addr: int | None, length: int | None, what: str) -> Vma:
        """The piece of ``vma`` that is exactly [addr, addr+length), splitting as
        needed; may_split is asked for both edges before anything changes."""
        start = vma.start if addr is None else u64("addr", addr)
        length = vma.end - start if length is None else u64("length", length)
        if start % PAGE_SIZE or length == 0:
            raise InvalidArgumentError(f"{what}: {start:#x} is not page-aligned or length is zero", start)
        end = start + page_align(what, length)
        if start < vma.start or end > vma.end:
            raise AddressRangeError(f"{what}: [{start:#x}, {end:#x}) is not inside {vma!r}", start)
        ops = vma.vm_ops
        if ops is not None and ops.may_split is not None:   # a refused split changes nothing
            for edge in (start, end):
                if vma.start < edge < vma.end:
                    ops.may_split(vma, edge)
        if start > vma.start:
            vma = self.split_vma(vma, start)
        if end < vma.end:
            self.split_vma(vma, end)
        return vma

    def mprotect(self, vma: Vma, addr: int | None = None, length: int | None = None, prot: str = "r") -> Vma:
        """mprotect(2) of [addr, addr+length) of ``vma`` (default: all of it):
        split off that piece, give it the new vm_flags and vm_page_prot (its
        memory type kept) and rewrite its present PTEs; returns the piece."""
        self._own(vma)
        if not isinstance(prot, str):
            raise TypeError(f"prot must be a str, not {type(prot).__name__}")
        if set(prot) - set("rwx"):
            raise InvalidArgumentError(f"prot must combine 'r', 'w', 'x', not {prot!r}")
        piece = self._split_range(vma, addr, length, "mprotect")
        old = piece.vm_page_prot
        shared = piece.shared
        ops = piece.vm_ops
        notify = ops is not None and ops.page_mkwrite is not None   # vma_wants_writenotify: stays read-only
        new = PgProt.make(self.machine.isa, read=bool(prot), write="w" in prot and shared and not notify,
                          exec="x" in prot, user=not self.kernel, cache=old.cache)
        bits = VmFlags.VM_READ | VmFlags.VM_WRITE | VmFlags.VM_EXEC
        want = (VmFlags.VM_READ if "r" in prot else 0) | (VmFlags.VM_WRITE if "w" in prot else 0) | \
            (VmFlags.VM_EXEC if "x" in prot else 0)
        piece.vm_flags_clear(bits & ~want)
        piece.vm_flags_set(want)
        piece.vm_page_prot = new
        change_protection(piece, piece.start, len(piece), new)
        return self._merge_around(piece)

    def mremap(self, vma: Vma, new_len: int, *, may_move: bool = True) -> Vma:
        """mremap(2) of a whole VMA: shrinking unmaps its tail; growing extends it in
        place when the range after it is free, else (``may_move``, MREMAP_MAYMOVE)
        moves it with its PTEs.  A VM_DONTEXPAND / VM_PFNMAP VMA may not grow
        (MmapError, as vma_to_resize's -EFAULT).  Returns ``vma``, updated."""
        self._own(vma)
        new_len = page_align("mremap", u64("new_len", new_len))
        if new_len == 0:
            raise InvalidArgumentError("mremap: new length is zero", vma.start)
        if new_len < len(vma):
            self.munmap(vma, vma.start + new_len, len(vma) - new_len)
            return vma
        if new_len > len(vma) and vma.vm_flags & (VmFlags.VM_DONTEXPAND | VmFlags.VM_PFNMAP):
            raise MmapError(f"mremap: {vma!r} is VM_DONTEXPAND or VM_PFNMAP and may not grow (-EFAULT)",
                            vma.start)
        ops = vma.vm_ops
        if ops is not None and ops.mremap is not None:
            ops.mremap(vma)   # raises to refuse
        start = cmm.mremap(self._ptr(), vma.id, new_len, may_move)
        vma.start, vma.end = start, start + new_len
        return vma

    def fork(self) -> AddressSpace:
        """A copy of this address space as fork(2) makes it (dup_mmap): VM_DONTCOPY
        VMAs left out, VM_WIPEONFORK ones empty, PFN and mixed maps copied with
        their memtype reservations (track_pfn_copy), private RAM copy-on-write in
        both, shared page mappings left to fault in again; each copy gets its
        VMA's fault handler, private data and vm_ops, whose ``open`` is called."""
        if self.kernel:
            raise InvalidArgumentError("the kernel address space cannot be forked")
        child = AddressSpace(self.machine)
        with self._lock:
            parents = dict(self._vmas)
        try:
            pairs = cmm.fork(self._ptr(), child._ptr(), len(parents) + 1)
        except BaseException:
            child.close()
            raise
        opened = []
        for pid, cid in pairs:
            p = parents.get(pid)
            if p is None:   # made by another thread meanwhile: copied, but not yet ours to describe
                p = self._vmas[pid]
            c = Vma(child, cid, p.start, p.end)
            c.fault_handler, c.private_data, c.vm_file = p.fault_handler, p.private_data, p.vm_file
            c._vm_ops, c._dma_mapping = p._vm_ops, p._dma_mapping
            p._group.add_piece(c)   # what the mapping holds (an I/O window slot) lives while a copy does
            with child._lock:
                child._vmas[cid] = c
            opened.append(c)
        for c in opened:
            if c.vm_ops is not None and c.vm_ops.open is not None:
                c.vm_ops.open(c)
        return child

    def find_vma(self, va: int) -> Vma | None:
        vid = cmm.vma_find(self._ptr(), u64("va", va))
        return self._vmas.get(vid)

    def translate(self, va: int) -> Translation | None:
        """Walk the page tables for ``va``: a Translation, or None if not present."""
        x = cmm.translate(self._ptr(), u64("va", va))
        if x is None:
            return None
        names = cache_names(self.machine.isa)
        return Translation(va=va, pa=x.pa, page_size=x.page_size, cache=names[x.cache], cacheable=x.cacheable,
                           writable=x.writable, user=x.user, executable=x.executable, special=x.special,
                           device=x.device, entry=x.entry, entry_pa=x.entry_pa,
                           region=Region(x.region).label if x.region else None)

    def _check_span(self, va: int, n: int) -> None:
        """A large access must lie in VMAs end to end: refuse it (SIGSEGV at the
        first gap) before allocating a host buffer or faulting anything."""
        end = va + n
        if end > 1 << 64:
            raise SegmentationFault(f"access {va:#x}+{n:#x} wraps the address space (SIGSEGV)", va)
        if n <= _SMALL_ACCESS:
            return
        p = self._ptr()
        cur = va
        while cur < end:
            vid = cmm.vma_find(p, cur)
            try:
                cur = cmm.vma_info(p, vid).end if vid >= 0 else -1
            except VmaNotMappedError:
                cur = -1
            if cur < 0:
                self._check_open()   # closed meanwhile (by another thread): say so
                raise SegmentationFault(f"access to {cur:#x}, which no VMA maps (SIGSEGV)", cur)

    def read(self, va: int, n: int) -> bytes:
        """Read ``n`` bytes as the CPU would (through TLB, faults, cache): one C
        call copying straight into the bytes returned."""
        return self._bulk_read(va, n)

    def readinto(self, va: int, buf: Any) -> int:
        """Read ``len(buf)`` bytes (its size in bytes, whatever its item type)
        at ``va`` into ``buf`` -- a bytearray, a writable memoryview, a numpy
        array, any C-contiguous writable buffer -- as :meth:`read` reads them
        (faults, permissions, the cache model, device registers), in one C call
        with the GIL released and no copy in between; returns the byte count.

        A range with a gap is refused before anything is read; a fault in the
        middle (a SIGBUS from a fault handler, say) raises with the bytes before
        it already in ``buf``, as read(2) into a buffer would leave them."""
        return self._bulk_readinto(va, buf)

    def write(self, va: int, data: Any) -> None:
        """Write ``data`` (bytes, bytearray, memoryview, a numpy array: any
        buffer, its raw bytes) as the CPU would, read in place (a
        non-contiguous view is copied first)."""
        self._bulk_write(va, data)

    # read, readinto and write are C methods of CpuAccess (dmamap/_binding/_cpu.c)
    # for plain arguments; these take the rest, and raise what the C calls failed with.
    def _bulk_read_slow(self, va: int, n: int) -> bytes:
        n, va = u64("n", n), u64("va", va)
        if not n:
            return b""
        if n > cmm.MAX_HOST_BUFFER:
            self._check_span(va, n)   # SIGSEGV at a gap before OutOfMemoryError for the buffer
        return cmm.read(self._ptr(), va, n)   # (the core refuses a gap before reading anything)

    def _bulk_readinto_slow(self, va: int, buf: Any) -> int:
        mv = _bytes_of(buf, "buf", writable=True)
        va = u64("va", va)
        n = mv.nbytes
        if n:   # the core refuses a range with a gap before touching anything
            cmm.readinto(self._ptr(), va, cmm.from_buffer(mv), n)
        return n

    def _bulk_write_slow(self, va: int, data: Any) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            data = _bytes_of(data, "data", writable=False)
        cdata, n = in_buffer("data", data)
        va = u64("va", va)
        if n:   # the core refuses a range with a gap (or a wrap) before touching anything
            cmm.write(self._ptr(), va, cdata, n)

    def _bulk_raise(self, rc: int) -> NoReturn:
        try:
            self._ptr()   # a closed address space or machine says so, as before the call
        except DmamapError:
            with contextlib.suppress(Exception):
                cmm.fast_raise(rc)   # (the thread's error record and any stashed exception consumed)
            raise
        cmm.fast_raise(rc)

    def view(self, va: int, size: int, *, write: bool = True) -> memoryview:
        """A zero-copy memoryview of [va, va+size): the emulated RAM itself,
        where the memory model makes a plain load or store exactly what the CPU
        would do -- RAM mapped cacheable (x86 WB and the like) on a machine
        without the cache model (DMA-coherent, snooping platforms), physically
        contiguous, not owned by a device for streaming DMA.  Through the cache
        model (arm, riscv: non-coherent), uncached or write-combining mappings,
        Device memory, MMIO, ports and SRAM it raises :class:`ZeroCopyError`:
        use :meth:`readinto` / :meth:`write` (copy-in/copy-out) there.

        The range is resolved first as an access would (faults taken, a
        read-only or unmapped page refused; ``write=True`` resolves it as a
        write, breaking copy-on-write, and gives a writable view; ``write=False``
        a read-only one), then its pages are pinned as pin_user_pages
        (FOLL_PIN) pins them: they cannot be freed while the view lives
        (freeing them raises PteBusyError).  **munmap**: unmapping the VMA, or
        remapping other pages there, does not touch the view -- it keeps showing
        the pinned pages, as a GUP pin does; an anonymous page unmapped under it
        is freed when the view goes.  The pins are dropped when the view is
        released (``memoryview.release()``, a ``with`` block) or garbage,
        with every view derived from it (slices, numpy arrays).  After
        ``Machine.close()`` the view shows zeroed memory.

        Accesses through the view bypass the emulator: no TLB, no statistics,
        no DMA-API ownership checks after the one made here."""
        return self._pinned_view(va, size, write)[0]

    def _pinned_view(self, va: int, size: int, write: bool) -> tuple[memoryview, Callable[[], None]]:
        """:meth:`view`, with the function that drops its pins early (idempotent;
        the view must not be used after it)."""
        va, size = u64("va", va), u64("size", size)
        if not size:
            raise InvalidArgumentError("zero-length view", va)
        pinned = cmm.view_pin(self._ptr(), va, size, bool(write))
        if isinstance(pinned, str):
            raise ZeroCopyError(pinned, va)
        host, pa = pinned
        m = self.machine
        buf, unpin = cmm.view_buffer(host, pa, size, lambda: None if m.closed else m._ptr(), m)
        mv = memoryview(buf)
        return (mv if write else mv.toreadonly()), unpin

    # One-register accesses are the hot path of a register-poking driver: each
    # is one cffi call returning the value (csrc/access.c, the fast path); the
    # argument checks and error decoding run only when that call fails.
    def _read_slow(self, va: object, size: int) -> int:
        """A read whose fast call refused its arguments (TypeError / OverflowError)."""
        return cmm.read_n(self._ptr(), _check_va(va), size)

    def _write_slow(self, va: object, size: int, value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"value must be an int, not {type(value).__name__}")
        if not 0 <= value < 1 << (8 * size):
            raise InvalidArgumentError(f"value {value:#x} does not fit in {size} bytes",
                                       va if type(va) is int and 0 <= va < _U64_LIMIT else 0)
        cmm.write_n(self._ptr(), _check_va(va), size, value)

    def _fail(self, va: object, rc: int) -> NoReturn:
        """Raise for a failed fast access (a bool address reached the core as 0 or 1: its TypeError)."""
        if va is True or va is False:
            with contextlib.suppress(Exception):
                cmm.fast_raise(rc)   # consume the error record (a stashed exception with it)
            _check_va(va)
        cmm.fast_raise(rc)

    def _read(self, va: Any, size: int) -> int:
        """What the C methods read8 .. read64 (CpuAccess) do not do at once -- a TLB
        miss, MMIO, the cache model, a bad argument: the ordinary cffi call, its
        failure raised."""
        try:
            v: int = _READ[size](self._as, va)
        except (TypeError, OverflowError):
            return self._read_slow(va, size)
        if v < 0 if size < 8 else v == _ALL_ONES:
            rc = v if size < 8 else cmm.fast_failed()
            if rc:
                self._fail(va, rc)
        return v

    def _write(self, va: Any, value: Any, size: int) -> None:
        """As _read, for write8 .. write64."""
        if value is True or value is False:
            self._write_slow(va, size, value)
        try:
            rc: int = _WRITE[size](self._as, va, value)
        except (TypeError, OverflowError):
            return self._write_slow(va, size, value)
        if rc:
            self._fail(va, rc)
        return None

    def touch(self, va: int, count: int = 1, stride: int = PAGE_SIZE, *, write: bool = False) -> None:
        """Touch ``count`` addresses ``stride`` apart in one C call (faulting as needed)."""
        cmm.touch(self._ptr(), u64("va", va), u64("count", count), u64("stride", stride), write)

    def touch_list(self, addresses: Iterable[int], *, write: bool = False) -> None:
        """Touch each address of a list in order, in one C call.

        A buffer of unsigned 64-bit integers (``array.array("Q")``, a numpy
        ``uint64`` array) is passed to C as it is, without a Python-level loop.
        """
        arr = None if isinstance(addresses, (list, tuple)) else u64_array(addresses)
        if arr is None:
            arr = u64_array([u64("address", a) for a in addresses])
        cmm.touch_list(self._ptr(), arr, len(arr), write)

    def count_present(self, va: int, size: int) -> int:
        """How many 4 KiB pages of [va, va+size) have a present translation."""
        return cmm.count_present(self._ptr(), u64("va", va), u64("size", size))

    def flush_tlb(self) -> None:
        cmm.tlb_flush_all(self._ptr())

    # ---- fault callback ----
    def _fault(self, vid: int, va: int, flags: int) -> tuple[int, int] | int:
        """The core's callback for a VMA with a Python handler, or for page_mkwrite
        (``flags``: DMAMAP_FAULT_FLAG_* bits): what the callbacks say, for the core.
        A fault runs huge_fault, then map_pages (read faults), then fault, as
        mm/memory.c's __handle_mm_fault / do_read_fault do."""
        vma = self._vmas.get(vid)   # one dict read: atomic
        write = bool(flags & _FAULT_FLAG_WRITE)
        if vma is None:
            return Err.ENOHANDLER
        # linear_page_index: the page's offset in the mapped object
        vmf = VmFault(vma, va, vma.vm_pgoff + ((va - vma.start) >> PAGE_SHIFT), write)
        ops = vma._vm_ops
        if flags & _FAULT_FLAG_MKWRITE:
            return self._page_mkwrite(ops, vmf)
        if vma.fault_handler is None:
            return Err.ENOHANDLER
        if ops is not None and (ops.huge_fault is not None or ops.map_pages is not None):
            done = self._fault_ahead(ops, vmf)
            if done is not None:
                return done
        res = vma.fault_handler(vmf)
        if isinstance(res, Page):
            if res.machine is not self.machine:
                raise InvalidArgumentError("fault handler returned a page of another machine", va)
            return FaultResult.PAGE, res.pfn
        if res is None or res == VM_FAULT_NOPAGE:
            return FaultResult.NOPAGE
        if res == VM_FAULT_SIGBUS:
            return FaultResult.SIGBUS
        raise InvalidArgumentError(f"fault handler returned {res!r}; expected a Page, VM_FAULT_NOPAGE or "
                                   f"VM_FAULT_SIGBUS", va)

    def _present(self, va: int) -> bool:
        return cmm.translate(self._as, va) is not None

    def _fault_ahead(self, ops: VmOperations, vmf: VmFault) -> int | None:
        """huge_fault (create_huge_pmd) and map_pages (do_fault_around) before
        ->fault: NOPAGE when one of them mapped the faulting address, SIGBUS
        when one said so, None to go on to ->fault."""
        vma, va = vmf.vma, vmf.address
        haddr = va & ~(_PMD_SIZE - 1)
        if ops.huge_fault is not None and (not vmf.write or vma.shared) and haddr >= vma.start \
                and haddr + _PMD_SIZE <= vma.end \
                and ((vma.start >> PAGE_SHIFT) - vma.vm_pgoff) % (1 << PMD_ORDER) == 0 \
                and cvm.pmd_none(self._as, haddr):   # thp_vma_suitable_order, pmd_none
            r = ops.huge_fault(vmf, PMD_ORDER)
            if r == VM_FAULT_SIGBUS:
                return FaultResult.SIGBUS
            if r != VM_FAULT_FALLBACK and r not in (None, 0, VM_FAULT_NOPAGE):
                raise InvalidArgumentError(f"huge_fault returned {r!r}; expected VM_FAULT_NOPAGE, "
                                           f"VM_FAULT_FALLBACK or VM_FAULT_SIGBUS", va)
            if r != VM_FAULT_FALLBACK and self._present(va):
                return FaultResult.NOPAGE
            # a fallback, or a PMD found taken: the 4 KiB path, as the kernel's retried fault
        if ops.map_pages is not None and not vmf.write and fault_around_pages() > 1:   # should_fault_around
            start, end = fault_around_window(vmf)
            r = ops.map_pages(vmf, start, end)
            if r == VM_FAULT_SIGBUS:
                return FaultResult.SIGBUS
            if r not in (None, 0, VM_FAULT_NOPAGE):
                raise InvalidArgumentError(f"map_pages returned {r!r}; expected None, VM_FAULT_NOPAGE or "
                                           f"VM_FAULT_SIGBUS", va)
            if self._present(va):   # it mapped the faulting page: ->fault is not called
                return FaultResult.NOPAGE
        return None

    def _page_mkwrite(self, ops: VmOperations | None, vmf: VmFault) -> int:
        """wp_page_shared's do_page_mkwrite: NOPAGE lets the PTE become writable."""
        if ops is None or ops.page_mkwrite is None:   # write-notify without a callback: reuse the page
            return FaultResult.NOPAGE
        r = ops.page_mkwrite(vmf)
        if r is None or r == VM_FAULT_NOPAGE:
            return FaultResult.NOPAGE
        if r == VM_FAULT_SIGBUS:
            return FaultResult.SIGBUS
        raise InvalidArgumentError(f"page_mkwrite returned {r!r}; expected None, VM_FAULT_NOPAGE or "
                                   f"VM_FAULT_SIGBUS", vmf.address)

    def __enter__(self) -> AddressSpace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._closed:
            return "<AddressSpace closed>"
        return f"<AddressSpace {'kernel' if self.kernel else 'user'} root={self.root:#x} vmas={len(self._vmas)}>"


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
    size = page_align("remap_pfn_range", u64("size", size))
    flags = (RemapFlag.LARGE if large else 0) | (0 if track else RemapFlag.NOTRACK)
    cmm.remap_pfn_range(vma.mm._ptr(), vma.id, u64("addr", addr), u64("pfn", pfn), size,
                        check_prot(prot, _isa(vma)), flags)


def remap_pfn_chunks(vma: Vma, addr: int, chunks: Iterable[tuple[int, int]], first_page: int, nr_pages: int,
                     prot: int, *, large: bool = False) -> None:
    """remap_pfn_range of pages [first_page, first_page+nr_pages) of a (pfn, npages)
    chunk list, laid out linearly from ``addr``, in one C call; all or nothing."""
    _check_vma(vma)
    cl = [(u64("chunk pfn", p), u64("chunk pages", n)) for p, n in chunks]
    if not cl:
        raise InvalidArgumentError("remap_pfn_chunks: empty chunk list", addr)
    cmm.remap_pfn_chunks(vma.mm._ptr(), vma.id, u64("addr", addr), cl, u64("first_page", first_page),
                         u64("nr_pages", nr_pages), check_prot(prot, _isa(vma)), RemapFlag.LARGE if large else 0)


def vmf_insert_pfn_prot(vma: Vma, addr: int, pfn: int, prot: int) -> int:
    """Insert one PFN with an explicit protection; returns VM_FAULT_NOPAGE."""
    _check_vma(vma)
    cmm.vmf_insert_pfn_prot(vma.mm._ptr(), vma.id, u64("addr", addr), u64("pfn", pfn), check_prot(prot, _isa(vma)))
    return VM_FAULT_NOPAGE


def vmf_insert_pfn(vma: Vma, addr: int, pfn: int) -> int:
    """Insert one PFN into a VM_PFNMAP / VM_MIXEDMAP VMA with its vm_page_prot."""
    _check_vma(vma)
    return vmf_insert_pfn_prot(vma, addr, pfn, vma.page_prot)


def vmf_insert_mixed(vma: Vma, addr: int, pfn: int) -> int:
    """Insert a PFN into a VM_MIXEDMAP VMA: as a page if it is RAM, special otherwise."""
    _check_vma(vma)
    cmm.vmf_insert_mixed(vma.mm._ptr(), vma.id, u64("addr", addr), u64("pfn", pfn))
    return VM_FAULT_NOPAGE


def vm_insert_page(vma: Vma, addr: int, page: Page) -> None:
    """Insert a RAM page (takes a reference); marks the VMA VM_MIXEDMAP."""
    _check_vma(vma)
    if not isinstance(page, Page):
        raise TypeError(f"vm_insert_page takes a Page, not {type(page).__name__}")
    if page.machine is not vma.machine:
        raise InvalidArgumentError("page belongs to another machine", addr)
    cmm.vm_insert_page(vma.mm._ptr(), vma.id, u64("addr", addr), page.pfn)


def vmf_insert_pfn_pmd(vmf: VmFault, pfn: int, write: bool = False) -> int:
    """Map one 2 MiB block of PFNs (``pfn`` 2 MiB-aligned) at the PMD of the
    faulting address, with the VMA's protection, from a huge_fault handler
    (mm/huge_memory.c); a PMD already taken is left alone.  Returns
    VM_FAULT_NOPAGE."""
    if not isinstance(vmf, VmFault):
        raise TypeError(f"vmf_insert_pfn_pmd takes a VmFault, not {type(vmf).__name__}")
    vma = vmf.vma
    cvm.vmf_insert_pfn_pmd(vma.mm._ptr(), vma.id, u64("address", vmf.address), u64("pfn", pfn), bool(write))
    return VM_FAULT_NOPAGE


def zap_vma_ptes(vma: Vma, addr: int, size: int) -> None:
    """Clear the PTEs of [addr, addr+size) of a VM_PFNMAP VMA and flush the TLB; on
    any other VMA it does nothing, as mm/memory.c zap_vma_ptes returns."""
    _check_vma(vma)
    cmm.zap_vma_ptes(vma.mm._ptr(), vma.id, u64("addr", addr), u64("size", size))


def change_protection(vma: Vma, addr: int, size: int, prot: int) -> None:
    """Rewrite the attributes of present PTEs in [addr, addr+size) and flush the TLB."""
    _check_vma(vma)
    cmm.mprotect(vma.mm._ptr(), vma.id, u64("addr", addr), u64("size", size), check_prot(prot, _isa(vma)))

