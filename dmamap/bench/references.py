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

from dmamap._binding import bench as cbench
from dmamap._binding import u64_array
from dmamap.bench.config import BASE_VA, MiB, SweepConfig, fmt_size
from dmamap.bench.harness import Pattern, patterns_of
from dmamap.bench.results import HostRun
from dmamap.bench.spread import spread
from dmamap.mm import PAGE_SHIFT, PAGE_SIZE
from dmamap.strategy import STRATEGIES

__all__ = ["StoreLimit", "HOST_KINDS", "HOST_LABELS", "host_kind", "host_sample", "HostSample", "measure_host",
           "rss_bytes", "fault_around_bytes", "host_facts", "HostUnavailable", "host_events",
           "host_phase_events", "host_table_faults", "CONTESTED_FACTOR", "VERDICT_PAIR", "contested"]

HOST_KINDS = ("populate", "populate-write", "store-touch", "read-touch")
#: The order the kinds are interleaved in, as in calibration (dmamap.bench.calibrate): at one page
#: fault and prefault differ by a few per cent, as much as what ran just before can change.
MEASURE_ORDER = ("populate", "store-touch", "read-touch", "populate-write")
HOST_LABELS = {
    "populate": "mmap(MAP_POPULATE)",
    "populate-write": "madvise(MADV_POPULATE_WRITE)",
    "store-touch": "lazy; store first: 1 page/fault",
    "read-touch": "lazy; load first: fault-around",
}
_FLAGS = {
    "populate": cbench.HOST["MAP_POPULATE"] | cbench.HOST["TOUCH_READ"],
    "populate-write": cbench.HOST["MADV_POPULATE"] | cbench.HOST["TOUCH_READ"],
    "store-touch": cbench.HOST["LAZY"] | cbench.HOST["TOUCH_STORE"],
    "read-touch": cbench.HOST["LAZY"] | cbench.HOST["TOUCH_READ"],
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
                self._buf = cbench.u64_buffer(max(n, 1 << 18))
                cbench.store_loop(self._buf, len(self._buf), 0x63)   # commit and warm it
            self._cache[n] = min(cbench.store_loop(self._buf, n, 0x63) for _ in range(self.repeat))
        return self._cache[n]

    def time(self, n: int) -> int:
        """One timing of n stores now (uncached; ``ns`` first, for the buffer)."""
        return int(cbench.store_loop(self._buf, max(int(n), 1), 0x63))


@dataclass
class HostSample:
    """One host reference run: times (ns) and the kernel's own minor-fault counts.

    ``map_ns``, ``touch_ns`` and ``unmap_ns`` are CPU time of the measuring thread (user +
    system: a fault's kernel work is system time), the figures that decide: time the thread
    spends preempted by other processes does not count, so the verdicts hold on a loaded
    machine.  The ``wall_*`` figures are the same phases on the monotonic clock, kept beside."""

    map_ns: int
    touch_ns: int
    unmap_ns: int
    map_faults: int
    touch_faults: int
    wall_map_ns: int = 0
    wall_touch_ns: int = 0
    wall_unmap_ns: int = 0

    @property
    def total_ns(self) -> int:
        return self.map_ns + self.touch_ns

    @property
    def wall_ns(self) -> int:
        return self.wall_map_ns + self.wall_touch_ns


def host_sample(pattern: Pattern | None, fd: int, size: int, kind: str, *, anon: bool = False,
                thp: bool = False) -> HostSample:
    """Run one host reference of ``kind`` over ``fd`` (or anonymous memory) touching ``pattern``."""
    flags = _FLAGS[kind] | (cbench.HOST["ANON"] if anon else 0) | (cbench.HOST["THP"] if thp else 0)
    if pattern is None:
        flags &= ~cbench.HOST["TOUCH_MASK"]
        vas, count, stride = None, 0, PAGE_SIZE
    else:
        vas = None if pattern.arr is None else u64_array(pattern.arr)
        count, stride = pattern.count, pattern.stride
    rc, out = cbench.host_ref(fd, size, flags, vas, BASE_VA, count, stride)
    if rc < 0:
        if out[6]:
            raise HostUnavailable(-rc, f"{kind}: MADV_POPULATE_WRITE unavailable (Linux < 5.14)")
        raise OSError(-rc, f"host reference {kind} of {fmt_size(size)}: {os.strerror(-rc)}")
    return HostSample(int(out[7]), int(out[8]), int(out[9]), int(out[3]), int(out[4]),
                      int(out[0]), int(out[1]), int(out[2]))


_FA: dict[str, int] = {}


def fault_around_bytes() -> int:
    """The host's fault-around window, measured once (pages one read fault maps)."""
    if "fa" not in _FA:
        fd = cbench.host_memfd(4 * MiB)   # room for a 2 MiB-aligned probe: the window is aligned in VA
        try:
            _FA["fa"] = max(cbench.host_fault_around(fd, 4 * MiB), PAGE_SIZE) if fd >= 0 else PAGE_SIZE
        finally:
            if fd >= 0:
                os.close(fd)
    return _FA["fa"]


def _pages(pattern: Pattern) -> list[int]:
    if pattern.arr is None:
        return [i * pattern.stride >> PAGE_SHIFT for i in range(pattern.count)]
    return [(va - BASE_VA) >> PAGE_SHIFT for va in pattern.arr]


def host_phase_events(kind: str, size: int, pattern: Pattern | None, faults: float,
                      ) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """The events of one host reference run in the model's terms, per phase (map, touch, unmap):
    what dmamap counts for the strategy compared with that reference (prefault for the populate
    kinds, fault for store-touch, fault-around for read-touch), ``faults`` being the kernel's own
    count of faults taken by the touches."""
    pages = size >> PAGE_SHIFT
    touched = pattern.count if pattern else 0
    mapped: dict[str, float] = {"map_call": 1}
    touch: dict[str, float] = {"tlb_miss": touched}
    if kind in ("populate", "populate-write"):
        mapped.update(fill_call=1, pte_write=pages)
        ptes = pages
    elif kind == "store-touch":
        touch.update(fault=faults, pte_write=touched)
        ptes = touched
    else:
        fa = fault_around_bytes() >> PAGE_SHIFT
        windows = sorted({p // fa for p in _pages(pattern)}) if pattern else []
        ptes = sum(min(fa, pages - w * fa) for w in windows)
        touch.update(fault=faults, pte_write=faults, around_pte=max(ptes - faults, 0))
    return mapped, touch, {"unmap_call": 1, "pte_clear": ptes}


def host_table_faults(kind: str, pattern: Pattern | None) -> int:
    """The ``table_fault`` events of a host run's touch phase, beside :func:`host_phase_events`'
    per-page ones: a lazy reference's touches allocate one PTE table per 2 MiB region they fall
    in (a prefault's tables are part of its fill)."""
    return pattern.regions() if pattern and kind in ("store-touch", "read-touch") else 0


def host_events(kind: str, size: int, pattern: Pattern | None, faults: float) -> tuple[dict[str, float],
                                                                                      dict[str, float]]:
    """:func:`host_phase_events` with the map and touch phases added up: (map + touch, unmap)."""
    mapped, touch, unmap = host_phase_events(kind, size, pattern, faults)
    both = dict(mapped)
    for k, v in touch.items():
        both[k] = both.get(k, 0) + v
    return both, unmap


#: Where the host's fault and prefault spreads overlap after ``repeat`` rounds, the point is
#: measured again up to this many times ``repeat`` rounds in all (see :func:`measure_host`).
CONTESTED_FACTOR = 4
#: The pair whose verdict the model is judged by (fault against prefault).
VERDICT_PAIR = ("store-touch", "populate")


def contested(samples: dict[str, list[HostSample]]) -> bool:
    """Do the verdict pair's samples overlap at all (the slowest of one reaches the fastest of
    the other)?  A few samples' quartiles move with every sample, so a point is decided on few
    samples only where the two are wholly apart.  False when either has no samples."""
    f, p = (samples.get(k) or [] for k in VERDICT_PAIR)
    if not f or not p:
        return False
    sf, sp = spread([s.total_ns for s in f]), spread([s.total_ns for s in p])
    return not (sf.hi < sp.lo or sp.hi < sf.lo)


def _rounds(n: int, pat: Pattern, fd: int, size: int, samples: dict[str, list[HostSample]],
            unavailable: dict[str, str]) -> None:
    """``n`` rounds of one sample of every kind (interleaved), into ``samples``."""
    for _ in range(n):
        for k in samples:
            if k in unavailable:
                continue
            try:
                samples[k].append(host_sample(pat, fd, size, k))
            except HostUnavailable as exc:
                unavailable[k] = str(exc)


def measure_host(cfg: SweepConfig, patterns: dict[tuple[int, float, str], Pattern],
                 advance: Callable[[str], None], kinds: Sequence[str] = HOST_KINDS,
                 into: dict[tuple[int, float, str, str], HostRun] | None = None,
                 ) -> dict[tuple[int, float, str, str], HostRun]:
    """The host-kernel references of every (size, density, order, kind): platform-independent,
    one memfd per size (a first round over it dropped: the first runs in a fresh memfd and
    process are slower), ``cfg.repeat`` rounds interleaved across the kinds.  Where fault
    (store-touch) and prefault (MAP_POPULATE) overlap after them (:func:`contested`), the point
    takes more rounds, ``CONTESTED_FACTOR * cfg.repeat`` in all, and is decided once at the end
    (not stopped at the first round that happens to separate them, which would favour declaring
    winners): more rounds steady the quartiles, they do not narrow them.  A kind the host
    refuses is recorded as unavailable."""
    host = {} if into is None else into
    for size in cfg.sizes:
        fd = cbench.host_memfd(size)
        if fd < 0:
            raise OSError(-fd, f"cannot create a {fmt_size(size)} memfd for the host reference")
        try:
            points = patterns_of(patterns, size)
            _rounds(1, points[0][2], fd, size, {k: [] for k in kinds}, {})   # warm-up, dropped
            for d, o, pat in points:
                advance(f"host {fmt_size(size)} {d:.0%} {o}")
                samples: dict[str, list[HostSample]] = {
                    k: [] for k in sorted(kinds, key=lambda k: MEASURE_ORDER.index(k) if k in MEASURE_ORDER else 9)}
                unavailable: dict[str, str] = {}
                _rounds(cfg.repeat, pat, fd, size, samples, unavailable)
                if contested(samples):
                    _rounds((CONTESTED_FACTOR - 1) * cfg.repeat, pat, fd, size, samples, unavailable)
                for k in kinds:
                    ss = samples[k]
                    if not ss:
                        host[size, d, o, k] = HostRun(size, d, o, k, unavailable=unavailable.get(k, "failed"))
                        continue
                    faults = sorted(s.touch_faults for s in ss)[len(ss) // 2]
                    _, un = host_events(k, size, pat, faults)
                    host[size, d, o, k] = HostRun(
                        size, d, o, k, total=spread([s.total_ns for s in ss]),
                        map=spread([s.map_ns for s in ss]), touch=spread([s.touch_ns for s in ss]),
                        unmap=spread([s.unmap_ns for s in ss]), map_faults=sorted(s.map_faults for s in ss)[
                            len(ss) // 2], faults=faults, ptes=int(un["pte_clear"]), touched=pat.count,
                        wall=spread([s.wall_ns for s in ss]))
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
        fd = cbench.host_memfd(PAGE_SIZE * 16)
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
