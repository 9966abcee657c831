"""The one wrapper layer over the C core: checks every return code and raises.

Python callbacks (MMIO/port handlers, fault handlers) run inside C calls; an
exception they raise is stashed here and re-raised when the C call returns.

It is also the last line of argument checking before C: an integer that does
not fit the C parameter becomes :class:`InvalidArgumentError` (not cffi's
``OverflowError``), a non-integer a ``TypeError``, and byte buffers are passed
with their size in bytes whatever their item format.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    from dmamap._core import ffi, lib
except ImportError as _exc:   # pragma: no cover - exercised in a subprocess by tests/test_import_hint.py
    _pkg = Path(__file__).resolve().parent
    if (_pkg.parent / "csrc").is_dir() and (_pkg / "_build.py").is_file():
        raise ImportError(
            f"you are importing dmamap from a source tree ({_pkg}) without its compiled core "
            f"(dmamap._core: {_exc}); run `pip install -e .` in {_pkg.parent} to build it there, or leave the "
            f"directory to use the installed dmamap", name="dmamap._core") from _exc
    raise
from dmamap.errors import CODE_TO_ERROR, DmamapError, HandlerError, InvalidArgumentError, OutOfMemoryError

__all__ = ["ffi", "lib", "call", "stash", "new_err", "raise_for", "in_buffer", "out_buffer", "MAX_HOST_BUFFER"]

#: The largest buffer one read may allocate on the host (bytes).
MAX_HOST_BUFFER = 1 << 30


class _Local(threading.local):
    def __init__(self) -> None:
        self.err = ffi.new("struct dmamap_err *")
        self.pending: BaseException | None = None


_local = _Local()


def new_err() -> Any:
    return _local.err


def stash(exc: BaseException) -> None:
    """Remember an exception raised inside a callback, for the C call's return."""
    if _local.pending is None:
        _local.pending = exc


def raise_for(rc: int, err: Any) -> None:
    pending, _local.pending = _local.pending, None
    if pending is not None and rc != lib.DMAMAP_ECLOSED:   # a close under the call explains all
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
        raise InvalidArgumentError(f"argument out of range for {getattr(fn, '__name__', 'the C core')}: "
                                   f"{exc}") from None
    if rc < 0:
        raise_for(rc, err)
    if _local.pending is not None:
        raise_for(-14, err)
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
