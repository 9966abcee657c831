"""The one wrapper layer over the C core: checks every return code and raises.

Python callbacks (MMIO/port handlers, fault handlers) run inside C calls; an
exception they raise is stashed here and re-raised when the C call returns.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from dmamap._core import ffi, lib
from dmamap.errors import CODE_TO_ERROR, DmamapError, HandlerError

__all__ = ["ffi", "lib", "call", "stash", "new_err"]


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
    if pending is not None:
        if isinstance(pending, DmamapError) or not isinstance(pending, Exception):
            raise pending   # KeyboardInterrupt, SystemExit... pass through untouched
        raise HandlerError(f"callback raised {type(pending).__name__}: {pending}") from pending
    msg = ffi.string(err.msg).decode("utf-8", "replace") if err.msg[0] else ""
    cls = CODE_TO_ERROR.get(rc, DmamapError)
    raise cls(msg or cls.rule, int(err.addr))


def call(fn: Callable[..., int], *args: Any) -> int:
    """Call a C function whose last argument is the error struct; raise on failure."""
    err = _local.err
    rc = fn(*args, err)
    if rc < 0:
        raise_for(rc, err)
    if _local.pending is not None:
        raise_for(-14, err)
    return rc
