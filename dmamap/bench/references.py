"""The two references every figure is set against, measured in the same run:

* the limit: ``dmamap_bench_store_loop`` storing as many 8-byte values as the
  strategy wrote PTEs (nothing can fill page tables faster), :class:`StoreLimit`;
* the host kernel: ``dmamap_bench_host_touch`` mapping a memfd of the same size
  with ``MAP_POPULATE`` (prefault) or lazily (one page per write fault, or the
  kernel's own fault-around on read faults) and touching the same pattern,
  :func:`measure_host`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from dmamap._ffi import ffi, lib
from dmamap.bench.config import BASE_VA, SweepConfig, fmt_size
from dmamap.bench.harness import Pattern
from dmamap.bench.results import HostRun
from dmamap.strategy import STRATEGIES

__all__ = ["StoreLimit", "HOST_KINDS", "host_kind", "host_touch", "measure_host", "rss_bytes"]

HOST_KINDS = ("populate", "fault", "fault-around")


def host_kind(strategy: str) -> str:
    """Which host-kernel reference a strategy is compared with."""
    rec = STRATEGIES[strategy]
    return "populate" if rec.prefault else "fault-around" if rec.fault_around > 1 else "fault"


class StoreLimit:
    """The store-loop reference: best time to store n PTE-like values, cached by n."""

    def __init__(self, repeat: int = 3) -> None:
        self.repeat = max(repeat, 3)
        self._buf: Any = None
        self._cache: dict[int, int] = {}

    def ns(self, n: int) -> int:
        n = max(int(n), 1)
        if n not in self._cache:
            if self._buf is None or len(self._buf) < n:
                self._buf = ffi.new("uint64_t[]", max(n, 1 << 18))
                lib.dmamap_bench_store_loop(self._buf, len(self._buf), 0x63)   # commit and warm it
            self._cache[n] = min(int(lib.dmamap_bench_store_loop(self._buf, n, 0x63)) for _ in range(self.repeat))
        return self._cache[n]


def host_touch(pattern: Pattern, fd: int, size: int, populate: bool, write: bool) -> tuple[int, int, int]:
    """(map_ns, touch_ns, unmap_ns) of the host kernel mapping ``fd`` and touching ``pattern``."""
    times = ffi.new("uint64_t[3]")
    vas = ffi.NULL if pattern.arr is None else ffi.from_buffer("uint64_t[]", pattern.arr)
    rc = lib.dmamap_bench_host_touch(fd, size, int(populate), vas, BASE_VA, pattern.count, pattern.stride,
                                     int(write), times)
    if rc < 0:
        raise OSError(-rc, f"host reference mapping of {fmt_size(size)} failed")
    return int(times[0]), int(times[1]), int(times[2])


def measure_host(cfg: SweepConfig, patterns: dict[tuple[int, float, str], Pattern],
                 advance: Callable[[str], None]) -> dict[tuple[int, float, str, str], HostRun]:
    """The host-kernel reference of every (size, density, order, kind): platform-independent,
    one memfd per size, best of ``cfg.repeat``."""
    host: dict[tuple[int, float, str, str], HostRun] = {}
    for size in cfg.sizes:
        fd = lib.dmamap_bench_host_memfd(size)
        if fd < 0:
            raise OSError(-fd, f"cannot create a {fmt_size(size)} memfd for the host reference")
        try:
            for d in cfg.densities:
                for o in cfg.orders:
                    advance(f"host {fmt_size(size)} {d:.0%} {o}")
                    pat = patterns[size, d, o]
                    for kind in HOST_KINDS:
                        best = min((host_touch(pat, fd, size, kind == "populate", kind == "fault")
                                    for _ in range(cfg.repeat)), key=lambda t: t[0] + t[1])
                        host[size, d, o, kind] = HostRun(size, d, o, kind, *best)
        finally:
            os.close(fd)
    return host


def rss_bytes() -> int:
    """Resident set size of this process (anonymous + file + shmem), from /proc."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
