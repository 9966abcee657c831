"""The binding layer: the only code that touches the compiled core (``dmamap._core``).

As pynacl's ``bindings`` and argon2-cffi's ``low_level``: one Python function
per C entry point (in :mod:`.arch`, :mod:`.phys`, :mod:`.mm`, :mod:`.bench`),
each checking its return code once and raising the matching
:class:`~dmamap.errors.DmamapError`; enums and error codes taken from the C
constants, never copied as numbers.

Python callbacks (device registers, fault handlers) run inside C calls; an
exception they raise is stashed here and re-raised when the C call returns.
This is also the last line of argument checking before C: an integer that
does not fit the C parameter becomes :class:`InvalidArgumentError` (not cffi's
``OverflowError``), a non-integer a ``TypeError``, and byte buffers are passed
with their size in bytes whatever their item format.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from typing import Any

from dmamap.errors import (
    AddressRangeError,
    AlignmentFault,
    BadPageError,
    CowFaultError,
    DmaCpuOwnershipError,
    DmamapError,
    FaultHandlerSigbus,
    HandlerError,
    InvalidArgumentError,
    MachineClosedError,
    MemtypeConflictError,
    NoFaultHandlerError,
    OutOfMemoryError,
    PhysicalAddressError,
    PortRangeFault,
    ProtectionFault,
    PteBusyError,
    SegmentationFault,
    UnclaimedIOError,
    VirtToPageError,
    VmaKindError,
    VmaNotMappedError,
)

try:
    from dmamap._binding import _cpu
    from dmamap._core import ffi, lib
except ImportError as exc:   # pragma: no cover - depends on how dmamap was installed
    import pathlib

    _here = pathlib.Path(__file__).resolve().parent.parent
    if (_here.parent / "csrc").is_dir() and not (list(_here.glob("_core*.so")) and
                                                 list(_here.glob("_binding/_cpu*.so"))):
        raise ImportError(f"you are importing dmamap from a source tree ({_here.parent}) without its compiled "
                          f"modules; run `pip install -e .` there, or leave the directory") from exc
    raise

__all__ = [
    "Err", "CODE_TO_ERROR", "Region", "FaultKind", "FaultResult", "IoKind", "PageFlag", "MemtypePolicy", "ProtFlag",
    "VmFlag", "RemapFlag", "MAX_REGIONS", "MAX_HOST_BUFFER", "call", "check", "stash", "raise_for", "in_buffer",
    "out_buffer", "new_handle", "NULL", "_cpu",
]


class Err(enum.IntEnum):
    """The core's return codes (``DMAMAP_E*``)."""

    OK = lib.DMAMAP_OK
    EINVAL = lib.DMAMAP_EINVAL
    ENOMEM = lib.DMAMAP_ENOMEM
    EPHYS = lib.DMAMAP_EPHYS
    ESEGV = lib.DMAMAP_ESEGV
    ENOHANDLER = lib.DMAMAP_ENOHANDLER
    EPROT = lib.DMAMAP_EPROT
    EALIGN = lib.DMAMAP_EALIGN
    EBADPAGE = lib.DMAMAP_EBADPAGE
    EVMAKIND = lib.DMAMAP_EVMAKIND
    ECOW = lib.DMAMAP_ECOW
    EBUSY = lib.DMAMAP_EBUSY
    EMEMTYPE = lib.DMAMAP_EMEMTYPE
    ESIGBUS = lib.DMAMAP_ESIGBUS
    EHANDLER = lib.DMAMAP_EHANDLER
    EVIRT = lib.DMAMAP_EVIRT
    ENOVMA = lib.DMAMAP_ENOVMA
    ECLOSED = lib.DMAMAP_ECLOSED
    EIO = lib.DMAMAP_EIO
    ERANGE = lib.DMAMAP_ERANGE
    EIOFAULT = lib.DMAMAP_EIOFAULT
    EDMAOWN = lib.DMAMAP_EDMAOWN


#: The core's return codes -> exception classes.
CODE_TO_ERROR: dict[int, type[DmamapError]] = {
    Err.EINVAL: InvalidArgumentError, Err.ENOMEM: OutOfMemoryError, Err.EPHYS: PhysicalAddressError,
    Err.ESEGV: SegmentationFault, Err.ENOHANDLER: NoFaultHandlerError, Err.EPROT: ProtectionFault,
    Err.EALIGN: AlignmentFault, Err.EBADPAGE: BadPageError, Err.EVMAKIND: VmaKindError, Err.ECOW: CowFaultError,
    Err.EBUSY: PteBusyError, Err.EMEMTYPE: MemtypeConflictError, Err.ESIGBUS: FaultHandlerSigbus,
    Err.EHANDLER: HandlerError, Err.EVIRT: VirtToPageError, Err.ENOVMA: VmaNotMappedError,
    Err.ECLOSED: MachineClosedError, Err.EIO: UnclaimedIOError, Err.ERANGE: AddressRangeError,
    Err.EIOFAULT: PortRangeFault,
    Err.EDMAOWN: DmaCpuOwnershipError,
}


