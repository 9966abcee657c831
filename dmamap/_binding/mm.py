"""Bindings of address spaces: lifetime, VMAs, the kernel's PTE primitives,
walks and CPU accesses (csrc/as.c, mmap.c, memory.c, insert.c, translate.c,
access.c, tlb.c)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from dmamap._binding import (
    FAULT_CALLBACK,
    MAX_HOST_BUFFER,
    NULL,
    _cpu,
    _local,
    call,
    ffi,
    lib,
    out_buffer,
    raise_for,
)
from dmamap._binding._cpu import CpuAccess
from dmamap.errors import OutOfMemoryError

__all__ = [
    "VmaInfo", "Xlate", "as_new", "as_close", "as_closed", "as_free", "as_root", "as_set_fault_handle", "as_stats",
    "mmap", "munmap", "vma_info", "vma_live", "vma_find", "vma_set_flags", "vma_set_prot", "vma_set_pgoff",
    "vma_split", "mremap", "vma_set_fault", "vma_set_pio", "chunks", "remap_pfn_range", "remap_pfn_chunks",
    "vmf_insert_pfn_prot", "vmf_insert_mixed", "vm_insert_page", "zap_vma_ptes", "mprotect", "translate", "read",
    "readinto", "write", "from_buffer", "read_n", "write_n", "READ_FAST", "WRITE_FAST", "ALL_ONES", "FAST_NOP",
    "CpuAccess", "bind_cpu",
    "fast_failed", "fast_raise", "view_pin", "view_buffer", "touch", "touch_list", "count_present", "tlb_flush_all",
    "fork",
]

@dataclass(frozen=True)
class VmaInfo:
    start: int
    end: int
    flags: int
    prot: int
    fault_kind: int
    pgoff: int = 0


@dataclass(frozen=True)
class Xlate:
    """``struct dmamap_xlate``: one translation, as the core decodes it."""

    pa: int
    entry: int
    entry_pa: int
    page_size: int
    cache: int
    writable: bool
    user: bool
    executable: bool
    special: bool
    cacheable: bool
    device: bool
    region: int


# ---- lifetime ----

def as_new(m: Any, kernel: bool) -> Any:
    err = ffi.new("struct dmamap_err *")
    p = lib.dmamap_as_new(m, int(kernel), err)
    if p == NULL:
        raise_for(err.code, err)
    return p


def as_close(p: Any) -> None:
    """Tear the mappings down and refuse later calls (idempotent, thread-safe)."""
    lib.dmamap_as_close(p)


def as_closed(p: Any) -> bool:
    return bool(lib.dmamap_as_closed(p))


def as_free(p: Any) -> None:
    """Free the structure; no call on it may be running or start."""
    lib.dmamap_as_free(p)


def as_root(p: Any) -> int:
    """CR3 / TTBR0 / satp of the root table."""
    return int(lib.dmamap_as_root(p))


def as_set_fault_handle(p: Any, handle: Any) -> None:
    """Route Python-handled faults to ``handle``'s object (its ``_fault`` method)."""
    lib.dmamap_as_set_fault_cb(p, FAULT_CALLBACK, handle)


_STATS = ("ptes_written", "ptes_cleared", "faults", "cow_faults", "tlb_hits", "tlb_misses", "tlb_flushes",
          "table_pages", "pio_traps", "faults_page", "faults_pfn", "faults_huge", "faults_python", "around_ptes",
          "page_walks")


def as_stats(p: Any) -> dict[str, int]:
    s = ffi.new("struct dmamap_as_stats *")
    lib.dmamap_as_stats(p, s)
    return {f: int(getattr(s, f)) for f in _STATS}


# ---- VMAs ----

def mmap(p: Any, addr: int, length: int, flags: int, prot: int, align: int) -> tuple[int, int, int]:
    """Create a VMA; ``(id, start, end)``."""
    out = _local.i64 if hasattr(_local, "i64") else _slot("i64", "int64_t *")
    call(lib.dmamap_mmap, p, addr, length, flags, prot, align, out)
    vid = int(out[0])
    info = vma_info(p, vid)
    return vid, info.start, info.end


def munmap(p: Any, vid: int, *, flush_tlb: bool = True) -> None:
    if flush_tlb:
        call(lib.dmamap_munmap, p, vid)
    else:
        call(lib.dmamap_munmap_flags, p, vid, lib.DMAMAP_MUNMAP_NOFLUSH)


