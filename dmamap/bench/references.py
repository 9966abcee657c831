"""The references every figure is set against, measured in the same run:

* the limit: ``dmamap_bench_store_loop`` storing as many 8-byte values as the
  strategy wrote PTEs (nothing can fill page tables faster), :class:`StoreLimit`;
* the host kernel (``dmamap_bench_host_ref``, csrc/bench.c) mapping a memfd of
  the same size and touching the same pages, each labelled with what it
  measures and with the kernel's own fault count (``getrusage`` ru_minflt):

  - ``populate``: ``mmap(MAP_POPULATE)`` then loads (the kernel fills the
    tables itself, in fault-around batches on a shared mapping);
  - ``populate-write``: ``madvise(MADV_POPULATE_WRITE)`` (Linux ≥ 5.14; one
    write fault per page, taken inside the kernel), then loads;
  - ``store-touch``: lazy, first touch a store: one page per fault;
  - ``read-touch``: lazy, first touch a load: a read fault maps the
    fault-around window (64 KiB by default) of page-cache pages.

:func:`host_facts` adds what the host can do with 2 MiB pages (anonymous THP).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dmamap._ffi import ffi, lib
from dmamap.bench.config import BASE_VA, MiB, SweepConfig, fmt_size
from dmamap.bench.harness import Pattern
from dmamap.bench.results import HostRun
from dmamap.bench.spread import spread
from dmamap.mm import PAGE_SHIFT, PAGE_SIZE
from dmamap.strategy import STRATEGIES

__all__ = ["StoreLimit", "HOST_KINDS", "HOST_LABELS", "host_kind", "host_sample", "HostSample", "measure_host",
           "rss_bytes", "fault_around_bytes", "host_facts", "HostUnavailable", "host_events"]

HOST_KINDS = ("populate", "populate-write", "store-touch", "read-touch")
HOST_LABELS = {
    "populate": "mmap(MAP_POPULATE)",
    "populate-write": "madvise(MADV_POPULATE_WRITE)",
    "store-touch": "lazy; store first: 1 page/fault",
    "read-touch": "lazy; load first: fault-around",
}
_FLAGS = {
    "populate": lib.DMAMAP_HOST_MAP_POPULATE | lib.DMAMAP_HOST_TOUCH_READ,
    "populate-write": lib.DMAMAP_HOST_MADV_POPULATE | lib.DMAMAP_HOST_TOUCH_READ,
    "store-touch": lib.DMAMAP_HOST_LAZY | lib.DMAMAP_HOST_TOUCH_STORE,
    "read-touch": lib.DMAMAP_HOST_LAZY | lib.DMAMAP_HOST_TOUCH_READ,
}


class HostUnavailable(OSError):
    """The host kernel refused a reference (e.g. MADV_POPULATE_WRITE before Linux 5.14)."""


def host_kind(strategy: str) -> str:
    """Which host-kernel reference a strategy is compared with (large-page strategies with the
    4 KiB one: the host's shmem cannot use huge pages unless shmem_enabled allows it)."""
    rec = STRATEGIES[strategy]
    return "populate" if rec.prefault else "read-touch" if rec.fault_around > 1 else "store-touch"


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


@dataclass
class HostSample:
    """One host reference run: times (ns) and the kernel's own minor-fault counts."""

    map_ns: int
    touch_ns: int
    unmap_ns: int
    map_faults: int
    touch_faults: int

    @property
    def total_ns(self) -> int:
        return self.map_ns + self.touch_ns


def host_sample(pattern: Pattern | None, fd: int, size: int, kind: str, *, anon: bool = False,
                thp: bool = False) -> HostSample:
    """Run one host reference of ``kind`` over ``fd`` (or anonymous memory) touching ``pattern``."""
    out = ffi.new("uint64_t[7]")
    flags = _FLAGS[kind] | (lib.DMAMAP_HOST_ANON if anon else 0) | (lib.DMAMAP_HOST_THP if thp else 0)
    if pattern is None:
        flags &= ~lib.DMAMAP_HOST_TOUCH_MASK
        vas, count, stride = ffi.NULL, 0, PAGE_SIZE
    else:
        vas = ffi.NULL if pattern.arr is None else ffi.from_buffer("uint64_t[]", pattern.arr)
        count, stride = pattern.count, pattern.stride
    rc = lib.dmamap_bench_host_ref(fd, size, flags, vas, BASE_VA, count, stride, out)
    if rc < 0:
        if out[6]:
            raise HostUnavailable(-rc, f"{kind}: MADV_POPULATE_WRITE unavailable (Linux < 5.14)")
        raise OSError(-rc, f"host reference {kind} of {fmt_size(size)}: {os.strerror(-rc)}")
    return HostSample(int(out[0]), int(out[1]), int(out[2]), int(out[3]), int(out[4]))


_FA: dict[str, int] = {}


def fault_around_bytes() -> int:
    """The host's fault-around window, measured once (pages one read fault maps)."""
    if "fa" not in _FA:
        fd = lib.dmamap_bench_host_memfd(2 * MiB)
        try:
            _FA["fa"] = max(int(lib.dmamap_bench_host_fault_around(fd, 2 * MiB)), PAGE_SIZE) if fd >= 0 else PAGE_SIZE
        finally:
            if fd >= 0:
                os.close(fd)
    return _FA["fa"]


def _pages(pattern: Pattern) -> list[int]:
    if pattern.arr is None:
        return [i * pattern.stride >> PAGE_SHIFT for i in range(pattern.count)]
    return [(va - BASE_VA) >> PAGE_SHIFT for va in pattern.arr]


def host_events(kind: str, size: int, pattern: Pattern | None, faults: float) -> tuple[dict[str, float],
                                                                                      dict[str, float]]:
    """The events a host reference run consists of, in the model's terms (map + touch, unmap):
    ``faults`` is the kernel's own count of faults taken by the touches."""
    pages = size >> PAGE_SHIFT
    touched = pattern.count if pattern else 0
    if kind in ("populate", "populate-write"):
        ptes = pages
    elif kind == "store-touch":
        ptes = touched
    else:
        fa = fault_around_bytes() >> PAGE_SHIFT
        ptes = min(pages, len({p // fa for p in _pages(pattern)}) * fa) if pattern else 0
    return ({"map_call": 1, "pte_write": ptes, "fault": faults, "tlb_miss": touched},
            {"unmap_call": 1, "pte_clear": ptes})


def measure_host(cfg: SweepConfig, patterns: dict[tuple[int, float, str], Pattern],
                 advance: Callable[[str], None], kinds: Sequence[str] = HOST_KINDS,
                 into: dict[tuple[int, float, str, str], HostRun] | None = None,
                 ) -> dict[tuple[int, float, str, str], HostRun]:
    """The host-kernel references of every (size, density, order, kind): platform-independent,
    one memfd per size, ``cfg.repeat`` runs interleaved across the kinds.  A kind the host
    refuses is recorded as unavailable."""
    host = {} if into is None else into
    for size in cfg.sizes:
        fd = lib.dmamap_bench_host_memfd(size)
        if fd < 0:
            raise OSError(-fd, f"cannot create a {fmt_size(size)} memfd for the host reference")
        try:
            for d in cfg.densities:
                for o in cfg.orders:
                    advance(f"host {fmt_size(size)} {d:.0%} {o}")
                    pat = patterns[size, d, o]
                    samples: dict[str, list[HostSample]] = {k: [] for k in kinds}
                    unavailable: dict[str, str] = {}
                    for _ in range(cfg.repeat):
                        for k in kinds:
                            if k in unavailable:
                                continue
                            try:
                                samples[k].append(host_sample(pat, fd, size, k))
                            except HostUnavailable as exc:
                                unavailable[k] = str(exc)
                    for k in kinds:
                        ss = samples[k]
                        if not ss:
                            host[size, d, o, k] = HostRun(size, d, o, k, unavailable=unavailable.get(k, "failed"))
                            continue
                        faults = sorted(s.touch_faults for s in ss)[len(ss) // 2]
                        ev, un = host_events(k, size, pat, faults)
                        host[size, d, o, k] = HostRun(
                            size, d, o, k, total=spread([s.total_ns for s in ss]),
                            map=spread([s.map_ns for s in ss]), touch=spread([s.touch_ns for s in ss]),
                            unmap=spread([s.unmap_ns for s in ss]), map_faults=sorted(s.map_faults for s in ss)[
                                len(ss) // 2], faults=faults, ptes=int(ev["pte_write"]), touched=pat.count)
        finally:
            os.close(fd)
    return host


def host_facts(size: int = 64 * MiB, repeat: int = 3) -> dict[str, Any]:
    """What the host does with 2 MiB pages: anonymous memory with MADV_NOHUGEPAGE against
    MADV_HUGEPAGE, first touch a store on every page (faults and time; both include zeroing
    the new pages), and whether THP is enabled at all."""
    facts: dict[str, Any] = {"fault_around_bytes": fault_around_bytes()}
    for name in ("enabled", "shmem_enabled"):
        try:
            with open(f"/sys/kernel/mm/transparent_hugepage/{name}") as f:
                txt = f.read().strip()
            facts[f"thp_{name}"] = txt[txt.index("[") + 1:txt.index("]")] if "[" in txt else txt
        except (OSError, ValueError):
            facts[f"thp_{name}"] = "absent"
    pat = Pattern(size >> PAGE_SHIFT, PAGE_SIZE)
    for label, thp in (("anon_4k", False), ("anon_thp", True)):
        try:
            ss = [host_sample(pat, -1, size, "store-touch", anon=True, thp=thp) for _ in range(repeat)]
        except OSError as exc:
            facts[label] = {"error": str(exc)}
            continue
        best = min(ss, key=lambda s: s.total_ns)
        facts[label] = {"size": size, "faults": best.touch_faults, "ns": best.total_ns}
    try:
        fd = lib.dmamap_bench_host_memfd(PAGE_SIZE * 16)
        host_sample(None, fd, PAGE_SIZE * 16, "populate-write")
        facts["madv_populate_write"] = True
    except HostUnavailable:
        facts["madv_populate_write"] = False
    finally:
        if fd >= 0:
            os.close(fd)
    a, t = facts.get("anon_4k", {}), facts.get("anon_thp", {})
    if a.get("faults") and t.get("faults"):
        facts["thp_fault_drop"] = a["faults"] / t["faults"]
    return facts


def rss_bytes() -> int:
    """Resident set size of this process (anonymous + file + shmem), from /proc."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
