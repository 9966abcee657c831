"""A seeded multi-threaded soak: six threads mixing every helper, faults, DMA,
address-space closes, device hot-removes and, at the end of each epoch, a
machine close racing them all.

Each thread keeps a model of every buffer it owns (the bytes it last wrote
through the CPU or the device) and of every mapping of it; after each epoch
the contents of every live mapping, the RAM/SRAM/MMIO/I/O-window counters and
the page tables are checked against the model.  Any exception an operation
may not raise is an invariant violation.

``DMAMAP_SOAK_SECONDS`` (default 4) and ``DMAMAP_SOAK_SEED`` (default 1) set
the length and the seed; ``DMAMAP_SOAK_REPORT`` names a JSON file for the
figures (operations, errors by kind, violations).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import dmamap
from dmamap import (
    PAGE_SIZE,
    DmaLeakError,
    DmamapError,
    MachineClosedError,
    OutOfMemoryError,
    dma_alloc_coherent,
    dma_alloc_coherent_sg,
    dma_free_coherent,
    dma_free_coherent_sg,
    dma_mmap_coherent,
    dma_mmap_coherent_sg,
    pio_map,
)

P = PAGE_SIZE
THREADS = 6
SECONDS = float(os.environ.get("DMAMAP_SOAK_SECONDS", "4"))
SEED = int(os.environ.get("DMAMAP_SOAK_SEED", "1"))
EPOCH_SECONDS = 2.0
PLATFORMS = ("x86", "arm", "sram")
STRATEGIES = {"x86": ["prefault", "fault", "fault-around", "fault-page"],
              "arm": ["prefault", "fault", "fault-around", "fault-pfn"],
              "sram": ["prefault", "fault", "fault-pfn"]}


class Violation(AssertionError):
    """Something the model says cannot happen."""


@dataclass
class Mapping:
    mm: dmamap.AddressSpace
    vma: dmamap.Vma
    first: int   # first buffer page mapped at vma.start
    pages: int


@dataclass
class Buf:
    dev: dmamap.Device
    handle: Any                  # DmaBuffer or SgTable
    data: bytearray              # the model: what the buffer holds
    maps: list[Mapping] = field(default_factory=list)

    @property
    def sg(self) -> bool:
        return isinstance(self.handle, dmamap.SgTable)

    def dma_addr(self, off: int) -> int:
        if not self.sg:
            return int(self.handle.dma_handle) + off
        e, page = self.handle.locate(off // P)
        return int(e.dma_handle) + page * P + off % P


@dataclass
class Stats:
    ops: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def merge(self, ops: Counter[str], errors: Counter[str], violations: list[str]) -> None:
        with self.lock:
            self.ops.update(ops)
            self.errors.update(errors)
            self.violations.extend(violations)


class Epoch:
    """One machine and the threads working on it until it is closed."""

    def __init__(self, platform: str, seed: int, stats: Stats) -> None:
        self.platform = platform
        self.m = dmamap.Machine(platform, ram=64 << 20)
        self.seed = seed
        self.stats = stats
        self.shared_lock = threading.Lock()
        self.shared = self.m.new_address_space()
        self.stop = threading.Event()
        self.closing = threading.Event()
        self.workers = [Worker(self, k, random.Random(seed * 1000 + k)) for k in range(THREADS)]

    def shared_space(self) -> dmamap.AddressSpace:
        with self.shared_lock:
            return self.shared

    def replace_shared(self, old: dmamap.AddressSpace) -> None:
        """Close the shared address space under every other thread's feet."""
        with self.shared_lock:
            if self.shared is not old:
                return
            self.shared = self.m.new_address_space()
        old.close()


