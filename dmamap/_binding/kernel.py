"""Bindings of the kernel-side helpers' C entry points (csrc/insert_pages.c)."""

from __future__ import annotations

from typing import Any

from dmamap._binding import call, lib, u64_array

__all__ = ["vm_insert_pages"]


def vm_insert_pages(p: Any, vid: int, addr: int, pfns: list[int]) -> None:
    """Insert the RAM pages ``pfns`` at consecutive addresses from ``addr``, all or nothing."""
    arr = u64_array(pfns)
    call(lib.dmamap_vm_insert_pages, p, vid, addr, arr, len(pfns))
