"""``dmamap bench``: prefault versus lazy fault, against the store-loop limit and the host kernel.

The sweep maps one coherent buffer per (platform, size) with every strategy,
touches a fraction of its pages in sequential or random order, and times the
map and the touches.  Every figure is set against two references measured in
the same run:

* the limit: ``dmamap_bench_store_loop`` storing as many 8-byte values as the
  strategy wrote PTEs (nothing can fill page tables faster);
* the host kernel: ``dmamap_bench_host_touch`` mapping a memfd of the same size
  with ``MAP_POPULATE`` (prefault) or lazily (one page per write fault, or the
  kernel's own fault-around on read faults) and touching the same pattern.

All touching runs in C (``AddressSpace.touch`` / ``touch_list``: one call per
pattern); the emulated memory behind the buffer and the host memfd both get
their host pages before timing, so neither side pays for the other's
first-touch faults.  Page-table pages are warmed up once per size.
"""

from __future__ import annotations

import array
import importlib.util
import json
import os
import platform as _platform
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import dmamap
from dmamap._ffi import call, ffi, lib, new_err, raise_for
from dmamap.mm import PAGE_SHIFT, PAGE_SIZE

__all__ = [
    "SweepConfig", "Run", "HostRun", "Target", "SweepResult", "FULL", "QUICK", "run_sweep", "measure_targets",
    "crossovers", "render", "to_json", "plot", "bench_command", "parse_size", "fmt_size", "aligned_coherent",
    "populate", "StoreLimit",
]

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
#: Fixed user address of every benchmark mapping: 1 GiB-aligned, inside every ISA's user range
#: (Sv39 users end at 256 GiB).
BASE_VA = 0x20_0000_0000
STRATEGIES = ("prefault", "fault", "fault-around", "prefault-large", "fault-large")
PLATFORMS = ("x86", "arm", "sram", "riscv")
ORDERS = ("seq", "random")
#: Which host-kernel reference each strategy is compared with.
HOST_KIND = {"prefault": "populate", "prefault-large": "populate", "fault": "fault", "fault-large": "fault",
             "fault-around": "fault-around"}
HOST_KINDS = ("populate", "fault", "fault-around")
SRAM_POOL = 192 * MiB   # the most on-bus SRAM the AArch64 layout has room for


# ---- configuration ----

@dataclass(frozen=True)
class SweepConfig:
    """What one ``dmamap bench`` run sweeps."""

    sizes: tuple[int, ...] = (4 * KiB, 64 * KiB, MiB, 16 * MiB, 256 * MiB, GiB)
    densities: tuple[float, ...] = (1.0, 0.1, 0.01)
    orders: tuple[str, ...] = ORDERS
    strategies: tuple[str, ...] = STRATEGIES
    platforms: tuple[str, ...] = PLATFORMS
    repeat: int = 3
    seed: int = 1
    fault_size: int = 64 * MiB     # buffer of the lazy-fault target
    scale_size: int = 16 * GiB     # mapping of the scale target
    scale_ram: int = 64 * GiB


FULL = SweepConfig(repeat=5)
QUICK = SweepConfig(sizes=(4 * KiB, MiB, 64 * MiB), repeat=3, fault_size=16 * MiB)

_UNITS = {"": 1, "B": 1, "K": KiB, "KB": KiB, "KIB": KiB, "M": MiB, "MB": MiB, "MIB": MiB, "G": GiB, "GB": GiB,
          "GIB": GiB}


def parse_size(text: str) -> int:
    """``"4K"``, ``"64KiB"``, ``"1M"``, ``"1G"`` or a byte count; a positive multiple of 4 KiB."""
    t = text.strip().upper()
    num = t.rstrip("KMGIB")
    unit = t[len(num):]
    if not num.isdigit() or unit not in _UNITS:
        raise ValueError(f"bad size {text!r}: use e.g. 4K, 64K, 1M, 16M, 1G")
    size = int(num) * _UNITS[unit]
    if size <= 0 or size % PAGE_SIZE:
        raise ValueError(f"size {text!r} is not a positive multiple of 4 KiB")
    return size


def fmt_size(n: int) -> str:
    for unit, div in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= div and n % div == 0:
            return f"{n // div} {unit}"
    return f"{n} B"


def fmt_ns(ns: float) -> str:
    """A duration with a unit that keeps 3-4 significant digits."""
    if ns < 1e3:
        return f"{ns:.1f} ns" if ns < 100 else f"{ns:.0f} ns"
    if ns < 1e6:
        return f"{ns / 1e3:.1f} µs"
    if ns < 1e9:
        return f"{ns / 1e6:.1f} ms"
    return f"{ns / 1e9:.2f} s"


# ---- results ----

