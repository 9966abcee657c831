"""set_memory_uc / set_memory_wc / set_memory_wb (arch/x86/mm/pat/set_memory.c):
give direct-mapped RAM pages another memory type by reserving it, so that every
later mapping of those pages (remap, PFN or page insert, fault) is checked
against it as against the coherent allocator's alias."""

from __future__ import annotations

from dmamap._check import PAGE_SHIFT, PAGE_SIZE, u64
from dmamap.errors import InvalidArgumentError
from dmamap.machine import Machine, resolve_machine


def _range(addr: int, numpages: int, machine: Machine | None, what: str) -> tuple[Machine, int, int]:
    m = resolve_machine(addr, machine)
    addr, numpages = u64("addr", addr), u64("numpages", numpages)
    if addr % PAGE_SIZE:
        raise InvalidArgumentError(f"{what}: addr {addr:#x} is not page-aligned", addr)
    if numpages == 0:
        raise InvalidArgumentError(f"{what}: numpages is zero", addr)
    pa = m.virt_to_phys(addr)   # VirtToPageError unless direct-mapped RAM
    m.virt_to_phys(addr + (numpages << PAGE_SHIFT) - 1)
    return m, pa, numpages << PAGE_SHIFT


def _set(addr: int, numpages: int, machine: Machine | None, cache: str, what: str) -> None:
    m, pa, size = _range(addr, numpages, machine, what)
    m.memtype_reserve(pa, size, cache)   # MemtypeConflictError if already another type
    m.flush_dcache_range(pa, size)   # cpa_flush: no cached line of the old type survives


def set_memory_uc(addr: int, numpages: int, *, machine: Machine | None = None) -> None:
    """Make ``numpages`` direct-mapped pages at ``addr`` uncached (x86 UC-,
    AArch64 DEVICE_nGnRnE, RISC-V IO): reserves that memory type."""
    m = resolve_machine(addr, machine)
    _set(addr, numpages, m, m.isa_info.noncached, "set_memory_uc")


def set_memory_wc(addr: int, numpages: int, *, machine: Machine | None = None) -> None:
    """Make ``numpages`` direct-mapped pages at ``addr`` write-combining: reserves that memory type."""
    m = resolve_machine(addr, machine)
    _set(addr, numpages, m, m.isa_info.writecombine, "set_memory_wc")


def set_memory_wb(addr: int, numpages: int, *, machine: Machine | None = None) -> None:
    """Return pages set by set_memory_uc/wc to write-back: releases the reservation
    (memtype_free); InvalidArgumentError when the range was not set."""
    m, pa, size = _range(addr, numpages, machine, "set_memory_wb")
    cache = m.memtype_lookup(pa)
    if cache is None or cache == m.isa_info.cached:
        raise InvalidArgumentError(f"set_memory_wb: [{pa:#x}, {pa + size:#x}) has no memory type set", addr)
    m.memtype_free(pa, size, cache)