class Region(enum.IntEnum):
    """Physical region types of the memory map."""

    RAM = lib.DMAMAP_MEM_RAM
    SRAM = lib.DMAMAP_MEM_SRAM
    MMIO = lib.DMAMAP_MEM_MMIO
    IOWIN = lib.DMAMAP_MEM_IOWIN

    @property
    def label(self) -> str:
        """The name the Python API uses ("ram", "sram", "mmio", "io-window")."""
        return "io-window" if self is Region.IOWIN else self.name.lower()


class FaultKind(enum.IntEnum):
    """Fault handler kinds of a VMA."""

    NONE = lib.DMAMAP_FAULT_NONE
    PAGE = lib.DMAMAP_FAULT_PAGE
    PFN = lib.DMAMAP_FAULT_PFN
    PYTHON = lib.DMAMAP_FAULT_PYTHON
    PIO = lib.DMAMAP_FAULT_PIO


class FaultResult(enum.IntEnum):
    """What a fault callback tells the core."""

    PAGE = lib.DMAMAP_VM_FAULT_PAGE
    NOPAGE = lib.DMAMAP_VM_FAULT_NOPAGE
    SIGBUS = lib.DMAMAP_VM_FAULT_SIGBUS


class IoKind(enum.IntEnum):
    MMIO = lib.DMAMAP_IO_MMIO
    PORT = lib.DMAMAP_IO_PORT


class PageFlag(enum.IntFlag):
    RESERVED = lib.DMAMAP_PG_RESERVED
    ANON = lib.DMAMAP_PG_ANON
    TABLE = lib.DMAMAP_PG_TABLE
    DMA = lib.DMAMAP_PG_DMA


class MemtypePolicy(enum.IntEnum):
    STRICT = lib.DMAMAP_MEMTYPE_STRICT
    REPORT = lib.DMAMAP_MEMTYPE_REPORT


class ProtFlag(enum.IntFlag):
    """A generic protection request, turned into PTE bits by the ISA."""

    READ = lib.DMAMAP_PROT_READ
    WRITE = lib.DMAMAP_PROT_WRITE
    EXEC = lib.DMAMAP_PROT_EXEC
    USER = lib.DMAMAP_PROT_USER


class VmFlag(enum.IntFlag):
    """The core's vm_flags (Linux's names and values)."""

    VM_READ = lib.DMAMAP_VM_READ
    VM_WRITE = lib.DMAMAP_VM_WRITE
    VM_EXEC = lib.DMAMAP_VM_EXEC
    VM_SHARED = lib.DMAMAP_VM_SHARED
    VM_PFNMAP = lib.DMAMAP_VM_PFNMAP
    VM_IO = lib.DMAMAP_VM_IO
    VM_DONTEXPAND = lib.DMAMAP_VM_DONTEXPAND
    VM_DONTDUMP = lib.DMAMAP_VM_DONTDUMP
    VM_DONTCOPY = lib.DMAMAP_VM_DONTCOPY
    VM_WIPEONFORK = lib.DMAMAP_VM_WIPEONFORK
    VM_MIXEDMAP = lib.DMAMAP_VM_MIXEDMAP

    def __str__(self) -> str:
        # Flag names on every Python (3.11's IntFlag prints the bare integer).
        known = [f for f in type(self) if f in self]
        rest = int(self) & ~sum(int(f) for f in known)
        return "|".join([str(f.name) for f in known] + ([f"{rest:#x}"] if rest else [])) or "0"


class RemapFlag(enum.IntFlag):
    LARGE = lib.DMAMAP_REMAP_LARGE
    NOTRACK = lib.DMAMAP_REMAP_NOTRACK


MAX_REGIONS: int = lib.DMAMAP_MAX_REGIONS
#: The largest buffer one read may allocate on the host (bytes).
MAX_HOST_BUFFER = 1 << 30
NULL = ffi.NULL


class _Local(threading.local):
    def __init__(self) -> None:
        self.err = ffi.new("struct dmamap_err *")
        self.pending: BaseException | None = None
        self.u64 = ffi.new("uint64_t *")


_local = _Local()


def stash(exc: BaseException) -> None:
    """Remember an exception raised inside a callback, for the C call's return."""
    if _local.pending is None:
        _local.pending = exc
        lib.dmamap_fast_pending(1)   # the register fast path fails on it too (see _binding.mm)


