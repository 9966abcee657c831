"""The aliasing cache option: a VIPT data cache whose way is larger than a
page (32 KiB 4-way: 8 KiB ways, two page colours), as on ARMv6-era cores.
Two virtual aliases of one physical page with different colours occupy
different cache sets, so a store through one is invisible through the other
until the line is written back and the other dropped (``flush_dcache_page``),
or unless both aliases have the same colour (SHMLBA-aligned mappings)."""

from __future__ import annotations

from dmamap._binding import phys
from dmamap._check import PAGE_SHIFT, PAGE_SIZE
from dmamap.errors import InvalidArgumentError
from dmamap.physmem import Page, PhysicalMemory

__all__ = ["set_vipt", "cache_colours", "page_colour", "flush_dcache_page", "SHMLBA"]

#: Linux arm's SHMLBA: mappings aligned to it have the same colour on any VIPT cache up to 16 KiB ways.
SHMLBA = 4 * PAGE_SIZE


def set_vipt(machine: PhysicalMemory, vipt: bool = True) -> None:
    """Index ``machine``'s data cache by virtual address (tags stay physical)."""
    if not isinstance(machine, PhysicalMemory):
        raise TypeError(f"expected a Machine, got {type(machine).__name__}")
    if machine.dma_coherent:
        raise InvalidArgumentError(f"machine {machine.name} snoops DMA and has no cache model to index virtually")
    phys.machine_set_vipt(machine._ptr(), vipt)
    machine.__dict__["vipt"] = bool(vipt)


def cache_colours(machine: PhysicalMemory) -> int:
    """How many page colours the cache has (1: no aliasing)."""
    if not machine.__dict__.get("vipt"):
        return 1
    way = machine.cache_size // max(machine.cache_ways, 1)
    return max(way // PAGE_SIZE, 1)


def page_colour(machine: PhysicalMemory, va: int) -> int:
    """The colour of virtual address ``va`` (the index bits above the page offset)."""
    return (va >> PAGE_SHIFT) & (cache_colours(machine) - 1)


def flush_dcache_page(page: Page) -> None:
    """Write back and drop every cached alias of ``page`` (kernel's
    flush_dcache_page), so any other mapping of it reads what was written."""
    if not isinstance(page, Page):
        raise TypeError(f"expected a Page, got {type(page).__name__}")
    page.machine.flush_dcache_range(page.phys_addr, PAGE_SIZE)
