"""DMA buffers as numpy arrays, as PYNQ's ``allocate(shape, dtype)`` and
u-dma-buf's numpy class give them: a coherent (``dma_alloc_coherent``) or
streaming (``dma_alloc_noncoherent`` + ``dma_sync_single_for_*``) buffer with
its bus address, ``flush()`` (sync for the device) and ``invalidate()`` (sync
for the CPU).

The array is the buffer itself where the memory model allows it
(**zero-copy**): the kernel mapping is cacheable RAM on a machine without the
cache model (x86: DMA snoops the CPU caches), so a numpy load or store is
exactly the CPU's access; the pages are pinned while the buffer lives.
Everywhere else -- the arm and riscv cache model, an uncached or write-combining
kernel alias, SRAM -- a numpy store could not go through the emulated cache
or write-combining buffer, so the array is a host **shadow** copied through
the CPU's access path: ``flush()`` copies the array in (then syncs for the
device), ``invalidate()`` syncs for the CPU and copies the buffer out.  That
costs one copy of the range per call (about a memcpy through the emulator:
measured by ``dmamap bench``'s bulk readinto/write targets), and between the
calls the array and the buffer differ: the CPU's and device's views meet only
at flush/invalidate, which is exactly the discipline a non-coherent buffer
needs anyway.

numpy is an optional extra (``pip install 'dmamap[numpy]'``); this module
imports without it and :func:`allocate` says what to install.
"""

from __future__ import annotations

import importlib
import operator
import threading
from types import ModuleType
from typing import Any

from dmamap._check import u64
from dmamap.barrier import dma_wmb
from dmamap.device import Device
from dmamap.dma import dma_alloc_coherent, dma_free_coherent
from dmamap.dma_noncoherent import dma_alloc_noncoherent, dma_free_noncoherent
from dmamap.dma_stream import (
    DMA_BIDIRECTIONAL,
    _direction,
    dma_sync_single_for_cpu,
    dma_sync_single_for_device,
)
from dmamap.errors import DmaUseAfterFreeError, InvalidArgumentError, ZeroCopyError

__all__ = ["allocate", "DmaMemory", "dma_array_class"]

#: What a missing numpy is told to install.
NUMPY_HINT = "dmamap.allocate needs numpy, an optional extra: pip install 'dmamap[numpy]'"


def _numpy() -> ModuleType:
    try:
        return importlib.import_module("numpy")
    except ImportError as exc:
        raise ImportError(NUMPY_HINT) from exc