class Worker:
    def __init__(self, epoch: Epoch, k: int, rng: random.Random) -> None:
        self.e = epoch
        self.k = k
        self.rng = rng
        self.gen = 0
        self.dev = self._new_device()
        self.own = epoch.m.new_address_space()
        self.bufs: list[Buf] = []
        self.pios: list[tuple[dmamap.AddressSpace, dmamap.Vma, int]] = []
        self.ops: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.violations: list[str] = []
        self.regs = bytearray(8)

    def _new_device(self) -> dmamap.Device:
        self.gen += 1
        regs = bytearray(8)
        return self.e.m.add_device(
            f"w{self.k}.{self.gen}", bars=[P],
            ports=[dmamap.PortRange(0x100 + 8 * self.k, 8, read=lambda o, s: int.from_bytes(regs[o:o + s], "little"),
                                    write=lambda o, s, v: regs.__setitem__(slice(o, o + s), v.to_bytes(s, "little")))])

    # ---- helpers ----
    def space(self) -> dmamap.AddressSpace:
        return self.e.shared_space() if self.rng.random() < 0.5 else self.own

    def live_maps(self, b: Buf) -> list[Mapping]:
        b.maps = [mp for mp in b.maps if not mp.mm.closed and mp.vma.live]
        return b.maps

    def check_range(self, b: Buf, off: int, n: int, got: bytes, how: str) -> None:
        if got != bytes(b.data[off:off + n]):
            raise Violation(f"{self.e.platform}: {how} of buffer bytes [{off:#x}, +{n:#x}) differs from the model")

    # ---- operations ----
    def op_alloc(self) -> None:
        if len(self.bufs) >= 6:
            return self.op_free()
        pages = self.rng.randint(1, 24)
        if self.rng.random() < 0.3:
            h: Any = dma_alloc_coherent_sg(self.dev, pages * P, max_chunk_pages=4, seed=self.rng.randrange(1 << 30))
        else:
            h = dma_alloc_coherent(self.dev, pages * P)
        b = Buf(self.dev, h, bytearray(pages * P))
        self.bufs.append(b)
        got = self.dev.dma_read(b.dma_addr(0), min(P, len(b.data)))
        self.check_range(b, 0, min(P, len(b.data)), got, "a fresh buffer (must be zeroed)")

    def op_map(self) -> None:
        if not self.bufs:
            return self.op_alloc()
        b = self.rng.choice(self.bufs)
        total = len(b.data) // P
        first = self.rng.randrange(total)
        pages = self.rng.randint(1, total - first)
        mm = self.space()
        strat = self.rng.choice(STRATEGIES[self.e.platform])
        vma = mm.mmap(pages * P, offset=first * P)   # the helpers map from vma.vm_pgoff
        try:
            if b.sg:
                dma_mmap_coherent_sg(b.dev, vma, b.handle, nr_pages=pages, strategy=strat)
            else:
                dma_mmap_coherent(b.dev, vma, b.handle.cpu_addr, b.handle.dma_handle, b.handle.size,
                                  strategy=strat)
        except BaseException:
            if not mm.closed:
                mm.munmap(vma)
            raise
        b.maps.append(Mapping(mm, vma, first, pages))

    def op_cpu_write(self) -> None:
        cands = [(b, mp) for b in self.bufs for mp in self.live_maps(b)]
        if not cands:
            return self.op_map()
        b, mp = self.rng.choice(cands)
        off = self.rng.randrange(mp.pages * P)
        n = min(self.rng.randint(1, 256), mp.pages * P - off)
        data = self.rng.randbytes(n)
        mp.mm.write(mp.vma.start + off, data)
        b.data[mp.first * P + off:mp.first * P + off + n] = data
        got = b.dev.dma_read(b.dma_addr(mp.first * P + off), n) if not b.sg or n <= P - (off % P) else None
        if got is not None:
            self.check_range(b, mp.first * P + off, n, got, "a device read after a CPU write")

    def op_dma_write(self) -> None:
        if not self.bufs:
            return self.op_alloc()
        b = self.rng.choice(self.bufs)
        off = self.rng.randrange(len(b.data))
        n = min(self.rng.randint(1, 256), P - off % P, len(b.data) - off)
        data = self.rng.randbytes(n)
        b.dev.dma_write(b.dma_addr(off), data)
        b.data[off:off + n] = data
        for mp in self.live_maps(b):
            lo, hi = mp.first * P, (mp.first + mp.pages) * P
            if lo <= off and off + n <= hi:
                self.check_range(b, off, n, mp.mm.read(mp.vma.start + off - lo, n), "a CPU read after a DMA write")

    def op_check(self) -> None:
        for b in self.bufs:
            for mp in self.live_maps(b):
                self.check_range(b, mp.first * P, mp.pages * P, mp.mm.read(mp.vma.start, mp.pages * P),
                                 "a CPU read of a whole mapping")

    def op_unmap(self) -> None:
        cands = [(b, mp) for b in self.bufs for mp in self.live_maps(b)]
        if not cands:
            return
        b, mp = self.rng.choice(cands)
        dmamap.dma_munmap_coherent(mp.vma)
        b.maps.remove(mp)

    def op_free(self) -> None:
        if not self.bufs:
            return
        b = self.rng.choice(self.bufs)
        for mp in self.live_maps(b):
            dmamap.dma_munmap_coherent(mp.vma)
        if b.sg:
            dma_free_coherent_sg(b.dev, b.handle)
        else:
            dma_free_coherent(b.dev, b.handle.size, b.handle.cpu_addr, b.handle.dma_handle)
        self.bufs.remove(b)

    def op_io(self) -> None:
        mm = self.space()
        v = mm.mmap(P)
        try:
            if self.rng.random() < 0.5:
                pio_map(v, 0x100 + 8 * self.k, 8)
                val = self.rng.randrange(1 << 32)
                mm.write32(v.start + 4, val)
                if mm.read32(v.start + 4) != val:
                    raise Violation(f"{self.e.platform}: port register read back wrong")
            else:
                dmamap.mmio_map(v, self.dev.bar(0)[0], P)
                val = self.rng.randrange(1 << 64)
                mm.write64(v.start + 8, val)
                if mm.read64(v.start + 8) != val:
                    raise Violation(f"{self.e.platform}: MMIO register read back wrong")
        finally:
            if not mm.closed and v.live:
                mm.munmap(v)

    def op_close_space(self) -> None:
        if self.rng.random() < 0.5:
            self.e.replace_shared(self.e.shared_space())
        else:
            old, self.own = self.own, self.e.m.new_address_space()
            old.close()

    def op_hot_remove(self) -> None:
        try:
            self.dev.remove()
            leaked = bool(self.bufs)
        except DmaLeakError:
            leaked = False
            self.errors["DmaLeakError (expected)"] += 1
            while self.bufs:
                self.op_free()
            self.dev.remove()
        self.dev = self._new_device()
        if leaked:
            raise Violation("a device with live buffers was removed without DmaLeakError")

    OPS = [("alloc", 4), ("map", 5), ("cpu_write", 6), ("dma_write", 6), ("check", 1), ("unmap", 3),
           ("free", 3), ("io", 3), ("close_space", 1), ("hot_remove", 1)]

    def run(self) -> None:
        names = [n for n, _ in self.OPS]
        weights = [w for _, w in self.OPS]
        try:
            while not self.e.stop.is_set():
                name = self.rng.choices(names, weights)[0]
                self.ops[name] += 1
                try:
                    getattr(self, f"op_{name}")()
                except MachineClosedError:
                    if self.e.closing.is_set():
                        self.errors["MachineClosedError (machine close)"] += 1
                        return
                    self.errors["MachineClosedError (space closed)"] += 1
                except OutOfMemoryError:
                    self.errors["OutOfMemoryError"] += 1
                except Violation as exc:
                    self.violations.append(str(exc))
                except DmamapError as exc:
                    if self.e.closing.is_set() and self.e.m.closed:
                        self.violations.append(f"{name} racing the machine close raised {type(exc).__name__}: "
                                               f"{exc}")
                        return
                    self.violations.append(f"{name} raised {type(exc).__name__}: {exc}")
        except BaseException as exc:  # noqa: BLE001 - a raw exception is a violation too
            self.violations.append(f"raw {type(exc).__name__}: {exc}")
        finally:
            self.e.stats.merge(self.ops, self.errors, self.violations)


