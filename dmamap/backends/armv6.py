"""An ARMv6-era SoC: as ``arm`` (non-coherent DMA, coherent buffers remapped
uncached), with a VIPT aliasing data cache (32 KiB 4-way: two page colours).
A kernel page shared with user space through a differently coloured mapping
is stale until flush_dcache_page (:mod:`dmamap.vipt`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dmamap.backends.arm import ArmBackend
from dmamap.vipt import set_vipt

if TYPE_CHECKING:
    from dmamap.machine import Machine


class ArmV6Backend(ArmBackend):
    name = "armv6"
    description = "AArch64 page tables, non-coherent DMA, VIPT aliasing data cache (two page colours)"

    def setup(self, machine: Machine) -> None:
        super().setup(machine)
        set_vipt(machine)
