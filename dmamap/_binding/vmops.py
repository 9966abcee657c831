"""Bindings of the C entry points behind the vm_operations callbacks: huge
faults (csrc/huge.c), write-notify for page_mkwrite, and VMA merging."""

from __future__ import annotations

from typing import Any

from dmamap._binding import call, lib

__all__ = ["vmf_insert_pfn_pmd", "pmd_none", "vma_set_wrnotify", "vma_merge"]


def vmf_insert_pfn_pmd(p: Any, vid: int, addr: int, pfn: int, write: bool) -> None:
    """One 2 MiB special block at the PMD of ``addr`` (nothing if the PMD is not none)."""
    call(lib.dmamap_vmf_insert_pfn_pmd, p, vid, addr, pfn, int(write))


def pmd_none(p: Any, va: int) -> bool:
    """Whether the PMD entry of ``va`` is none (neither a block nor a table)."""
    return call(lib.dmamap_pmd_none, p, va) == 1


def vma_set_wrnotify(p: Any, vid: int, on: bool) -> None:
    """Turn write-notify (page_mkwrite on the first write to each PTE) on or off."""
    call(lib.dmamap_vma_set_wrnotify, p, vid, int(on))


def vma_merge(p: Any, a: int, b: int) -> None:
    """Merge VMA ``b`` into the adjacent VMA ``a`` before it (InvalidArgumentError if they may not)."""
    call(lib.dmamap_vma_merge, p, a, b)