def check_epoch(e: Epoch) -> list[str]:
    """After the threads stopped: contents, counters and pools against the model."""
    out: list[str] = []
    m = e.m
    ram_pages = 0
    sram_bytes = 0
    for w in e.workers:
        for b in w.bufs:
            pages = len(b.data) // P
            if e.platform == "sram":
                sram_bytes += pages * P
            else:
                ram_pages += pages
            for mp in w.live_maps(b):
                got = mp.mm.read(mp.vma.start, mp.pages * P)
                if got != bytes(b.data[mp.first * P:(mp.first + mp.pages) * P]):
                    out.append(f"{e.platform}: a live mapping's contents differ from the model")
    st = m.stats
    if st.ram_pages_used != st.table_pages + ram_pages:
        out.append(f"{e.platform}: {st.ram_pages_used} RAM pages used, expected {st.table_pages} table pages + "
                   f"{ram_pages} buffer pages")
    if m.sram_pool.avail != m.sram_size - sram_bytes:
        out.append(f"{e.platform}: SRAM pool has {m.sram_pool.avail:#x} free, expected "
                   f"{m.sram_size - sram_bytes:#x}")
    if m.io_window.avail != m.io_window.size:
        out.append(f"{e.platform}: I/O window slots leaked")
    bars = sum(len(d.bars) for d in m.devices.values())
    if m.mmio_window.avail != m.mmio_window.size - bars * P:
        out.append(f"{e.platform}: MMIO window space leaked")
    return out