class DmaMemory:
    """One DMA allocation behind a :class:`~dmamap.ndbuffer.DmaArray` and every
    view of it: the buffer, its host memory (the pinned RAM itself, or a
    shadow) and the syncs."""

    def __init__(self, dev: Device, size: int, *, coherent: bool, direction: int) -> None:
        if not isinstance(dev, Device):
            raise TypeError(f"expected a Device, got {type(dev).__name__}")
        self.dev = dev
        self.coherent = bool(coherent)
        self.direction = _direction(direction, "allocate") if not coherent else DMA_BIDIRECTIONAL
        if coherent:
            self.cpu_addr, self.dma_handle, self.size = dma_alloc_coherent(dev, size)
        else:
            self.cpu_addr, self.dma_handle, self.size = dma_alloc_noncoherent(dev, size, self.direction)
        self._lock = threading.Lock()
        self.freed = False
        kernel = dev.machine.kernel
        try:
            self.host, self._unpin = kernel._pinned_view(self.cpu_addr, self.size, True)
            self.zero_copy = True
        except ZeroCopyError:
            self.host = memoryview(bytearray(self.size))
            self._unpin = _nothing
            self.zero_copy = False
            kernel.readinto(self.cpu_addr, self.host)   # the buffer as allocated (zeroed for coherent)
        except BaseException:
            self._free_dma()
            raise

    def _free_dma(self) -> None:
        if self.coherent:
            dma_free_coherent(self.dev, self.size, self.cpu_addr, self.dma_handle)
        else:
            dma_free_noncoherent(self.dev, self.size, self.cpu_addr, self.dma_handle, self.direction)

    def _check(self, what: str) -> None:
        if self.freed:
            raise DmaUseAfterFreeError(f"{what}: the DMA buffer at {self.dma_handle:#x} was freed", self.dma_handle)

    def _span(self, off: int, n: int, what: str) -> tuple[int, int]:
        off, n = u64("offset", off), u64("size", n)
        if n == 0 or off + n > self.size:
            raise InvalidArgumentError(f"{what}: [{off:#x}, {off + n:#x}) is empty or outside the "
                                       f"{self.size:#x}-byte buffer", self.dma_handle + off)
        return off, n

    def flush(self, off: int = 0, n: int | None = None) -> None:
        """Make the CPU's writes to [off, off+n) visible to the device: copy the
        shadow in through the CPU path (copy mode), then sync for the device
        (streaming) or drain the write-combining buffer (coherent)."""
        with self._lock:
            self._check("flush")
            off, n = self._span(off, self.size - off if n is None else n, "flush")
            kernel = self.dev.machine.kernel
            if not self.coherent and not self.zero_copy:
                # the CPU takes the range back first (a second flush without an
                # invalidate between is legal here, as PYNQ's flush is)
                dma_sync_single_for_cpu(self.dev, self.dma_handle + off, n, self.direction)
            if not self.zero_copy:
                kernel.write(self.cpu_addr + off, self.host[off:off + n])
            if self.coherent:
                dma_wmb(self.dev.machine)
            else:
                dma_sync_single_for_device(self.dev, self.dma_handle + off, n, self.direction)

    def invalidate(self, off: int = 0, n: int | None = None) -> None:
        """Make the device's writes to [off, off+n) visible to the CPU: sync for
        the CPU (streaming), then copy the buffer out into the shadow (copy mode)."""
        with self._lock:
            self._check("invalidate")
            off, n = self._span(off, self.size - off if n is None else n, "invalidate")
            if not self.coherent:
                dma_sync_single_for_cpu(self.dev, self.dma_handle + off, n, self.direction)
            if not self.zero_copy:
                self.dev.machine.kernel.readinto(self.cpu_addr + off, self.host[off:off + n])

    def free(self) -> None:
        """Unpin and free the buffer (idempotent).  An array of it must not be
        used afterwards: zero-copy arrays then show freed emulated RAM, shadow
        arrays a stale copy -- as after PYNQ's freebuffer()."""
        with self._lock:
            if self.freed:
                return
            m = self.dev.machine
            m._ptr()   # a closed machine: MachineClosedError, as every later use of it
            self._unpin()
            try:
                self._free_dma()
            except BaseException:
                if self.zero_copy and not m.closed:   # refused: keep the buffer as it was, pinned
                    self.host, self._unpin = m.kernel._pinned_view(self.cpu_addr, self.size, True)
                raise
            self.freed = True


    def __repr__(self) -> str:
        kind = "coherent" if self.coherent else f"streaming {self.direction.name}"
        how = "freed" if self.freed else "zero-copy" if self.zero_copy else "shadowed"
        return (f"<DmaMemory {kind} {self.size:#x} bytes at bus {self.dma_handle:#x}, "
                f"cpu {int(self.cpu_addr):#x}, {how}>")


def _nothing() -> None:
    return None


def _dims(shape: object) -> tuple[int, ...]:
    """``shape`` (an int or a sequence of them, numpy integers included) as a tuple of ints."""
    dims = list(shape) if isinstance(shape, (tuple, list)) else [shape]
    out = []
    for d in dims:
        try:
            if isinstance(d, bool):
                raise TypeError
            out.append(operator.index(d))   # type: ignore[arg-type]
        except TypeError:
            raise InvalidArgumentError(f"allocate: shape {shape!r} must be non-negative ints") from None
        if out[-1] < 0:
            raise InvalidArgumentError(f"allocate: shape {shape!r} must be non-negative ints")
    return tuple(out)


def dma_array_class() -> Any:
    """The ``DmaArray`` numpy subclass (imports numpy; ``dmamap.DmaArray`` is this)."""
    _numpy()
    return importlib.import_module("dmamap._ndarray").DmaArray


def allocate(dev: Device, shape: int | tuple[int, ...], dtype: Any = "u4", *, coherent: bool = True,
             direction: int = DMA_BIDIRECTIONAL) -> Any:
    """A DMA buffer of ``shape`` and ``dtype`` for ``dev`` as a numpy array
    (:class:`DmaArray`), as PYNQ's ``allocate``: ``coherent=True`` uses
    ``dma_alloc_coherent``; ``coherent=False`` ``dma_alloc_noncoherent`` with
    ``direction``, synced by ``flush()`` / ``invalidate()``.  The array has
    ``device_address`` (the bus address, ``dma_handle``), ``cpu_addr``,
    ``coherent``, ``zero_copy``, ``flush()``, ``invalidate()``, ``free()`` and
    is a context manager.  Zero-copy or shadowed as the module docstring says."""
    np = _numpy()
    cls = dma_array_class()
    dt = np.dtype(dtype)
    shape_t = _dims(shape)
    count = 1
    for d in shape_t:
        count *= d
    nbytes = count * dt.itemsize
    if nbytes == 0:
        raise InvalidArgumentError(f"allocate: shape {shape!r} of {dt} is empty")
    mem = DmaMemory(dev, nbytes, coherent=coherent, direction=direction)
    return cls._wrap(mem, shape_t, dt)