def _slot(name: str, ctype: str) -> Any:
    """A per-thread output slot of C type ``ctype``, made once (no allocation per call)."""
    v = ffi.new(ctype)
    setattr(_local, name, v)
    return v


def vma_info(p: Any, vid: int) -> VmaInfo:
    info = getattr(_local, "vma_info", None) or _slot("vma_info", "struct dmamap_vma_info *")
    call(lib.dmamap_vma_info, p, vid, info)
    return VmaInfo(int(info.start), int(info.end), int(info.flags), int(info.page_prot), int(info.fault_kind),
                   int(info.pgoff))


def vma_live(p: Any, vid: int) -> bool:
    """Whether VMA ``vid`` is mapped (False on a closed space, never an error)."""
    info = getattr(_local, "vma_info", None) or _slot("vma_info", "struct dmamap_vma_info *")
    return lib.dmamap_vma_info(p, vid, info, NULL) == 0


def vma_find(p: Any, va: int) -> int:
    """The id of the VMA holding ``va``, or -1."""
    return int(lib.dmamap_vma_find(p, va))


def vma_set_flags(p: Any, vid: int, set_: int, clear: int) -> None:
    call(lib.dmamap_vma_set_flags, p, vid, set_, clear)


def vma_set_prot(p: Any, vid: int, prot: int) -> None:
    call(lib.dmamap_vma_set_prot, p, vid, prot)


def vma_split(p: Any, vid: int, addr: int) -> int:
    """Split VMA ``vid`` at ``addr``; the id of the new VMA holding [addr, end)."""
    out = ffi.new("int64_t *")
    call(lib.dmamap_vma_split, p, vid, addr, out)
    return int(out[0])


def mremap(p: Any, vid: int, new_len: int, may_move: bool) -> int:
    """Grow VMA ``vid`` to ``new_len`` bytes, moving it if allowed; its new start."""
    out = ffi.new("uint64_t *")
    call(lib.dmamap_mremap, p, vid, new_len, int(may_move), out)
    return int(out[0])


def fork(parent: Any, child: Any, max_vmas: int) -> list[tuple[int, int]]:
    """Copy parent's VMAs into the empty child (dup_mmap); (parent id, child id) pairs."""
    ids = ffi.new("int64_t[]", 2 * max(max_vmas, 1))
    n = ffi.new("int *")
    err = ffi.new("struct dmamap_err *")
    rc = lib.dmamap_fork(parent, child, ids, max_vmas, n, err)
    pairs = [(int(ids[2 * i]), int(ids[2 * i + 1])) for i in range(n[0])]
    if rc:
        raise_for(rc, err)
    return pairs


def vma_set_pgoff(p: Any, vid: int, pgoff: int) -> None:
    call(lib.dmamap_vma_set_pgoff, p, vid, pgoff)


def chunks(runs: list[tuple[int, int]]) -> Any:
    """A ``struct dmamap_chunk[]`` of ``(pfn, npages)`` runs (at least one slot)."""
    arr = ffi.new("struct dmamap_chunk[]", max(len(runs), 1))
    for i, (pfn, n) in enumerate(runs):
        arr[i].pfn, arr[i].npages = pfn, n
    return arr


def vma_set_fault(p: Any, vid: int, kind: int, runs: list[tuple[int, int]] | None = None, first_page: int = 0,
                  fault_around: int = 0, large: bool = False) -> None:
    """Install a fault handler kind (``FaultKind``), with the chunk list of a built-in one."""
    runs = runs or []
    arr = chunks(runs) if runs else NULL
    call(lib.dmamap_vma_set_fault, p, vid, kind, arr, len(runs), first_page, fault_around, int(large))


def vma_set_pio(p: Any, vid: int, port: int, count: int) -> None:
    call(lib.dmamap_vma_set_pio, p, vid, port, count)


# ---- the kernel's primitives ----

def remap_pfn_range(p: Any, vid: int, addr: int, pfn: int, size: int, prot: int, flags: int) -> None:
    call(lib.dmamap_remap_pfn_range, p, vid, addr, pfn, size, prot, flags)


def remap_pfn_chunks(p: Any, vid: int, addr: int, runs: list[tuple[int, int]], first_page: int, nr_pages: int,
                     prot: int, flags: int) -> None:
    call(lib.dmamap_remap_pfn_chunks, p, vid, addr, chunks(runs), len(runs), first_page, nr_pages, prot, flags)


