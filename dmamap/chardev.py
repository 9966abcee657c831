"""A character device a driver exposes to user space (struct file with
file_operations.mmap): user space mmaps it at an offset, and the driver's
``mmap(file, vma)`` maps what that offset names (``vma.vm_pgoff``), as ALSA
dispatches SNDRV_PCM_MMAP_OFFSET_DATA / STATUS / CONTROL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dmamap.device import Device
from dmamap.errors import InvalidArgumentError
from dmamap.mm import AddressSpace, Vma

MmapFn = Callable[["DeviceFile", Vma], None]

__all__ = ["DeviceFile"]


class DeviceFile:
    """An open device node: ``DeviceFile(dev, mmap=driver_mmap)``; ``private_data``
    is the driver's, as ``file->private_data``."""

    def __init__(self, dev: Device, *, mmap: MmapFn, name: str | None = None, private_data: Any = None) -> None:
        if not isinstance(dev, Device):
            raise TypeError(f"expected a Device, got {type(dev).__name__}")
        if not callable(mmap):
            raise TypeError("mmap must be callable as mmap(file, vma)")
        self.dev = dev
        self.name = name if name is not None else f"/dev/{dev.name}"
        self.private_data = private_data
        self._mmap = mmap

    def mmap(self, mm: AddressSpace, length: int, *, offset: int = 0, prot: str = "rw",
             shared: bool = True) -> Vma:
        """mmap(2) of this file: a new VMA with ``vm_pgoff = offset >> PAGE_SHIFT``
        and ``vm_file`` set, handed to the driver's mmap; if the driver raises,
        the VMA is unmapped again (mmap_region) and the error propagates."""
        if not isinstance(mm, AddressSpace):
            raise TypeError(f"expected an AddressSpace, got {type(mm).__name__}")
        if mm.machine is not self.dev.machine:
            raise InvalidArgumentError(f"{self.name}: the address space belongs to another machine")
        vma = mm.mmap(length, offset=offset, prot=prot, shared=shared)
        vma.vm_file = self
        try:
            self._mmap(self, vma)
        except BaseException:
            if vma.live:
                mm.munmap(vma)
            raise
        return vma

    def __repr__(self) -> str:
        return f"<DeviceFile {self.name}>"