@dataclass
class Run:
    """One (platform, size, density, order, strategy) measurement (best of the repeats)."""

    platform: str
    size: int
    density: float
    order: str
    strategy: str
    pages: int
    touched: int
    map_ns: int
    touch_ns: int
    unmap_ns: int
    faults: int
    ptes: int
    helper_ns: int      # the dma_mmap_coherent call as a driver makes it, Python included
    limit_ns: int       # store loop writing `ptes` 8-byte values
    host_ns: int        # host kernel, same size and pattern (HOST_KIND of the strategy)

    @property
    def total_ns(self) -> int:
        return self.map_ns + self.touch_ns

    @property
    def ns_per_mapped(self) -> float:
        return self.total_ns / self.pages

    @property
    def ns_per_touched(self) -> float:
        return self.total_ns / self.touched

    @property
    def x_limit(self) -> float:
        return self.total_ns / max(self.limit_ns, 1)

    @property
    def x_host(self) -> float:
        return self.total_ns / max(self.host_ns, 1)


@dataclass
class HostRun:
    """The host kernel doing the same: map a memfd of `size` bytes and touch the pattern."""

    size: int
    density: float
    order: str
    kind: str           # populate | fault | fault-around
    map_ns: int
    touch_ns: int
    unmap_ns: int

    @property
    def total_ns(self) -> int:
        return self.map_ns + self.touch_ns


@dataclass
class Target:
    """One performance target of the issue, measured."""

    name: str
    measured: str
    goal: str
    status: str         # PASS | MISS | INFO
    value: float
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class SweepResult:
    config: SweepConfig
    runs: list[Run] = field(default_factory=list)
    host: list[HostRun] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    store_ns_per_pte: float = 0.0
    seconds: float = 0.0


# ---- building blocks (also used by bench/) ----

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


def populate(machine: dmamap.Machine, pfn: int, npages: int) -> None:
    """Give the host pages behind emulated memory their backing, contents unchanged (bench.c)."""
    call(lib.dmamap_bench_populate, machine._ptr(), pfn << PAGE_SHIFT, npages << PAGE_SHIFT)


def aligned_coherent(dev: dmamap.Device, size: int) -> dmamap.DmaBuffer:
    """``dma_alloc_coherent`` whose RAM lands 2 MiB-aligned where the allocator allows, as a
    buddy allocator's naturally aligned blocks would, so that large pages can be used."""
    m = dev.machine
    pads: list[tuple[dmamap.Page, int]] = []
    if size >= 2 * MiB and m.backend is not None and m.backend.coherent_memory != "sram":
        try:
            probe = m.alloc_pages(1)       # the allocator is next-fit: what follows the probe is next
            pads.append((probe, 1))
            pad = (-(probe.pfn + 1)) % 512
            if pad:
                pads.append((m.alloc_pages(pad), pad))
        except dmamap.DmamapError:
            pass
    try:
        return dmamap.dma_alloc_coherent(dev, size)
    finally:
        for page, n in pads:
            m.free_pages(page, n)