def raise_for(rc: int, err: Any) -> None:
    """Raise what return code ``rc`` (with ``err``) means; an exception a
    callback stashed during the call comes first, unless the machine or the
    address space was closed under the call, which explains everything."""
    pending, _local.pending = _local.pending, None
    if pending is not None:
        lib.dmamap_fast_pending(0)
    if pending is not None and rc != Err.ECLOSED:
        if isinstance(pending, DmamapError) or not isinstance(pending, Exception):
            raise pending   # KeyboardInterrupt, SystemExit... pass through untouched
        raise HandlerError(f"callback raised {type(pending).__name__}: {pending}") from pending
    msg = ffi.string(err.msg).decode("utf-8", "replace") if err.msg[0] else ""
    cls = CODE_TO_ERROR.get(rc, DmamapError)
    raise cls(msg or cls.rule, int(err.addr))


def call(fn: Callable[..., int], *args: Any) -> int:
    """Call a C function whose last argument is the error struct; raise on failure."""
    err = _local.err
    try:
        rc = fn(*args, err)
    except OverflowError as exc:   # an int that does not fit the C parameter type
        _local.pending = None
        lib.dmamap_fast_pending(0)
        raise InvalidArgumentError(f"argument out of range for {getattr(fn, '__name__', 'the C core')}: "
                                   f"{exc}") from None
    if rc < 0:
        raise_for(rc, err)
    if _local.pending is not None:
        raise_for(Err.EHANDLER, err)
    return rc


def check(rc: int) -> int:
    """For entry points without an error struct: a negative code, or a stashed
    callback exception, raises."""
    if rc < 0 or _local.pending is not None:
        err = _local.err
        err.msg[0] = b"\0"
        err.addr = 0
        raise_for(rc if rc < 0 else Err.EHANDLER, err)
    return rc


def in_buffer(name: str, data: Any) -> tuple[Any, int]:
    """``(cdata, nbytes)`` of a bytes-like argument to be read by C.

    Accepts bytes, bytearray and memoryview of any item format; a
    non-contiguous view is copied.  Anything else is a ``TypeError``.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"{name} must be bytes-like, not {type(data).__name__}")
    if isinstance(data, memoryview):
        try:
            contiguous = data.c_contiguous
        except ValueError:   # released
            raise TypeError(f"{name} is a released memoryview") from None
        if not contiguous:
            data = data.tobytes()
        elif data.format != "B" or data.ndim != 1:
            data = data.cast("B")
    return ffi.from_buffer(data), len(data)


def out_buffer(n: int) -> bytearray:
    """A zeroed host buffer of ``n`` bytes for C to fill; refuses absurd sizes."""
    if n > MAX_HOST_BUFFER:
        raise OutOfMemoryError(f"a single access of {n:#x} bytes exceeds the {MAX_HOST_BUFFER:#x}-byte host "
                               f"buffer limit; access it in pieces")
    try:
        return bytearray(n)
    except MemoryError:
        raise OutOfMemoryError(f"host out of memory for a {n:#x}-byte buffer") from None


def new_handle(obj: object) -> Any:
    """A C handle of a Python object, for the callbacks (keep it alive with the object)."""
    return ffi.new_handle(obj)


def u64_array(values: Any) -> Any:
    """A ``uint64_t[]`` of a list of ints, or a view of a contiguous buffer of
    unsigned 64-bit ints (``array('Q')``, numpy ``uint64``) without a copy;
    None if ``values`` is neither."""
    if isinstance(values, (list, tuple)):
        return ffi.new("uint64_t[]", values)
    try:
        mv = memoryview(values)
    except TypeError:
        return None
    if mv.ndim != 1 or mv.itemsize != 8 or mv.format.lstrip("@=<") not in ("Q", "L") or not mv.c_contiguous:
        return None
    return ffi.from_buffer("uint64_t[]", mv)


# ---- callbacks: the core calls these; they dispatch to the object behind the handle ----

@ffi.def_extern()
def _dmamap_io_cb(ctx: Any, kind: int, owner: int, bar: int, offset: int, size: int, is_write: int,
                  value: Any) -> int:
    try:
        r = ffi.from_handle(ctx)._io(kind, owner, bar, offset, size, bool(is_write),
                                     int(value[0]) if is_write else 0)
        if r is None:
            return int(Err.EIO)
        if not is_write:
            value[0] = int(r) & ((1 << (8 * size)) - 1)
        return 0
    except BaseException as exc:  # noqa: BLE001 - re-raised when the C call returns
        stash(exc)
        return int(Err.EHANDLER)


@ffi.def_extern()
def _dmamap_fault_cb(ctx: Any, vid: int, va: int, is_write: int, pfn_out: Any) -> int:
    try:
        res = ffi.from_handle(ctx)._fault(vid, va, int(is_write))   # DMAMAP_FAULT_FLAG_* bits
        if isinstance(res, tuple):   # (FaultResult.PAGE, pfn)
            pfn_out[0] = res[1]
            return int(res[0])
        return int(res)
    except BaseException as exc:  # noqa: BLE001 - re-raised when the C call returns
        stash(exc)
        return int(Err.EHANDLER)


IO_CALLBACK = lib._dmamap_io_cb
FAULT_CALLBACK = lib._dmamap_fault_cb
