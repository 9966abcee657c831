"""A thread-safe first-fit range allocator, as Linux's lib/genalloc.c.

The machine keeps one per address window it hands out in pieces: the SRAM
pool behind ``dma_alloc_coherent`` on SRAM platforms, the MMIO window that
BARs are placed in, and the I/O-port window that ``pio_map`` translates
through.  Each pool is the only owner of its free list and guards it with its
own lock, so threads allocating and freeing at once never get one range twice.
"""

from __future__ import annotations

import threading

from dmamap.errors import InvalidArgumentError, OutOfMemoryError

__all__ = ["GenPool"]


class GenPool:
    """Free ranges of ``[base, base + size)``, handed out first fit.

    ``granule`` is the unit of every size and alignment (1 for byte ranges);
    ``hint`` is appended to the message of an exhausted pool (what the user can
    enlarge).
    """

    def __init__(self, name: str, base: int, size: int, *, granule: int = 1, hint: str = "") -> None:
        if size < 0 or base < 0 or granule <= 0 or base % granule or size % granule:
            raise InvalidArgumentError(f"{name}: bad pool [{base:#x}, +{size:#x}) with granule {granule:#x}")
        self.name = name
        self.base = base
        self.size = size
        self.granule = granule
        self.hint = hint
        self._free: list[tuple[int, int]] = [(base, size)] if size else []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<GenPool {self.name} [{self.base:#x}, {self.base + self.size:#x}) avail={self.avail:#x}>"

    @property
    def avail(self) -> int:
        """Free bytes (units of 1), whatever their fragmentation."""
        with self._lock:
            return sum(n for _, n in self._free)

    def free_ranges(self) -> list[tuple[int, int]]:
        """A snapshot of the free ``(start, size)`` ranges, in address order."""
        with self._lock:
            return list(self._free)

    def alloc(self, size: int, *, align: int = 1) -> int:
        """The start of a free range of ``size`` aligned to ``align`` (first fit)."""
        g = self.granule
        if size <= 0 or size % g or align <= 0 or align & (align - 1) or (align % g and align > g):
            raise InvalidArgumentError(f"{self.name}: cannot allocate {size:#x} aligned to {align:#x}")
        with self._lock:
            for i, (start, n) in enumerate(self._free):
                cand = (start + align - 1) & ~(align - 1)
                if cand + size > start + n:
                    continue
                pieces = [(start, cand - start), (cand + size, start + n - cand - size)]
                self._free[i:i + 1] = [p for p in pieces if p[1]]
                return cand
            free = sum(n for _, n in self._free)
        hint = f"; {self.hint}" if self.hint else ""
        raise OutOfMemoryError(f"{self.name} exhausted: no free range of {size:#x} aligned to {align:#x} "
                               f"({free:#x} of {self.size:#x} free){hint}")

    def free(self, start: int, size: int) -> None:
        """Give ``[start, start + size)`` back; it must be allocated, wholly."""
        with self._lock:
            if start < self.base or start + size > self.base + self.size or size <= 0:
                raise InvalidArgumentError(f"{self.name}: [{start:#x}, +{size:#x}) is outside the pool")
            for s, n in self._free:
                if start < s + n and s < start + size:
                    raise InvalidArgumentError(f"{self.name}: double free of [{start:#x}, +{size:#x})")
            merged: list[tuple[int, int]] = []
            for s, n in sorted([*self._free, (start, size)]):
                if merged and merged[-1][0] + merged[-1][1] == s:
                    merged[-1] = (merged[-1][0], merged[-1][1] + n)
                else:
                    merged.append((s, n))
            self._free = merged
