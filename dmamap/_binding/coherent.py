"""Bindings of the coherent-mapping hot path (csrc/dma_mmap.c): the VMA facts
dma_mmap_coherent checks, read in one call, and its prefault in one call."""

from __future__ import annotations

import threading
from typing import Any

from dmamap._binding import call, ffi, lib

__all__ = ["vma_facts", "dma_mmap_prefault", "chunk_array"]

_local = threading.local()


def vma_facts(p: Any, vid: int) -> tuple[int, int, int, int]:
    """(start, end, page_prot, pgoff) of VMA ``vid``: one dmamap_vma_info call, no record built."""
    info = getattr(_local, "info", None)
    if info is None:
        info = _local.info = ffi.new("struct dmamap_vma_info *")
    call(lib.dmamap_vma_info, p, vid, info)
    return info.start, info.end, info.page_prot, info.pgoff


def chunk_array(runs: list[tuple[int, int]]) -> Any:
    """A ``struct dmamap_chunk[]`` of ``(pfn, npages)`` runs, to be kept and passed again."""
    arr = ffi.new("struct dmamap_chunk[]", max(len(runs), 1))
    for i, (pfn, n) in enumerate(runs):
        arr[i].pfn, arr[i].npages = pfn, n
    return arr


def dma_mmap_prefault(p: Any, vid: int, chunks: Any, nchunks: int, first_page: int, nr_pages: int, prot: int,
                      flags: int) -> None:
    """Set the VMA's protection and remap the chunk window from its start, all or nothing."""
    call(lib.dmamap_dma_mmap_prefault, p, vid, chunks, nchunks, first_page, nr_pages, prot, flags)