def vmf_insert_pfn_prot(p: Any, vid: int, addr: int, pfn: int, prot: int) -> None:
    call(lib.dmamap_vmf_insert_pfn_prot, p, vid, addr, pfn, prot)


def vmf_insert_mixed(p: Any, vid: int, addr: int, pfn: int) -> None:
    call(lib.dmamap_vmf_insert_mixed, p, vid, addr, pfn)


def vm_insert_page(p: Any, vid: int, addr: int, pfn: int) -> None:
    call(lib.dmamap_vm_insert_page, p, vid, addr, pfn)


def zap_vma_ptes(p: Any, vid: int, addr: int, size: int) -> None:
    call(lib.dmamap_zap_vma_ptes, p, vid, addr, size)


def mprotect(p: Any, vid: int, addr: int, size: int, prot: int) -> None:
    call(lib.dmamap_mprotect, p, vid, addr, size, prot)


# ---- walks and accesses ----

def translate(p: Any, va: int) -> Xlate | None:
    x = ffi.new("struct dmamap_xlate *")
    if not call(lib.dmamap_translate, p, va, x):
        return None
    return Xlate(int(x.pa), int(x.entry), int(x.entry_pa), int(x.page_size), int(x.cache), bool(x.writable),
                 bool(x.user), bool(x.executable), bool(x.special), bool(x.cacheable), bool(x.device),
                 int(x.region))


# bytes(n) zero-fills what the copy then overwrites (a second pass over memory, 2x the
# cost of a large read): a bytes object left unfilled (_cpu.fresh_bytes) is filled instead.
_UNFILLED_FROM = 1 << 12


def read(p: Any, va: int, n: int) -> bytes:
    """``n`` bytes as the CPU reads them, copied once: straight into a fresh
    bytes object, which nothing else can see until it is returned (as C code
    fills ``PyBytes_FromStringAndSize(NULL, n)``)."""
    if n > MAX_HOST_BUFFER:
        out_buffer(n)   # raises OutOfMemoryError naming the limit
    if n < 2:   # bytes of length 0 and 1 may be shared singletons: never filled in place
        b = bytearray(n)
        if n:
            call(lib.dmamap_access_bulk, p, va, ffi.from_buffer(b), n, 0)
        return bytes(b)
    try:
        out = _cpu.fresh_bytes(n) if n >= _UNFILLED_FROM else bytes(n)
    except MemoryError:
        raise OutOfMemoryError(f"host out of memory for a {n:#x}-byte buffer") from None
    # cffi passes a bytes object to a ``void *`` parameter as a pointer to its own
    # storage (no copy, no from_buffer cdata to build: 0.4 µs a call)
    call(lib.dmamap_access_bulk, p, va, out, n, 0)
    return out


def readinto(p: Any, va: int, buf: Any, n: int) -> None:
    """Read ``n`` bytes into ``buf`` (a cffi buffer or ``from_buffer`` cdata) in one
    call; the GIL is released while the core copies."""
    call(lib.dmamap_access_bulk, p, va, buf, n, 0)


def write(p: Any, va: int, cdata: Any, n: int) -> None:
    call(lib.dmamap_access_bulk, p, va, cdata, n, 1)


def from_buffer(mv: memoryview) -> Any:
    """A cdata over a contiguous byte memoryview, without a copy (writable views only if ``mv`` is)."""
    return ffi.from_buffer("uint8_t[]", mv, require_writable=not mv.readonly)


# One-register accesses are the hot path of a register-poking driver: the
# address space's methods call these cffi functions directly (csrc/access.c,
# "the Python fast path"); only a failure comes back here.
READ_FAST: dict[int, Callable[[Any, int], int]] = {
    1: lib.dmamap_read8_fast, 2: lib.dmamap_read16_fast, 4: lib.dmamap_read32_fast, 8: lib.dmamap_read64_fast,
}
WRITE_FAST: dict[int, Callable[[Any, int, int], int]] = {
    1: lib.dmamap_write8_fast, 2: lib.dmamap_write16_fast, 4: lib.dmamap_write32_fast, 8: lib.dmamap_write64_fast,
}
# CpuAccess, the C base class of AddressSpace: read8 .. write64 as C methods
# (dmamap/_binding/_cpu.c), which do a TLB hit on plain memory themselves and
# call ``_read`` / ``_write`` otherwise.
_cpu.bind_core(int(ffi.cast("uintptr_t", ffi.addressof(lib, "dmamap_access_try"))))
# and read, readinto and write as C methods calling dmamap_access_bulk_fast, which
# call ``_bulk_<name>_slow`` for what they do not take and ``_bulk_raise`` on failure.
_cpu.bind_bulk(int(ffi.cast("uintptr_t", ffi.addressof(lib, "dmamap_access_bulk_fast"))), MAX_HOST_BUFFER)


