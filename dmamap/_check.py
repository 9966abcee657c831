"""Argument checks shared by every layer, and the page constants."""

from __future__ import annotations

from dmamap.errors import InvalidArgumentError

__all__ = ["PAGE_SHIFT", "PAGE_SIZE", "u64", "page_align"]

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
