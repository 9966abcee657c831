"""Helpers of the pytest-benchmark suite (imported by the bench_*.py files and conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import dmamap
from dmamap.bench import BASE_VA, aligned_coherent, bench_machine, populate
from dmamap.mm import PAGE_SHIFT

GiB = 1 << 30
MiB = 1 << 20


class Timed:
    """Best wall time of the timed calls, for figures per PTE / fault / byte in extra_info."""

    def __init__(self) -> None:
        self.best = float("inf")

    def __call__(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            t0 = time.perf_counter_ns()
            out = fn()
            self.best = min(self.best, time.perf_counter_ns() - t0)
            return out
        return run




def rounds(benchmark: Any, enabled: int) -> int:
    """Rounds for pedantic runs: one when benchmarks are disabled (the smoke run)."""
    return 1 if benchmark.disabled else enabled


class Mapped:
    """A populated coherent buffer of one platform and an address space to map it into at BASE_VA."""

    def __init__(self, platform: str, size: int) -> None:
        self._cm = bench_machine(platform, size)
        self.machine, self.dev = self._cm.__enter__()
        self.mm = self.machine.new_address_space()
        self.buf = aligned_coherent(self.dev, size)
        self.pages = size >> PAGE_SHIFT
        populate(self.machine, dmamap.dma_coherent_to_pfn(self.dev, self.buf.cpu_addr, self.buf.dma_handle),
                 self.pages)
        self.vma: dmamap.Vma | None = None

    def map(self, strategy: str) -> dmamap.Vma:
        """Unmap the previous mapping, map the buffer afresh with ``strategy``."""
        self.unmap()
        self.vma = self.mm.mmap(self.buf.size, addr=BASE_VA)
        dmamap.dma_mmap_coherent(self.dev, self.vma, *self.buf, strategy=strategy)
        return self.vma

    def unmap(self) -> None:
        if self.vma is not None:
            dmamap.dma_munmap_coherent(self.vma)
            self.vma = None

    def close(self) -> None:
        self.unmap()
        self._cm.__exit__(None, None, None)
