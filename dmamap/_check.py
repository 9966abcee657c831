"""Argument checks shared by every layer, and the page constants."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from dmamap.errors import InvalidArgumentError

__all__ = ["PAGE_SHIFT", "PAGE_SIZE", "u64", "page_align", "hex_repr"]

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
_U64_END = 1 << 64


def u64(name: str, v: int) -> int:
    """``v`` as a plain int in [0, 2**64): bools and non-ints are a TypeError; an
    int subclass is taken at its true value, whatever its comparisons say."""
    if type(v) is int and 0 <= v < _U64_END:
        return v
    if type(v) is not int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an int, not {type(v).__name__}")
        v = int.__index__(v)
    if not 0 <= v < 1 << 64:
        raise InvalidArgumentError(f"{name} {v:#x} is not a 64-bit unsigned value", v if v >= 0 else 0)
    return v


def page_align(what: str, size: int) -> int:
    """``size`` rounded up to whole pages; refused if that wraps 64 bits."""
    size = (size + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    if size >= 1 << 64:
        raise InvalidArgumentError(f"{what}: size wraps when rounded up to pages")
    return size


def hex_repr(*hex_fields: str) -> Callable[[object], str]:
    """A dataclass ``__repr__`` printing ``hex_fields`` (addresses) in hex and the
    other fields as the default repr does."""
    def __repr__(self: object) -> str:
        parts = []
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if not f.repr:
                continue
            v = getattr(self, f.name)
            parts.append(f"{f.name}={v:#x}" if f.name in hex_fields and isinstance(v, int) else f"{f.name}={v!r}")
        return f"{type(self).__name__}({', '.join(parts)})"
    return __repr__
