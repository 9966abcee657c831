"""Mapping strategies as data: one record per strategy the helpers accept.

The helpers (dmamap.dma), the benchmarks and the conformance suite all read
this table instead of comparing strategy names.  ``STRATEGIES`` iterates the
names in their documented order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["Strategy", "STRATEGIES", "FAULT_AROUND_PAGES", "PREFAULT", "FAULT"]

#: Pages a fault-around fault fills (the kernel's fault_around_bytes / PAGE_SIZE).
FAULT_AROUND_PAGES = 16


@dataclass(frozen=True)
class Strategy:
    """How a coherent mapping gets its PTEs."""

    name: str
    #: Fill every PTE at map time (remap_pfn_range) instead of from a fault handler.
    prefault: bool
    #: Use 2 MiB / 1 GiB entries where alignment allows.
    large: bool
    #: PTEs a fault fills (1: only the faulting page).
    fault_around: int
    #: The fault handler returns page descriptors (True), inserts PFNs (False), or
    #: hands out pages for RAM and PFNs otherwise (None).  Prefaulting never uses pages.
    hands_out_pages: bool | None
    description: str

    def uses_pages(self, is_ram: bool) -> bool:
        """Does the fault handler hand out page descriptors for this memory?"""
        return not self.prefault and is_ram and self.hands_out_pages is not False

    def allowed_for(self, is_ram: bool) -> bool:
        """False when the strategy needs page descriptors and the memory has none."""
        return is_ram or self.hands_out_pages is not True

    @property
    def forces_insert_kind(self) -> bool:
        """A small-page fault variant that forces pages or PFNs: it costs what 'fault'
        costs on the memory it suits, so sweeps leave it out."""
        return not self.prefault and not self.large and self.hands_out_pages is not None


_TABLE = (
    Strategy("prefault", True, False, 1, False, "fill every PTE at mmap time (remap_pfn_range)"),
    Strategy("prefault-large", True, True, 1, False, "prefault with 2 MiB / 1 GiB entries where aligned"),
    Strategy("fault", False, False, 1, None,
             "fill on first touch: page descriptors for RAM, PFN inserts otherwise"),
    Strategy("fault-page", False, False, 1, True,
             "fill on first touch, handing out page descriptors (RAM only)"),
    Strategy("fault-pfn", False, False, 1, False, "fill on first touch with PFN inserts (vmf_insert_pfn)"),
    Strategy("fault-around", False, False, FAULT_AROUND_PAGES, None,
             f"fill {FAULT_AROUND_PAGES} pages around each fault (the kernel's fault-around)"),
    Strategy("fault-large", False, True, 1, False, "fill on first touch with 2 MiB PFN entries where aligned"),
)

#: Every strategy the helpers accept, by name, in documented order.
STRATEGIES: Mapping[str, Strategy] = MappingProxyType({s.name: s for s in _TABLE})

#: The two basic strategies: fill everything at map time, or one page per fault.
PREFAULT = STRATEGIES["prefault"]
FAULT = STRATEGIES["fault"]
