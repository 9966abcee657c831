"""Concurrency: many threads on one machine at once.

Threads fault the same and different pages of shared VMAs (a C fault handler
and a Python one), others map, fill, check and unmap their own VMAs of the same
address space (coherent DMA buffers, so the device sees what the CPU wrote), and
devices run DMA and register accesses all the while.  Afterwards the raw page
tables hold exactly the right PTEs (none duplicated, none lost, none outside a
live VMA), page descriptors and counters add up to what the threads did, and
nothing deadlocked (every join has a timeout).  Each scenario runs a few times.
"""

from __future__ import annotations

import random
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

import dmamap
from dmamap import PAGE_SIZE, DmamapError
from dmamap.testing import pagetable
from dmamap.testing.pagetable import table_pages, walk

ROUNDS = 3
JOIN_TIMEOUT = 60.0
NPAGES = 128          # pages of each shared, faulted VMA
FAULTERS = 6
MAPPERS = 3
MAP_ITERS = 12
DMA_THREADS = 2
DMA_ITERS = 200


@dataclass
class Tally:
    """What the threads did, to check the counters against."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    resolves: int = 0           # CPU accesses that went through the TLB (one per page touched)
    remapped_ptes: int = 0      # PTEs written (and later cleared) by the mappers
    dma_read: int = 0
    dma_written: int = 0

    def add(self, **kw: int) -> None:
        with self.lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)


def run_threads(targets: list[Callable[[], None]]) -> None:
    """Start all at once; every thread must finish in time and without an exception."""
    barrier = threading.Barrier(len(targets))
    errors: list[BaseException] = []

    def wrap(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                barrier.wait(timeout=JOIN_TIMEOUT)
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
        return run

    threads = [threading.Thread(target=wrap(t), daemon=True) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=JOIN_TIMEOUT)
    hung = [t for t in threads if t.is_alive()]
    assert not hung, f"{len(hung)} thread(s) still running after {JOIN_TIMEOUT} s: deadlock?"
    if errors:
        raise errors[0]


def present_leaves(m: dmamap.Machine, space: dmamap.AddressSpace) -> list[tuple[int, int, int]]:
    """(va, page size, raw entry) of every non-empty leaf entry the space owns, scanned from the raw
    tables (a user root's shared kernel half is the kernel's)."""
    return pagetable.present_leaves(m, space.root, kernel=space.kernel)


def check_tables(m: dmamap.Machine, space: dmamap.AddressSpace) -> None:
    """Every PTE inside a live VMA; table pages, their fill counts and the counters agree."""
    spans = [(v.start, v.end) for v in space.vmas]
    for va, size, _ in present_leaves(m, space):
        assert any(lo <= va and va + size <= hi for lo, hi in spans), f"stray PTE at {va:#x}"
    pages = table_pages(m, space.root, kernel=space.kernel)
    assert len(pages) == len(set(pages)) == space.stats.table_pages
    for pa in pages:
        entries = struct.unpack("<512Q", m.phys_read(pa, PAGE_SIZE))
        if pa == pages[0] and not space.kernel:   # the root's kernel half is the kernel's, not counted
            entries = entries[:pagetable.decoder_for(m).user_entries]
        used = sum(1 for e in entries if e)
        info = dmamap._binding.ffi.new("struct dmamap_page_info *")
        assert dmamap._binding.lib.dmamap_page_info(m._ptr(), pa >> 12, info, dmamap._binding.ffi.NULL) == 0
        assert info.table_used == used and info.flags & 4, f"table {pa:#x}: {info.table_used} != {used}"


def marker(i: int, salt: int) -> bytes:
    return struct.pack("<QQ", 0xC0FFEE00_00000000 | i, salt)


@pytest.mark.parametrize("round_", range(ROUNDS))
@pytest.mark.parametrize("platform", ["x86", "arm", "sram"])
def test_faults_maps_and_dma_at_once(platform: str, round_: int) -> None:
    rng = random.Random(round_)
    with dmamap.Machine(platform, ram=64 << 20) as m:
        doorbells = []
        dev = m.add_device("nic", bars=[PAGE_SIZE])
        kick = m.add_device("kick", bars=[dmamap.Bar(PAGE_SIZE, write=lambda off, size, value: doorbells.append(
            value))])
        mm = m.new_address_space()
        base_used, base_tables = m.stats.ram_pages_used, m.stats.table_pages
        tally = Tally()

        # Two shared VMAs over RAM buffers with known contents: one with the C
        # page-returning fault handler, one with a Python handler.
        buf_c, buf_py = m.alloc_pages(NPAGES), m.alloc_pages(NPAGES)
        for i in range(NPAGES):
            m.phys_write(buf_c.phys_addr + i * PAGE_SIZE, marker(i, 1))
            m.phys_write(buf_py.phys_addr + i * PAGE_SIZE, marker(i, 2))
        vc, vpy = mm.mmap(NPAGES * PAGE_SIZE), mm.mmap(NPAGES * PAGE_SIZE)
        vc.set_builtin_fault("page", [(buf_c.pfn, NPAGES)])
        py_calls: list[int] = []
        vpy.set_fault_handler(lambda vmf: py_calls.append(vmf.pgoff) or m.pfn_to_page(buf_py.pfn + vmf.pgoff))
        regs = mm.mmap(PAGE_SIZE)
        dmamap.mmio_map(regs, kick.bar(0)[0], PAGE_SIZE)

        def faulter(seed: int) -> Callable[[], None]:
            def run() -> None:
                r = random.Random(seed)
                for vma, salt in ((vc, 1), (vpy, 2)) if seed % 2 else ((vpy, 2), (vc, 1)):
                    order = list(range(NPAGES))
                    r.shuffle(order)
                    for i in order:
                        assert mm.read(vma.start + i * PAGE_SIZE, 16) == marker(i, salt)
                        t = mm.translate(vma.start + i * PAGE_SIZE + r.randrange(PAGE_SIZE))
                        assert t is not None and t.pfn == (buf_c.pfn if salt == 1 else buf_py.pfn) + i
                    mm.touch(vma.start + seed * 8, NPAGES, PAGE_SIZE)
                mm.write32(regs.start, seed)   # a doorbell: an MMIO write callback
                tally.add(resolves=2 * NPAGES * 2 + 1)
            return run

        def mapper(seed: int) -> Callable[[], None]:
            def run() -> None:
                r = random.Random(seed)
                for _it in range(MAP_ITERS):
                    n = r.randint(1, 6)
                    buf = dmamap.dma_alloc_coherent(dev, n * PAGE_SIZE)
                    vma = mm.mmap(n * PAGE_SIZE)
                    dmamap.dma_mmap_coherent(dev, vma, *buf, strategy="prefault")
                    data = bytes(r.getrandbits(8) for _ in range(64)) * (n * PAGE_SIZE // 64)
                    mm.write(vma.start, data)                                  # CPU writes ...
                    assert dev.dma_read(buf.dma_handle, len(data)) == data     # ... the device sees it
                    back = bytes(reversed(data))
                    dev.dma_write(buf.dma_handle, back)                        # the device writes ...
                    assert mm.read(vma.start, len(back)) == back               # ... the CPU sees it
                    mm.munmap(vma)
                    dmamap.dma_free_coherent(dev, *buf[2:], *buf[:2])
                    tally.add(resolves=2 * n, remapped_ptes=n, dma_read=len(data), dma_written=len(back))
            return run

        def dma_worker(seed: int) -> Callable[[], None]:
            def run() -> None:
                r = random.Random(seed)
                buf = dmamap.dma_alloc_coherent(dev, 2 * PAGE_SIZE)
                try:
                    for _ in range(DMA_ITERS):
                        off, n = r.randrange(PAGE_SIZE), r.randint(1, PAGE_SIZE)
                        data = r.randbytes(n)
                        dev.dma_write(buf.dma_handle + off, data)
                        assert dev.dma_read(buf.dma_handle + off, n) == data
                        tally.add(dma_read=n, dma_written=n)
                finally:
                    dmamap.dma_free_coherent(dev, *buf[2:], *buf[:2])
            return run

        targets = [faulter(s) for s in range(FAULTERS)] + [mapper(100 + s) for s in range(MAPPERS)] + \
            [dma_worker(200 + s) for s in range(DMA_THREADS)]
        rng.shuffle(targets)
        st_before = mm.stats
        dma_before = (m.stats.dma_bytes_read, m.stats.dma_bytes_written)
        run_threads(targets)

        # raw PTEs: each page of the shared VMAs exactly once, at its pfn
        for vma, buf in ((vc, buf_c), (vpy, buf_py)):
            for i in range(NPAGES):
                leaf = walk(m, mm.root, vma.start + i * PAGE_SIZE)
                assert leaf is not None and leaf.pfn == buf.pfn + i and leaf.page_size == PAGE_SIZE
                assert not leaf.special and leaf.user
                page = m.pfn_to_page(buf.pfn + i)
                assert (page.mapcount, page.refcount) == (1, 2), f"page {i}: duplicated or lost reference"
        assert sorted(py_calls) == list(range(NPAGES)), "the Python handler ran more or less than once per page"
        leaves = present_leaves(m, mm)
        assert len(leaves) == 2 * NPAGES + 1   # the two shared VMAs and the doorbell page; mappers left none
        check_tables(m, mm)
        # counters add up
        st = mm.stats
        assert st.faults - st_before.faults == 2 * NPAGES
        assert st.ptes_written - st_before.ptes_written == 2 * NPAGES + tally.remapped_ptes
        assert st.ptes_cleared - st_before.ptes_cleared == tally.remapped_ptes
        assert (st.tlb_hits + st.tlb_misses) - (st_before.tlb_hits + st_before.tlb_misses) == tally.resolves
        assert st.cow_faults == 0
        assert (m.stats.dma_bytes_read - dma_before[0], m.stats.dma_bytes_written - dma_before[1]) == \
            (tally.dma_read, tally.dma_written)
        assert sorted(doorbells) == list(range(FAULTERS))
        assert not dev.dma_debug.live
        # and everything comes back
        for v in (vc, vpy, regs):
            mm.munmap(v)
        for buf in (buf_c, buf_py):
            m.free_pages(buf, NPAGES)
        assert present_leaves(m, mm) == []
        assert (m.stats.ram_pages_used, m.stats.table_pages) == (base_used, base_tables)


@pytest.mark.parametrize("round_", range(ROUNDS))
@pytest.mark.parametrize("isa", ["x86_64", "aarch64"])
def test_map_unmap_churn_across_address_spaces(isa: str, round_: int) -> None:
    """Threads each churn VMAs in their own and in a shared address space (prefault,
    faults, large pages, zap, mprotect), with page allocation contention; at the
    end no PTE is left outside a live VMA and every page is back."""
    with dmamap.Machine(isa, ram=32 << 20) as m:
        shared = m.new_address_space()
        base_used = m.stats.ram_pages_used
        own = [m.new_address_space() for _ in range(3)]
        bar = m.add_device("regs", bars=[1 << 21]).bar(0)[0]
        counts = {"ok": 0}
        counts_lock = threading.Lock()

        def churn(space: dmamap.AddressSpace, seed: int) -> Callable[[], None]:
            def run() -> None:
                r = random.Random(seed * 1000 + round_)
                for _ in range(40):
                    kind = r.choice(["remap", "large", "pages", "fault"])
                    n = r.choice([1, 3, 16, 512])
                    vma = space.mmap(n * PAGE_SIZE)
                    pages = None
                    if kind in ("remap", "large"):
                        dmamap.remap_pfn_range(vma, vma.start, bar >> 12, min(n * PAGE_SIZE, 1 << 21),
                                               dmamap.pgprot_noncached(vma.page_prot), large=kind == "large")
                        if r.random() < 0.5 and n > 1:
                            dmamap.zap_vma_ptes(vma, vma.start + PAGE_SIZE, PAGE_SIZE)
                        if r.random() < 0.5:
                            dmamap.change_protection(vma, vma.start, len(vma), vma.page_prot)
                    elif kind == "pages":
                        pages = m.alloc_pages(n)
                        for i in range(0, n, max(1, n // 4)):
                            dmamap.vm_insert_page(vma, vma.start + i * PAGE_SIZE, dmamap.Page(m, pages.pfn + i))
                        space.write(vma.start, b"x" * 8)
                    else:
                        pages = m.alloc_pages(n)
                        vma.set_builtin_fault("page", [(pages.pfn, n)], fault_around=r.choice([1, 16]))
                        space.touch(vma.start, n, PAGE_SIZE)
                        assert space.count_present(vma.start, len(vma)) == n
                    space.munmap(vma)
                    if pages is not None:
                        m.free_pages(pages, n)
                    with counts_lock:
                        counts["ok"] += 1
            return run

        targets = [churn(shared, s) for s in range(4)] + [churn(sp, 10 + i) for i, sp in enumerate(own)]
        run_threads(targets)
        assert counts["ok"] == 40 * len(targets)
        for space in [shared, *own]:
            assert present_leaves(m, space) == []
            check_tables(m, space)
            assert space.stats.table_pages == 1   # only the root is left
        for space in own:
            space.close()
        assert m.stats.ram_pages_used == base_used


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_unmap_while_faulting(round_: int) -> None:
    """A VMA unmapped and remapped under threads that fault it (some through a
    Python handler that sleeps): accesses succeed or fault cleanly, and no PTE
    or page outlives its VMA."""
    with dmamap.Machine("x86_64", ram=16 << 20) as m:
        mm = m.new_address_space()
        base_used = m.stats.ram_pages_used
        pages = m.alloc_pages(32)
        stop = threading.Event()
        slots: list[dmamap.Vma | None] = [None]
        addr = mm.mmap(32 * PAGE_SIZE).start   # reserve a fixed address, then free it
        mm.munmap(mm.find_vma(addr))           # type: ignore[arg-type]
        outcomes = {"ok": 0, "fault": 0}

        def handler(vmf: dmamap.VmFault) -> object:
            if vmf.pgoff % 7 == 3:
                threading.Event().wait(0.0005)
            return dmamap.Page(m, pages.pfn + vmf.pgoff)

        def unmapper() -> None:
            r = random.Random(round_)
            for i in range(150):
                vma = mm.mmap(32 * PAGE_SIZE, addr=addr)
                if i % 2:
                    vma.set_builtin_fault("page", [(pages.pfn, 32)])
                else:
                    vma.set_fault_handler(handler)
                slots[0] = vma
                threading.Event().wait(r.random() * 0.002)
                mm.munmap(vma)
            stop.set()

        def faulter(seed: int) -> Callable[[], None]:
            def run() -> None:
                r = random.Random(seed)
                while not stop.is_set():
                    try:
                        mm.touch(addr + r.randrange(32) * PAGE_SIZE, 4, PAGE_SIZE, write=r.random() < 0.3)
                        outcomes["ok"] += 1
                    except DmamapError:
                        outcomes["fault"] += 1
            return run

        run_threads([unmapper] + [faulter(s) for s in range(4)])
        assert outcomes["ok"] + outcomes["fault"] > 0
        assert present_leaves(m, mm) == []
        check_tables(m, mm)
        for i in range(32):
            p = dmamap.Page(m, pages.pfn + i)
            assert (p.mapcount, p.refcount) == (0, 1), f"page {i} keeps a reference of an unmapped VMA"
        m.free_pages(pages, 32)
        assert m.stats.ram_pages_used == base_used