def rss_bytes() -> int:
    """Resident set size of this process (anonymous + file + shmem), from /proc."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _touched(pages: int, density: float) -> int:
    return max(1, min(pages, round(pages * density)))


def _c(fn: Callable[..., int], *args: Any) -> None:
    """Call a C entry point directly (no Python wrapper in the timed section); raise as call() does."""
    err = new_err()
    rc = fn(*args, err)
    if rc < 0:
        raise_for(rc, err)


@dataclass
class Pattern:
    """Which pages one run touches: strided (``arr`` None) or an explicit VA list."""

    count: int
    stride: int
    arr: Any = None      # array('Q') of VAs at BASE_VA

    def touch(self, mm: dmamap.AddressSpace) -> None:
        """All the touches in one C call (dmamap_touch / dmamap_touch_list, i.e. AddressSpace.touch[_list])."""
        if self.arr is None:
            _c(lib.dmamap_touch, mm._ptr(), BASE_VA, self.count, self.stride, 0)
        else:
            _c(lib.dmamap_touch_list, mm._ptr(), ffi.from_buffer("uint64_t[]", self.arr), self.count, 0)

    def host(self, fd: int, size: int, populate: bool, write: bool) -> tuple[int, int, int]:
        times = ffi.new("uint64_t[3]")
        vas = ffi.NULL if self.arr is None else ffi.from_buffer("uint64_t[]", self.arr)
        rc = lib.dmamap_bench_host_touch(fd, size, int(populate), vas, BASE_VA, self.count, self.stride,
                                         int(write), times)
        if rc < 0:
            raise OSError(-rc, f"host reference mapping of {fmt_size(size)} failed")
        return int(times[0]), int(times[1]), int(times[2])


def make_pattern(pages: int, density: float, order: str, rng: random.Random) -> Pattern:
    """Touch ``density`` of ``pages``: evenly strided ascending (seq), or a random sample in random order."""
    n = _touched(pages, density)
    if order == "seq":
        return Pattern(n, (pages // n) * PAGE_SIZE)
    picks = rng.sample(range(pages), n)
    return Pattern(n, PAGE_SIZE, array.array("Q", [BASE_VA + (p << PAGE_SHIFT) for p in picks]))


@contextmanager
def bench_machine(platform: str, max_size: int) -> Iterator[tuple[dmamap.Machine, dmamap.Device]]:
    """A machine of ``platform`` with room for a buffer of ``max_size`` bytes, and one device."""
    kw: dict[str, Any] = {"ram": max(2 * max_size + 256 * MiB, 512 * MiB)}
    if platform == "sram":
        kw = {"ram": 256 * MiB, "sram": SRAM_POOL}
    with dmamap.Machine(platform, **kw) as m:
        yield m, m.add_device("bench")


def fits(platform: str, size: int) -> bool:
    return platform != "sram" or size <= SRAM_POOL


# ---- the sweep ----

def _time_run(mm: dmamap.AddressSpace, dev: dmamap.Device, buf: dmamap.DmaBuffer, strategy: str,
              pattern: Pattern) -> tuple[int, int, int, int, int, int]:
    """(map_ns, touch_ns, unmap_ns, faults, ptes, helper_ns) of one map-touch-unmap cycle.

    The buffer is mapped with ``dma_mmap_coherent`` (helper_ns: the whole helper,
    Python included); map_ns then times the helper's C work alone, redone with a
    direct call: the remap_pfn_range of a prefault (after zapping what the helper
    filled), the installation of the built-in fault handler of a lazy strategy.
    The host reference is timed in C too, so the two compare like for like.
    """
    vma = mm.mmap(buf.size, addr=BASE_VA)
    t0 = time.perf_counter_ns()
    dmamap.dma_mmap_coherent(dev, vma, *buf, strategy=strategy)
    helper_ns = time.perf_counter_ns() - t0
    asp, pfn, pages = mm._ptr(), dmamap.dma_coherent_to_pfn(dev, buf.cpu_addr, buf.dma_handle), buf.size >> PAGE_SHIFT
    if strategy.startswith("prefault"):
        dmamap.zap_vma_ptes(vma, BASE_VA, buf.size)
        args: tuple[Any, ...] = (lib.dmamap_remap_pfn_range, asp, vma.id, BASE_VA, pfn, buf.size,
                                 int(vma.vm_page_prot), 1 if strategy == "prefault-large" else 0)
    else:
        chunk = ffi.new("struct dmamap_chunk[1]", [(pfn, pages)])
        args = (lib.dmamap_vma_set_fault, asp, vma.id, int(vma._info().fault_kind), chunk, 1, 0,
                16 if strategy == "fault-around" else 1, int(strategy == "fault-large"))
    s0 = mm.stats
    t0 = time.perf_counter_ns()
    _c(*args)
    t1 = time.perf_counter_ns()
    pattern.touch(mm)
    t2 = time.perf_counter_ns()
    s1 = mm.stats
    dmamap.dma_munmap_coherent(vma)
    t3 = time.perf_counter_ns()
    return t1 - t0, t2 - t1, t3 - t2, s1.faults - s0.faults, s1.ptes_written - s0.ptes_written, helper_ns


def _steps(cfg: SweepConfig) -> int:
    per = len(cfg.densities) * len(cfg.orders)
    runs = sum(per * len(cfg.strategies) for p in cfg.platforms for s in cfg.sizes if fits(p, s))
    return runs + len(cfg.sizes) * per


def run_sweep(cfg: SweepConfig, advance: Callable[[str], None] = lambda _: None) -> SweepResult:
    """Measure every (platform, size, density, order, strategy) and the host references."""
    res = SweepResult(cfg)
    t_start = time.perf_counter()
    limit = StoreLimit(cfg.repeat)
    rng = random.Random(cfg.seed)
    patterns = {(s, d, o): make_pattern(s >> PAGE_SHIFT, d, o, rng)
                for s in cfg.sizes for d in cfg.densities for o in cfg.orders}
    res.store_ns_per_pte = limit.ns(1 << 18) / (1 << 18)

    # host kernel references: platform-independent, one memfd per size
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
                        best = min((pat.host(fd, size, kind == "populate", kind == "fault")
                                    for _ in range(cfg.repeat)), key=lambda t: t[0] + t[1])
                        host[size, d, o, kind] = HostRun(size, d, o, kind, *best)
        finally:
            os.close(fd)
    res.host = list(host.values())

    for plat in cfg.platforms:
        sizes = [s for s in cfg.sizes if fits(plat, s)]
        res.skipped += [f"{plat} {fmt_size(s)}: larger than the platform's {fmt_size(SRAM_POOL)} SRAM pool"
                        for s in cfg.sizes if not fits(plat, s)]
        if not sizes:
            continue
        with bench_machine(plat, max(sizes)) as (m, dev):
            mm = m.new_address_space()
            for size in sizes:
                buf = aligned_coherent(dev, size)
                pfn = dmamap.dma_coherent_to_pfn(dev, buf.cpu_addr, buf.dma_handle)
                populate(m, pfn, size >> PAGE_SHIFT)
                _time_run(mm, dev, buf, "prefault", Pattern(size >> PAGE_SHIFT, PAGE_SIZE))   # warm tables
                for d in cfg.densities:
                    for o in cfg.orders:
                        pat = patterns[size, d, o]
                        for strat in cfg.strategies:
                            advance(f"{plat} {fmt_size(size)} {d:.0%} {o} {strat}")
                            map_ns, touch_ns, unmap_ns, faults, ptes, helper_ns = min(
                                (_time_run(mm, dev, buf, strat, pat) for _ in range(cfg.repeat)),
                                key=lambda t: t[0] + t[1])
                            h = host[size, d, o, HOST_KIND[strat]]
                            res.runs.append(Run(plat, size, d, o, strat, size >> PAGE_SHIFT, pat.count, map_ns,
                                                touch_ns, unmap_ns, faults, ptes, helper_ns, limit_ns=limit.ns(ptes),
                                                host_ns=h.total_ns))
                dmamap.dma_free_coherent(dev, buf.size, buf.cpu_addr, buf.dma_handle)
            mm.close()
    res.seconds = time.perf_counter() - t_start
    return res


# ---- crossover and ranking ----

@dataclass
class Crossover:
    """Where lazy faulting stops being cheaper than prefaulting, for one platform, size and order."""

    platform: str
    size: int
    order: str
    emulated: str       # human-readable crossover of dmamap's "fault" vs "prefault"
    host: str           # same for the host kernel's lazy faults vs MAP_POPULATE
    density: float | None
    host_density: float | None
    agree: int          # densities at which both rank fault vs prefault the same way
    total: int


def _crossover(points: Sequence[tuple[float, float, float]]) -> tuple[str, float | None]:
    """points: (density, fault_ns, prefault_ns).  The density below which fault is cheaper."""
    pts = sorted(points)
    if not pts:
        return "n/a", None
    diff = [(d, f - p) for d, f, p in pts]
    if all(x < 0 for _, x in diff):
        return f"fault cheaper at all (≥{pts[-1][0]:.0%})", None
    if all(x >= 0 for _, x in diff):
        return f"prefault cheaper at all (≥{pts[0][0]:.0%})", None
    for (d1, x1), (d2, x2) in zip(diff, diff[1:], strict=False):
        if x1 < 0 <= x2:   # costs are linear in density: interpolate linearly
            d = d1 + (d2 - d1) * (-x1) / (x2 - x1)
            return f"fault cheaper below ~{d:.1%}", d
    return "mixed", None


def crossovers(res: SweepResult) -> list[Crossover]:
    host = {(h.size, h.density, h.order, h.kind): h for h in res.host}
    runs = {(r.platform, r.size, r.density, r.order, r.strategy): r for r in res.runs}
    out = []
    for plat in res.config.platforms:
        for size in res.config.sizes:
            for order in res.config.orders:
                emu, hst, agree, total = [], [], 0, 0
                for d in res.config.densities:
                    f, p = runs.get((plat, size, d, order, "fault")), runs.get((plat, size, d, order, "prefault"))
                    if f is None or p is None:
                        continue
                    hf, hp = host[size, d, order, "fault"], host[size, d, order, "populate"]
                    emu.append((d, f.total_ns, p.total_ns))
                    hst.append((d, hf.total_ns, hp.total_ns))
                    total += 1
                    agree += (f.total_ns < p.total_ns) == (hf.total_ns < hp.total_ns)
                if not total:
                    continue
                (e_txt, e_d), (h_txt, h_d) = _crossover(emu), _crossover(hst)
                out.append(Crossover(plat, size, order, e_txt, h_txt, e_d, h_d, agree, total))
    return out


# ---- targets ----

def _status(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def target_prefault_1g(repeat: int, limit: StoreLimit) -> list[Target]:
    """1 GiB prefault (one remap_pfn_range of 262,144 PTEs) and 1 GiB clear, per PTE, vs the store loop."""
    n = GiB >> PAGE_SHIFT
    store = limit.ns(n)
    fills: list[int] = []
    zaps: list[int] = []
    unmaps: list[int] = []
    with dmamap.Machine("x86", ram=2 * GiB) as m:
        mm = m.new_address_space()
        prot = dmamap.PgProt.make(m.isa, write=True)
        page = m.alloc_pages(n, align=512)
        for _ in range(max(repeat, 3) + 1):
            vma = mm.mmap(GiB, addr=BASE_VA)
            t0 = time.perf_counter_ns()
            dmamap.remap_pfn_range(vma, vma.start, page.pfn, GiB, prot)
            t1 = time.perf_counter_ns()
            dmamap.zap_vma_ptes(vma, vma.start, GiB)
            t2 = time.perf_counter_ns()
            dmamap.remap_pfn_range(vma, vma.start, page.pfn, GiB, prot)
            t3 = time.perf_counter_ns()
            mm.munmap(vma)
            t4 = time.perf_counter_ns()
            fills += [t1 - t0, t3 - t2]
            zaps.append(t2 - t1)
            unmaps.append(t4 - t3)
        mm.close()
        m.free_pages(page, n)
    cold, warm = fills[0], min(fills[1:])
    ratio = warm / store
    return [
        Target("prefault 1 GiB, one remap_pfn_range call", f"{warm / n:.2f} ns/PTE = {ratio:.1f}× store loop "
               f"({store / n:.2f} ns/PTE); first call {cold / n:.2f} ns/PTE", "≤ 4× store loop per PTE",
               _status(ratio <= 4), ratio, {"ns_per_pte": warm / n, "cold_ns_per_pte": cold / n,
                                            "store_ns_per_pte": store / n}),
        Target("clear 1 GiB (zap_vma_ptes / munmap)", f"zap {min(zaps) / n:.2f}, munmap {min(unmaps) / n:.2f} "
               f"ns/PTE = {min(zaps) / store:.1f}× / {min(unmaps) / store:.1f}× store loop", "reported", "INFO",
               min(zaps) / n, {"zap_ns_per_pte": min(zaps) / n, "munmap_ns_per_pte": min(unmaps) / n}),
    ]


@contextmanager
def _another_thread() -> Iterator[None]:
    """An idle second thread: glibc then makes every mutex operation a locked (atomic) one."""
    done = threading.Event()
    t = threading.Thread(target=done.wait, daemon=True)
    t.start()
    try:
        yield
    finally:
        done.set()
        t.join()


def target_fault(platform: str, size: int, repeat: int, *, threaded: bool = False) -> Target:
    """Lazy fault through the C touch path with a built-in handler: ns per faulting touch."""
    kind = "page descriptors (RAM)" if platform != "sram" else "PFN insert (SRAM)"
    best = float("inf")
    with bench_machine(platform, size) as (m, dev), (_another_thread() if threaded else nullcontext()):
        mm = m.new_address_space()
        buf = aligned_coherent(dev, size)
        populate(m, dmamap.dma_coherent_to_pfn(dev, buf.cpu_addr, buf.dma_handle), size >> PAGE_SHIFT)
        pat = Pattern(size >> PAGE_SHIFT, PAGE_SIZE)
        _time_run(mm, dev, buf, "prefault", pat)
        for _ in range(max(repeat, 10)):   # cheap, and a quiet moment is what we want to catch
            _, touch_ns, _, faults, _, _ = _time_run(mm, dev, buf, "fault", pat)
            best = min(best, touch_ns / max(faults, 1))
        mm.close()
    if threaded:
        return Target(f"lazy fault, built-in {kind} handler ({platform}), another thread in the process",
                      f"{best:.1f} ns/fault: the machine lock taken per fault now costs atomic instructions",
                      "reported", "INFO", best)
    return Target(f"lazy fault, built-in {kind} handler ({platform})", f"{best:.1f} ns/fault "
                  f"({fmt_size(size)}, sequential)", "≤ 30 ns per fault", _status(best <= 30), best)


def target_read32(repeat: int) -> Target:
    """One read32 from Python through a mapping."""
    n = 20000
    with dmamap.Machine("x86", ram=64 * MiB) as m:
        mm = m.new_address_space()
        vma = mm.mmap(PAGE_SIZE)
        dmamap.remap_pfn_range(vma, vma.start, m.alloc_pages().pfn, PAGE_SIZE, vma.vm_page_prot)
        read32, va = mm.read32, vma.start
        best = float("inf")
        for _ in range(max(repeat, 3)):
            t0 = time.perf_counter_ns()
            for _ in range(n):
                read32(va)
            best = min(best, (time.perf_counter_ns() - t0) / n)
    return Target("read32 from Python through a mapping", f"{best:.0f} ns", "< 1 µs", _status(best < 1000), best)


def target_bulk_read(platform: str, repeat: int) -> Target:
    """Bulk read of 1 MiB through a cacheable mapping: x86 WB, or arm NORMAL through the cache model."""
    size = MiB
    with dmamap.Machine(platform, ram=256 * MiB) as m:
        mm = m.new_address_space()
        dev = m.add_device("bench")
        buf = dmamap.dma_alloc_coherent(dev, size)
        pfn = dmamap.dma_coherent_to_pfn(dev, buf.cpu_addr, buf.dma_handle)
        vma = mm.mmap(size)
        cache = m.isa_info.cached
        dmamap.remap_pfn_range(vma, vma.start, pfn, size, dmamap.PgProt.make(m.isa, write=True, cache=cache))
        mm.read(vma.start, size)
        best = float("inf")
        for _ in range(max(repeat, 3) * 5):
            t0 = time.perf_counter_ns()
            mm.read(vma.start, size)
            best = min(best, time.perf_counter_ns() - t0)
    gbs = size / best
    via = "write-back, no cache model (DMA snoops)" if platform == "x86" else "modelled write-back cache"
    return Target(f"bulk read 1 MiB, cacheable {cache} ({platform}: {via})", f"{gbs:.2f} GB/s", "≥ 2 GB/s",
                  _status(gbs >= 2), gbs)


def target_scale(size: int, ram: int) -> list[Target]:
    """A ``size`` prefault on a machine with ``ram`` of emulated RAM: RSS growth and page-table memory."""
    npages = size >> PAGE_SHIFT
    with dmamap.Machine("x86", ram=ram) as m:
        dev = m.add_device("bench")
        mm = m.new_address_space()
        rss0, tables0 = rss_bytes(), m.stats.table_pages
        t0 = time.perf_counter_ns()
        buf = dmamap.dma_alloc_coherent(dev, size)
        vma = mm.mmap(size)
        t1 = time.perf_counter_ns()
        dmamap.dma_mmap_coherent(dev, vma, *buf, strategy="prefault")
        t2 = time.perf_counter_ns()
        rss1 = rss_bytes()
        ptes = mm.stats.ptes_written
        table_bytes = (m.stats.table_pages - tables0) * PAGE_SIZE
        dmamap.dma_munmap_coherent(vma)
        dmamap.dma_free_coherent(dev, buf.size, buf.cpu_addr, buf.dma_handle)
        mm.close()
    grew = rss1 - rss0
    desc_bytes = 16 * npages          # page descriptors the allocation initialised
    allowed = table_bytes + desc_bytes + 64 * MiB
    per_pte = table_bytes / ptes
    return [
        Target(f"scale: {fmt_size(size)} prefault on {fmt_size(ram)} of emulated RAM",
               f"RSS +{grew / MiB:.0f} MiB (page tables {table_bytes / MiB:.0f} MiB, descriptors "
               f"{desc_bytes / MiB:.0f} MiB; data {fmt_size(size)} not committed); prefault "
               f"{(t2 - t1) / 1e6:.0f} ms, alloc {(t1 - t0) / 1e6:.0f} ms",
               "no host memory for untouched data", _status(grew <= allowed), grew,
               {"rss_growth": grew, "table_bytes": table_bytes, "descriptor_bytes": desc_bytes}),
        Target("scale: page-table memory per PTE", f"{per_pte:.3f} bytes ({ptes} PTEs)", "close to 8 bytes",
               _status(8 <= per_pte <= 8.1), per_pte),
    ]


def target_ranking(cross: list[Crossover]) -> Target:
    agree = sum(c.agree for c in cross)
    total = sum(c.total for c in cross)
    sizes_same = sorted({c.size for c in cross if c.agree == c.total} - {c.size for c in cross if c.agree != c.total})
    return Target("prefault vs fault rank as on the host kernel", f"{agree}/{total} (platform, size, density, "
                  f"order) points; sizes agreeing everywhere: {', '.join(fmt_size(s) for s in sizes_same) or 'none'}",
                  "stated per size", "INFO", agree / max(total, 1))


def measure_targets(cfg: SweepConfig, advance: Callable[[str], None] = lambda _: None) -> list[Target]:
    limit = StoreLimit(cfg.repeat)
    out: list[Target] = []
    advance("target: 1 GiB prefault and clear")
    out += target_prefault_1g(cfg.repeat, limit)
    for plat in ("x86", "sram"):
        advance(f"target: lazy fault ({plat})")
        out.append(target_fault(plat, min(cfg.fault_size, SRAM_POOL) if plat == "sram" else cfg.fault_size,
                                cfg.repeat))
    advance("target: lazy fault (x86, threaded)")
    out.append(target_fault("x86", cfg.fault_size, cfg.repeat, threaded=True))
    advance("target: read32")
    out.append(target_read32(cfg.repeat))
    for plat in ("x86", "arm"):
        advance(f"target: bulk read ({plat})")
        out.append(target_bulk_read(plat, cfg.repeat))
    advance(f"target: {fmt_size(cfg.scale_size)} scale")
    out += target_scale(cfg.scale_size, cfg.scale_ram)
    return out


TARGET_STEPS = 8


# ---- output ----

_STATUS_STYLE = {"PASS": "bold green", "MISS": "bold red", "INFO": "cyan"}


def render(console: Console, res: SweepResult) -> None:
    """The sweep table per platform, the crossover summary and the targets."""
    host = {(h.size, h.density, h.order, h.kind): h for h in res.host}
    for plat in res.config.platforms:
        runs = [r for r in res.runs if r.platform == plat]
        if not runs:
            continue
        t = Table(title=f"dmamap bench — {plat}: map + touch, best of {res.config.repeat}", title_justify="left")
        for col, just in (("size", "right"), ("touched", "right"), ("order", "left"), ("strategy", "left"),
                          ("ns/mapped pg", "right"), ("ns/touched pg", "right"), ("total", "right"),
                          ("× limit", "right"), ("× host", "right"), ("faults", "right"), ("PTEs", "right")):
            t.add_column(col, justify=just)  # type: ignore[arg-type]
        groups: dict[tuple[int, float, str], list[Run]] = {}
        for r in runs:
            groups.setdefault((r.size, r.density, r.order), []).append(r)
        for (size, d, order), rs in groups.items():
            cheapest = min(rs, key=lambda r: r.total_ns)
            by = {r.strategy: r for r in rs}
            f, p = by.get("fault"), by.get("prefault")
            for i, r in enumerate(rs):
                mark = " ◀" if r is cheapest else ""
                if r.strategy in ("fault", "prefault") and f and p:
                    winner = f if f.total_ns < p.total_ns else p
                    mark += " ✓" if r is winner else ""
                t.add_row(fmt_size(size) if i == 0 else "", f"{d:.0%}" if i == 0 else "", order if i == 0 else "",
                          r.strategy, f"{r.ns_per_mapped:.1f}", f"{r.ns_per_touched:.1f}", fmt_ns(r.total_ns) + mark,
                          f"{r.x_limit:.1f}", f"{r.x_host:.2f}", str(r.faults), str(r.ptes),
                          end_section=i == len(rs) - 1)
            hp, hf, ha = (host[size, d, order, k] for k in HOST_KINDS)
            t.add_row("", "", "", "[dim]host kernel[/dim]", "", "",
                      f"[dim]populate {fmt_ns(hp.total_ns)}, fault {fmt_ns(hf.total_ns)}, "
                      f"fault-around {fmt_ns(ha.total_ns)}[/dim]", "", "", "", "", end_section=True)
        console.print(t)
    console.print("[dim]◀ cheapest strategy of the group; ✓ cheaper of fault / prefault.  × limit: total over the "
                  "store loop writing as many 8-byte PTEs; × host: total over the host kernel mapping a memfd of "
                  "the same size with the same touch pattern (MAP_POPULATE for prefault, write faults for fault, "
                  "read faults with the kernel's fault-around for fault-around).[/dim]")
    cross = crossovers(res)
    if cross:
        ct = Table(title="crossover: where lazy faulting (one page per fault) stops beating prefault",
                   title_justify="left")
        for col in ("platform", "size", "order", "dmamap", "host kernel", "ranks as host"):
            ct.add_column(col)
        for c in cross:
            same = "[green]yes[/green]" if c.agree == c.total else f"[yellow]no ({c.total - c.agree}/{c.total} " \
                                                                   f"densities differ)[/yellow]"
            ct.add_row(c.platform, fmt_size(c.size), c.order, c.emulated, c.host, same)
        console.print(ct)
    for s in res.skipped:
        console.print(f"[dim]skipped: {s}[/dim]")
    if res.targets:
        tt = Table(title="targets", title_justify="left")
        for col in ("target", "measured", "goal", ""):
            tt.add_column(col)
        for tg in res.targets:
            tt.add_row(tg.name, tg.measured, tg.goal, f"[{_STATUS_STYLE[tg.status]}]{tg.status}[/]")
        console.print(tt)
    console.print(f"[dim]store loop (limit): {res.store_ns_per_pte:.3f} ns per 8-byte PTE; sweep took "
                  f"{res.seconds:.1f} s[/dim]")


def to_json(res: SweepResult) -> dict[str, Any]:
    """Everything measured, with the derived ratios, as plain JSON data."""
    def run(r: Run) -> dict[str, Any]:
        d = asdict(r)
        d.update(total_ns=r.total_ns, ns_per_mapped_page=r.ns_per_mapped, ns_per_touched_page=r.ns_per_touched,
                 x_limit=r.x_limit, x_host=r.x_host, host_kind=HOST_KIND[r.strategy])
        return d

    return {
        "meta": {"dmamap": dmamap.__version__, "python": _platform.python_version(), "machine": _platform.machine(),
                 "kernel": _platform.release(), "cpus": os.cpu_count(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                 "base_va": BASE_VA, "seconds": res.seconds},
        "config": asdict(res.config),
        "store_loop_ns_per_pte": res.store_ns_per_pte,
        "runs": [run(r) for r in res.runs],
        "host": [dict(asdict(h), total_ns=h.total_ns) for h in res.host],
        "crossover": [asdict(c) for c in crossovers(res)],
        "skipped": res.skipped,
        "targets": [asdict(t) for t in res.targets],
    }


def _check_matplotlib() -> None:
    """Fail early when --plot cannot work, without importing matplotlib (and numpy, whose
    BLAS thread would make the process multi-threaded) before the measurements."""
    try:
        found = importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise RuntimeError("--plot needs matplotlib: python -m pip install 'dmamap[plot]'")


def _require_matplotlib() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError("--plot needs matplotlib: python -m pip install 'dmamap[plot]'") from exc
    return plt


def plot(res: SweepResult, path: str) -> None:
    """Cost per mapped page against touch density, one panel per (platform, size), a line per strategy."""
    plt = _require_matplotlib()
    plats = [p for p in res.config.platforms if any(r.platform == p for r in res.runs)]
    sizes = list(res.config.sizes)
    fig, axes = plt.subplots(len(plats), len(sizes), figsize=(3.2 * len(sizes), 2.8 * len(plats)), squeeze=False,
                             sharex=True)
    colors = dict(zip(STRATEGIES, ("tab:blue", "tab:red", "tab:orange", "tab:green", "tab:purple"), strict=True))
    for i, plat in enumerate(plats):
        for j, size in enumerate(sizes):
            ax = axes[i][j]
            ax.set_title(f"{plat}, {fmt_size(size)}", fontsize=9)
            if not any(r.platform == plat and r.size == size for r in res.runs):
                ax.text(0.5, 0.5, "not run\n(see skipped)", ha="center", va="center", transform=ax.transAxes)
                ax.set_axis_off()   # not set_xticks: the x axis is shared
                continue
            ax.set_xscale("log")
            ax.set_yscale("log")
            for order, style in (("seq", "-"), ("random", "--")):
                for strat in res.config.strategies:
                    pts = sorted((r.density, r.ns_per_mapped) for r in res.runs
                                 if (r.platform, r.size, r.order, r.strategy) == (plat, size, order, strat))
                    if pts:
                        ax.plot(*zip(*pts, strict=True), style, marker="o", ms=3, color=colors.get(strat),
                                label=f"{strat} ({order})")
                for kind, c in (("populate", "black"), ("fault", "grey")):
                    pts = sorted((h.density, h.total_ns / (size >> PAGE_SHIFT)) for h in res.host
                                 if (h.size, h.order, h.kind) == (size, order, kind))
                    if pts:
                        ax.plot(*zip(*pts, strict=True), style, color=c, lw=1, label=f"host {kind} ({order})")
            if i == len(plats) - 1:
                ax.set_xlabel("touched fraction of pages")
            if j == 0:
                ax.set_ylabel("ns per mapped page")
            ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=6, fontsize=7)
    fig.suptitle("dmamap: map + touch cost against touch density (solid: sequential, dashed: random)")
    fig.tight_layout(rect=(0, 0.08, 1, 0.97))
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ---- the command ----

def _pick(values: list[str] | None, allowed: Sequence[str], what: str) -> tuple[str, ...] | None:
    if not values:
        return None
    bad = [v for v in values if v not in allowed]
    if bad:
        raise typer.BadParameter(f"unknown {what} {', '.join(bad)}; choose from {', '.join(allowed)}")
    return tuple(dict.fromkeys(values))


def bench_command(
    quick: Annotated[bool, typer.Option("--quick", help="Small preset (4 KiB, 1 MiB, 64 MiB; one repeat): "
                                                        "well under 30 s.")] = False,
    platforms: Annotated[list[str] | None, typer.Option("--platform", "-p",
                                                           help="Platforms (default x86, arm, sram, riscv).")] = None,
    sizes: Annotated[list[str] | None, typer.Option("--size", "-s",
                                                       help="Buffer sizes, e.g. 4K 64K 1M 16M 256M 1G.")] = None,
    densities: Annotated[list[float] | None, typer.Option("--density", "-d",
                                                             help="Touched fraction of pages, 0 < d ≤ 1.")] = None,
    orders: Annotated[list[str] | None, typer.Option("--order", help="seq and/or random.")] = None,
    strategies: Annotated[list[str] | None, typer.Option("--strategy",
                                                            help=f"Strategies: {', '.join(STRATEGIES)}.")] = None,
    repeat: Annotated[int | None, typer.Option(min=1, help="Repeats per point (best is kept).")] = None,
    targets: Annotated[bool, typer.Option(help="Measure the issue's targets too.")] = True,
    json_file: Annotated[str | None, typer.Option("--json", help="Write all results to this JSON file.")] = None,
    plot_file: Annotated[str | None, typer.Option("--plot", help="Draw cost against density (PNG).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random touch orders.")] = 1,
) -> None:
    """Prefault versus lazy fault across sizes, densities and orders, against the store-loop limit and the host
    kernel."""
    console = Console()
    if plot_file:
        try:
            _check_matplotlib()
        except RuntimeError as exc:
            Console(stderr=True).print(f"[red]error:[/red] {escape(str(exc))}")
            raise typer.Exit(2) from None
    base = QUICK if quick else FULL
    try:
        size_list = tuple(parse_size(s) for s in sizes) if sizes else base.sizes
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--size") from None
    if densities and any(not 0 < d <= 1 for d in densities):
        raise typer.BadParameter("densities must be in (0, 1]", param_hint="--density")
    cfg = SweepConfig(
        sizes=tuple(sorted(set(size_list))),
        densities=tuple(sorted(set(densities), reverse=True)) if densities else base.densities,
        orders=_pick(orders, ORDERS, "order") or base.orders,
        strategies=_pick(strategies, STRATEGIES, "strategy") or base.strategies,
        platforms=_pick(platforms, PLATFORMS, "platform") or base.platforms,
        repeat=repeat or base.repeat, seed=seed, fault_size=base.fault_size, scale_size=base.scale_size,
        scale_ram=base.scale_ram,
    )
    columns = (TextColumn("[progress.description]{task.description:<40}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    # No auto-refresh: a rendering thread running during the timed C calls would skew them.
    with Progress(*columns, console=console, transient=True, auto_refresh=False) as progress:
        task = progress.add_task("starting", total=_steps(cfg) + (TARGET_STEPS if targets else 0))

        def advance(what: str) -> None:
            progress.update(task, description=what, advance=1)
            progress.refresh()

        res = run_sweep(cfg, advance)
        if targets:
            res.targets = measure_targets(cfg, advance) + [target_ranking(crossovers(res))]
    render(console, res)
    if json_file:
        with open(json_file, "w") as f:
            json.dump(to_json(res), f, indent=1)
        console.print(f"results written to {json_file}")
    if plot_file:
        plot(res, plot_file)
        console.print(f"plot written to {plot_file}")