def bind_cpu(obj: _cpu.CpuAccess, p: Any) -> None:
    """Point the C register accesses of ``obj`` at address space ``p`` (which must outlive it)."""
    obj._bind_cpu(int(ffi.cast("uintptr_t", p)))


#: A call with the fast path's arguments that does nothing: the cffi floor under it, for the benchmark.
FAST_NOP: Callable[[Any, int], int] = lib.dmamap_fast_nop
#: What a failed 8-byte fast read returns (a successful one may too: see fast_failed).
ALL_ONES = (1 << 64) - 1


def fast_failed() -> int:
    """The code of this thread's last fast access: 0 if it succeeded."""
    return int(lib.dmamap_fast_err().code)


def fast_raise(rc: int) -> NoReturn:
    """Raise what this thread's last fast access failed with (a stashed callback exception first)."""
    raise_for(rc, lib.dmamap_fast_err())
    raise AssertionError("unreachable")   # raise_for always raises


def read_n(p: Any, va: int, size: int) -> int:
    """One ``size``-byte read (the generic form of the fast path)."""
    v = READ_FAST[size](p, va)
    if v < 0 or (size == 8 and v == ALL_ONES and fast_failed()):
        fast_raise(fast_failed() if size == 8 else v)
    return int(v)


def write_n(p: Any, va: int, size: int, value: int) -> None:
    rc = WRITE_FAST[size](p, va, value)
    if rc:
        fast_raise(rc)


def view_pin(p: Any, va: int, n: int, write: bool) -> tuple[Any, int] | str:
    """Pin [va, va+n) for a zero-copy view: ``(host pointer, physical address)``,
    or why the memory model does not allow one."""
    host = getattr(_local, "view_host", None) or _slot("view_host", "uint8_t **")
    pa = getattr(_local, "view_pa", None) or _slot("view_pa", "uint64_t *")
    refused = getattr(_local, "view_refused", None) or _slot("view_refused", "int *")
    call(lib.dmamap_view_pin, p, va, n, int(write), host, pa, refused)
    if refused[0]:
        return ffi.string(_local.err.msg).decode("utf-8", "replace")
    return host[0], int(pa[0])


def view_buffer(host: Any, pa: int, n: int, machine_ptr: Callable[[], Any],
                keep: object) -> tuple[Any, Callable[[], None]]:
    """A cffi buffer of ``n`` bytes at ``host``, and the function that unpins its
    pages: called by hand (once; later calls do nothing) or when the buffer,
    and every memoryview of it, is gone.  ``keep`` (the machine, whose host
    memory this is) stays alive as long; ``machine_ptr`` gives the C machine,
    or None once it is closed (nothing left to unpin)."""
    armed = [True]

    def unpin() -> None:
        try:
            armed.pop()   # atomic: exactly one caller unpins
        except IndexError:
            return
        m = machine_ptr()
        if m is not None:
            lib.dmamap_view_unpin(m, pa, n)

    def on_gc(_: Any, keep: object = keep) -> None:
        unpin()

    return ffi.buffer(ffi.gc(host, on_gc), n), unpin


def touch(p: Any, va: int, count: int, stride: int, write: bool) -> None:
    call(lib.dmamap_touch, p, va, count, stride, int(write))


def touch_list(p: Any, vas: Any, count: int, write: bool) -> None:
    """Touch the ``uint64_t[]`` list ``vas`` (see ``dmamap._binding.u64_array``)."""
    call(lib.dmamap_touch_list, p, vas, count, int(write))


def count_present(p: Any, va: int, size: int) -> int:
    out = ffi.new("uint64_t *")
    call(lib.dmamap_count_present, p, va, size, out)
    return int(out[0])


def tlb_flush_all(p: Any) -> None:
    lib.dmamap_tlb_flush_all(p)
