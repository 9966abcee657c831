"""The numpy face of :mod:`dmamap.ndbuffer`: ``DmaArray``, imported only when
numpy is (``dmamap.allocate`` or ``dmamap.DmaArray`` asks for it)."""

from __future__ import annotations

from typing import Any

import numpy as np

from dmamap.errors import InvalidArgumentError
from dmamap.ndbuffer import DmaMemory

__all__ = ["DmaArray"]


class DmaArray(np.ndarray):
    """A numpy array over a DMA buffer (PYNQ's ``PynqBuffer``).  Slices and
    views keep the buffer: their ``device_address`` is the slice's own, and
    ``flush()`` / ``invalidate()`` on a contiguous slice sync only its bytes.
    A computed result (``a + 1``, ``a.copy()``) is ordinary memory: it has no
    buffer, and asking it for one raises InvalidArgumentError."""

    _dma: DmaMemory | None

    @classmethod
    def _wrap(cls, mem: DmaMemory, shape: tuple[int, ...], dtype: Any) -> DmaArray:
        arr = np.ndarray.__new__(cls, shape, dtype=dtype, buffer=mem.host)
        arr._dma = mem
        return arr

    def __array_finalize__(self, obj: Any) -> None:
        mem = getattr(obj, "_dma", None)
        if mem is not None and mem.host.nbytes:
            base = _address(mem.host)
            here = self.__array_interface__["data"][0]
            if not base <= here < base + mem.host.nbytes:
                mem = None   # a fresh result computed from a buffer, not a view of it
        self._dma = mem

    # ---- the buffer ----
    def _mem(self, what: str) -> DmaMemory:
        mem = getattr(self, "_dma", None)
        if mem is None:
            raise InvalidArgumentError(f"{what}: this array is not a DMA buffer (a copy or a computed result)")
        return mem

    def _offset(self, what: str) -> int:
        mem = self._mem(what)
        return int(self.__array_interface__["data"][0] - _address(mem.host))

    def _range(self, what: str) -> tuple[int, int | None]:
        """The bytes a sync covers: the array's own if it is contiguous, else the whole buffer."""
        if self.flags.c_contiguous or self.flags.f_contiguous:
            return self._offset(what), int(self.nbytes)
        return 0, None

    @property
    def device_address(self) -> int:
        """The bus address of the first element (what the device is programmed with)."""
        return self._mem("device_address").dma_handle + self._offset("device_address")

    physical_address = device_address   # PYNQ's older name
    dma_handle = device_address

    @property
    def cpu_addr(self) -> int:
        """The kernel virtual address of the first element."""
        mem = self._mem("cpu_addr")
        return int(mem.cpu_addr) + self._offset("cpu_addr")

    @property
    def coherent(self) -> bool:
        return self._mem("coherent").coherent

    @property
    def zero_copy(self) -> bool:
        """True when the array is the buffer's memory, False when it is a shadow copied by flush/invalidate."""
        return self._mem("zero_copy").zero_copy

    # ---- syncs ----
    def flush(self) -> None:
        """Make the CPU's writes visible to the device (sync for the device;
        a shadow copies its bytes in first)."""
        off, n = self._range("flush")
        self._mem("flush").flush(off, n)

    def invalidate(self) -> None:
        """Make the device's writes visible to the CPU (sync for the CPU;
        a shadow copies the bytes out after)."""
        off, n = self._range("invalidate")
        self._mem("invalidate").invalidate(off, n)

    sync_to_device = flush          # PYNQ's names
    sync_from_device = invalidate

    def free(self) -> None:
        """Free the DMA buffer (idempotent); no array of it may be used afterwards."""
        self._mem("free").free()

    freebuffer = free
    close = free

    def __enter__(self) -> DmaArray:
        return self

    def __exit__(self, *exc: object) -> None:
        self.free()


def _address(mv: memoryview) -> int:
    return int(np.frombuffer(mv, dtype=np.uint8).__array_interface__["data"][0])