def soak(seconds: float, seed: int) -> Stats:
    stats = Stats()
    deadline = time.monotonic() + seconds
    epoch = 0
    while time.monotonic() < deadline or epoch == 0:
        platform = PLATFORMS[epoch % len(PLATFORMS)]
        e = Epoch(platform, seed + epoch, stats)
        threads = [threading.Thread(target=w.run) for w in e.workers]
        for t in threads:
            t.start()
        time.sleep(min(EPOCH_SECONDS, max(0.2, deadline - time.monotonic())))
        e.stop.set()
        for t in threads:
            t.join(60)
        if any(t.is_alive() for t in threads):
            stats.violations.append(f"{platform}: a worker hung")
            break
        stats.violations.extend(check_epoch(e))
        # Then the machine close, racing a second wave of the same threads.
        e.stop.clear()
        threads = [threading.Thread(target=w.run) for w in e.workers]
        for t in threads:
            t.start()
        time.sleep(0.05)
        e.closing.set()
        e.m.close()
        for t in threads:
            t.join(5)   # they stop at their next call
        e.stop.set()
        for t in threads:
            t.join(60)
        if any(t.is_alive() for t in threads):
            stats.violations.append(f"{platform}: a worker hung after the machine close")
            break
        stats.ops["machine close"] += 1
        epoch += 1
    return stats


def test_soak() -> None:
    stats = soak(SECONDS, SEED)
    report = {"seconds": SECONDS, "seed": SEED, "operations": sum(stats.ops.values()), "ops": dict(stats.ops),
              "errors": dict(stats.errors), "violations": len(stats.violations)}
    path = os.environ.get("DMAMAP_SOAK_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump({**report, "violation_messages": stats.violations[:50]}, f, indent=2)
    assert not stats.violations, "\n".join(stats.violations[:20])
    assert stats.ops["machine close"] >= 1 and sum(stats.ops.values()) > 100, report
