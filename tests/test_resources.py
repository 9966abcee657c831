"""Resources: running out of emulated RAM, and giving host memory back.

Out of RAM, every operation raises OutOfMemoryError (a MemoryError) and leaves
nothing behind: pages used, table pages, raw page tables and DMA bookkeeping
are as before, half-built mappings rolled back.  A closed machine -- closed
explicitly, by its context manager or by the garbage collector -- gives back its
backing memory and its C structures, so creating and closing a thousand
machines keeps the process's RSS flat.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import dmamap
from dmamap import PAGE_SIZE, OutOfMemoryError
from dmamap.testing.pagetable import snapshot

ISAS = ("x86_64", "aarch64")
PLATFORMS = ("x86", "arm", "sram")


def free_pages(m: dmamap.Machine) -> int:
    s = m.stats
    return s.ram_pages - s.ram_pages_used


class Hog:
    """Takes all free RAM one page at a time, and gives back exactly ``keep`` pages."""

    def __init__(self, m: dmamap.Machine, keep: int = 0) -> None:
        self.m = m
        self.pages = [m.alloc_pages(1) for _ in range(free_pages(m))]
        for _ in range(keep):
            m.free_pages(self.pages.pop())
        assert free_pages(m) == keep

    def release(self) -> None:
        for p in self.pages:
            self.m.free_pages(p)
        self.pages = []


def state(m: dmamap.Machine, spaces: list[dmamap.AddressSpace]) -> tuple[Any, ...]:
    return (m.stats.ram_pages_used, m.stats.table_pages, [snapshot(m, s.root) for s in spaces],
            [s.stats.table_pages for s in spaces], [[(v.start, v.end, int(v.vm_flags), int(v.page_prot))
                                                     for v in s.vmas] for s in spaces])


def oom_leaves_no_trace(m: dmamap.Machine, spaces: list[dmamap.AddressSpace], fn: Callable[[], object]) -> None:
    before = state(m, spaces)
    with pytest.raises(OutOfMemoryError) as info:
        fn()
    assert isinstance(info.value, MemoryError)
    assert state(m, spaces) == before, f"{info.value!r} left something behind"


@pytest.fixture(params=ISAS)
def machine(request: pytest.FixtureRequest) -> Iterator[dmamap.Machine]:
    m = dmamap.Machine(request.param, ram=2 << 20)
    try:
        yield m
    finally:
        m.close()


# ---- running out of emulated RAM ----

def test_page_allocator_oom(machine: dmamap.Machine) -> None:
    base = machine.stats.ram_pages_used
    with pytest.raises(MemoryError):
        machine.alloc_pages(free_pages(machine) + 1)
    hog = Hog(machine)
    oom_leaves_no_trace(machine, [machine.kernel], lambda: machine.alloc_pages(1))
    oom_leaves_no_trace(machine, [machine.kernel], lambda: machine.new_address_space())
    hog.release()
    assert machine.stats.ram_pages_used == base


@pytest.mark.parametrize("keep", [0, 1, 2])
def test_prefault_runs_out_of_table_pages_and_rolls_back(machine: dmamap.Machine, keep: int) -> None:
    """A remap spanning several leaf tables needs more table pages than are free:
    the part already written is rolled back and the fresh tables freed."""
    mm = machine.new_address_space()
    dev = machine.add_device("d", bars=[8 << 20])
    vma = mm.mmap(8 << 20)
    dmamap.remap_pfn_range(vma, vma.start, dev.bar(0)[0] >> 12, PAGE_SIZE, vma.page_prot)   # some tables exist
    hog = Hog(machine, keep)
    oom_leaves_no_trace(machine, [mm], lambda: dmamap.remap_pfn_range(vma, vma.start + PAGE_SIZE,
                                                                      (dev.bar(0)[0] >> 12) + 1,
                                                                      len(vma) - PAGE_SIZE, vma.page_prot))
    hog.release()
    hog = Hog(machine, keep=1)
    # a fresh region needs a whole path of tables (x86: PDPT, PD, PT; AArch64: PMD, PTE)
    other = mm.mmap(PAGE_SIZE, addr=1 << 39 if machine.isa == "x86_64" else 1 << 30)
    oom_leaves_no_trace(machine, [mm], lambda: dmamap.remap_pfn_range(other, other.start, 1, PAGE_SIZE,
                                                                      other.page_prot))
    other.vm_flags_set(dmamap.VmFlags.VM_PFNMAP | dmamap.VmFlags.VM_IO)
    oom_leaves_no_trace(machine, [mm], lambda: dmamap.vmf_insert_pfn(other, other.start, 1))
    hog.release()
    dmamap.remap_pfn_range(vma, vma.start + PAGE_SIZE, (dev.bar(0)[0] >> 12) + 1, len(vma) - PAGE_SIZE,
                           vma.page_prot)
    assert mm.count_present(vma.start, len(vma)) == vma.nr_pages


def test_faults_run_out_of_memory(machine: dmamap.Machine) -> None:
    """A fault that needs a table page, or a page to copy into (COW), raises
    OutOfMemoryError and maps nothing; the access works once memory is back."""
    mm = machine.new_address_space()
    buf = machine.alloc_pages(4)
    machine.phys_write(buf.phys_addr, b"original")
    far = mm.mmap(4 * PAGE_SIZE, addr=1 << 30)
    far.set_builtin_fault("page", [(buf.pfn, 4)])
    cow = mm.mmap(PAGE_SIZE, shared=False)
    cow.set_builtin_fault("page", [(buf.pfn, 1)])
    mm.read(cow.start, 8)                 # read fault: shares the page read-only
    hog = Hog(machine)
    oom_leaves_no_trace(machine, [mm], lambda: mm.read(far.start, 8))
    before = state(machine, [mm])
    with pytest.raises(OutOfMemoryError):
        mm.write(cow.start, b"copy")      # the copy needs a page
    after = state(machine, [mm])
    assert after[:4] == before[:4]        # (the VMA is unchanged too; faults were counted)
    assert machine.phys_read(buf.phys_addr, 8) == b"original"
    hog.release()
    assert mm.read(far.start, 8) == b"original"
    mm.write(cow.start, b"copy")
    assert mm.read(cow.start, 4) == b"copy" and machine.phys_read(buf.phys_addr, 8) == b"original"
    assert mm.stats.cow_faults == 1


def test_partial_zap_and_mprotect_of_a_large_page_out_of_memory(machine: dmamap.Machine) -> None:
    """Splitting a large page needs a table page; without one, zap_vma_ptes and
    change_protection refuse and change nothing (the split is all or nothing)."""
    mm = machine.new_address_space()
    dev = machine.add_device("d", bars=[4 << 20])
    vma = mm.mmap(4 << 20, align=2 << 20)
    prot = dmamap.pgprot_noncached(vma.page_prot)
    dmamap.remap_pfn_range(vma, vma.start, dev.bar(0)[0] >> 12, len(vma), prot, large=True)
    assert mm.translate(vma.start).page_size == 2 << 20   # type: ignore[union-attr]
    hog = Hog(machine, keep=1)   # one split possible, not two
    ro = dmamap.PgProt.make(machine.isa, write=False, cache=prot.cache)
    span = (vma.start + PAGE_SIZE, (2 << 20))           # straddles both 2 MiB blocks
    oom_leaves_no_trace(machine, [mm], lambda: dmamap.zap_vma_ptes(vma, *span))
    oom_leaves_no_trace(machine, [mm], lambda: dmamap.change_protection(vma, *span, ro))
    last = Hog(machine)   # take the last page too
    oom_leaves_no_trace(machine, [mm], lambda: dmamap.zap_vma_ptes(vma, vma.start + PAGE_SIZE, PAGE_SIZE))
    last.release()
    hog.release()
    dmamap.zap_vma_ptes(vma, *span)
    assert mm.translate(vma.start + PAGE_SIZE) is None and mm.translate(vma.start).page_size == PAGE_SIZE  # type: ignore[union-attr]
    assert mm.translate(vma.start + (4 << 20) - PAGE_SIZE).page_size == PAGE_SIZE  # type: ignore[union-attr]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_dma_helpers_out_of_memory(platform: str) -> None:
    with dmamap.Machine(platform, ram=2 << 20, **({"sram": 64 << 10} if platform == "sram" else {})) as m:
        dev = m.add_device("d", bars=[PAGE_SIZE])
        mm = m.new_address_space()
        spaces = [m.kernel, mm]
        base = m.stats.ram_pages_used

        def debug() -> tuple[list[int], list[int]]:
            return sorted(dev.dma_debug.live), sorted(dev.dma_debug.freed)

        # more than there is
        before = debug()
        oom_leaves_no_trace(m, spaces, lambda: dmamap.dma_alloc_coherent(dev, 64 << 20))
        oom_leaves_no_trace(m, spaces, lambda: dmamap.dma_alloc_coherent_sg(dev, (1 << 20) * PAGE_SIZE))
        assert debug() == before
        # the pages fit but nothing else does (arm needs kernel tables for the remap)
        pool = (64 << 10) // PAGE_SIZE if platform == "sram" else None
        hog = Hog(m, keep=3)
        # x86: one page too many; arm: the pages fit, the kernel remap's tables do not; sram: the pool is short
        n = {"x86": 4, "arm": 3, "riscv": 3}.get(platform, (pool or 0) + 1)
        oom_leaves_no_trace(m, spaces, lambda: dmamap.dma_alloc_coherent(dev, n * PAGE_SIZE))
        assert debug() == before
        hog.release()
        # a scatter list that fits page-wise but not with its guard holes: rolled back whole
        hog = Hog(m, keep=8)
        if platform == "sram":
            bufs = [dmamap.dma_alloc_coherent(dev, PAGE_SIZE) for _ in range(pool - 8)]   # type: ignore[operator]
        else:
            bufs = []
        oom_leaves_no_trace(m, spaces, lambda: dmamap.dma_alloc_coherent_sg(dev, 8 * PAGE_SIZE, max_chunk_pages=1))
        for b in bufs:
            dmamap.dma_free_coherent(dev, *b[2:], *b[:2])
        assert debug()[0] == before[0]
        hog.release()
        # mapping a buffer into a region that needs tables, with none to spare
        buf = dmamap.dma_alloc_coherent(dev, 4 * PAGE_SIZE)
        vma = mm.mmap(4 * PAGE_SIZE, addr=1 << 30)
        hog = Hog(m)
        oom_leaves_no_trace(m, spaces, lambda: dmamap.dma_mmap_coherent(dev, vma, *buf, strategy="prefault"))
        assert not any(v.live for r in dev.dma_debug.live.values() for v in r.vmas)
        with pytest.raises(OutOfMemoryError):   # faulting strategy: installs the handler, the fault fails
            dmamap.dma_mmap_coherent(dev, vma, *buf, strategy="fault-pfn")
            mm.read(vma.start, 8)
        hog.release()
        mm.munmap(vma)
        dmamap.dma_free_coherent(dev, *buf[2:], *buf[:2])
        mm.close()
        assert m.stats.ram_pages_used == base - 1   # the user root table is gone too
        assert not dev.dma_debug.live


def test_virtual_address_space_exhaustion(machine: dmamap.Machine) -> None:
    mm = machine.new_address_space()
    oom_leaves_no_trace(machine, [mm], lambda: mm.mmap(1 << 50))
    oom_leaves_no_trace(machine, [machine.kernel], lambda: machine.kernel.mmap(1 << 62))


# ---- host memory ----

def _backing_range(m: dmamap.Machine) -> tuple[int, int]:
    """Host addresses [lo, hi) of the machine's backing memory."""
    from dmamap._binding import ffi

    st = m._state
    lo = int(ffi.cast("uintptr_t", st.buf))
    return lo, lo + st.size


def _smaps_fields(lo: int, hi: int, field: str) -> list[str]:
    """The value of ``field`` (``Rss:``, ``VmFlags:``...) of each mapping that overlaps [lo, hi)."""
    out, inside = [], False
    with open("/proc/self/smaps") as f:
        for line in f:
            head, _, rest = line.partition(" ")
            if "-" in head and not head.endswith(":"):
                a, b = (int(x, 16) for x in head.split("-"))
                inside = a < hi and lo < b
            elif inside and head == field:
                out.append(rest.strip())
    return out


def _resident_in(lo: int, hi: int) -> int:
    """Pages of [lo, hi) resident in host memory (or swapped), from /proc/self/pagemap: the
    range itself, where a mapping's Rss would count a neighbour the kernel merged it with."""
    with open("/proc/self/pagemap", "rb") as f:
        f.seek((lo // PAGE_SIZE) * 8)
        entries = memoryview(f.read(((hi - lo) // PAGE_SIZE) * 8)).cast("Q")
    return sum(1 for e in entries if e >> 62)


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _busy_machine(platform: str) -> dmamap.Machine:
    """A machine that did a bit of everything, so there is something to release."""
    m = dmamap.Machine(platform, ram=8 << 20)
    mm = m.new_address_space()
    dev = m.add_device("d", bars=[PAGE_SIZE])
    buf = dmamap.dma_alloc_coherent(dev, 2 * PAGE_SIZE)
    vma = mm.mmap(2 * PAGE_SIZE)
    dmamap.dma_mmap_coherent(dev, vma, *buf)
    mm.write(vma.start, b"hello")
    vma2 = mm.mmap(PAGE_SIZE)
    dmamap.pio_map(vma2, 0x300, 4)
    return m


def _released(m: dmamap.Machine) -> bool:
    """Closed: calls refused and the backing retired (its memory given back);
    the small C state waits for the garbage collector."""
    st = m._state
    return st.closed and m.closed


@pytest.mark.parametrize("how", ["close", "context", "gc"])
@pytest.mark.parametrize("platform", PLATFORMS)
def test_closing_releases_host_memory(platform: str, how: str) -> None:
    """close(), leaving the context and garbage collection each give the backing
    memory back to the host at once (nothing stays resident in its range)."""
    gc.collect()
    if how == "close":
        m = _busy_machine(platform)
        lo, hi = _backing_range(m)
        assert _resident_in(lo, hi) > 0
        m.close()
        assert _released(m)
        assert _resident_in(lo, hi) == 0, "close() kept the backing memory"
        with pytest.raises(dmamap.MachineClosedError):
            m.phys_read(m.ram_base, 1)
        state = m._state
        del m
        gc.collect()
        assert state.m is None and state.buf is None and not state.as_ptrs, "C state not freed at GC"
    elif how == "context":
        with _busy_machine(platform) as m:
            lo, hi = _backing_range(m)
            assert _resident_in(lo, hi) > 0
        assert _released(m)
        assert _resident_in(lo, hi) == 0, "leaving the context kept the backing memory"
    else:
        m = _busy_machine(platform)
        lo, hi = _backing_range(m)
        state = m._state
        assert _resident_in(lo, hi) > 0
        del m
        gc.collect()
        assert state.m is None and state.buf is None and state.closed, "garbage-collected machine kept its memory"
    assert _resident_in(lo, hi) == 0, "backing memory leaked"


def test_close_while_another_thread_is_inside_a_call() -> None:
    """close() racing a long C call on another thread: the call ends (on zeroed
    memory or with MachineClosedError), the interpreter survives, memory goes back."""
    import threading

    for _ in range(5):
        m = dmamap.Machine("x86", ram=256 << 20)
        mm = m.new_address_space()
        vma = mm.mmap(128 << 20)
        dmamap.remap_pfn_range(vma, vma.start, m.ram_base >> dmamap.PAGE_SHIFT, 128 << 20, vma.page_prot)
        errors: list[BaseException] = []

        def reader() -> None:
            try:
                for _ in range(20):
                    mm.read(vma.start, 64 << 20)
            except dmamap.DmamapError as exc:   # refused once closed: fine
                errors.append(exc)

        t = threading.Thread(target=reader)
        t.start()
        m.close()
        t.join(60)
        assert not t.is_alive()
        assert all(isinstance(e, dmamap.MachineClosedError) for e in errors), errors
        assert m.closed


def test_a_thousand_machines_keep_rss_flat() -> None:
    def cycle(i: int) -> None:
        platform = PLATFORMS[i % 3]
        if i % 2:
            with _busy_machine(platform):
                pass
        else:
            _busy_machine(platform)   # dropped: closed by the garbage collector

    for i in range(100):   # warm up allocator arenas, caches and gc generations
        cycle(i)
    gc.collect()
    rss0 = _rss_kib()
    for i in range(1000):
        cycle(i)
    gc.collect()
    grown = _rss_kib() - rss0
    print(f"RSS after 1000 machines: {grown:+d} KiB")
    assert grown < 8 * 1024, f"RSS grew by {grown} KiB over 1000 machines"


def test_close_while_a_fault_handler_runs_on_another_thread() -> None:
    """Deterministic form of the race: the machine is closed while another thread
    is inside a C fault (parked in its Python fault handler).  The fault finishes
    on retired memory, no C state is freed under it, and the caller is refused
    afterwards.  (Freeing at close() deadlocks or uses freed memory here.)"""
    import threading

    m = dmamap.Machine("x86", ram=16 << 20)
    mm = m.new_address_space()
    vma = mm.mmap(4 * PAGE_SIZE)
    page = m.alloc_pages(1)
    inside, closed = threading.Event(), threading.Event()

    def handler(vmf: dmamap.VmFault) -> dmamap.Page:
        inside.set()
        assert closed.wait(30)
        return page

    vma.set_fault_handler(handler)
    outcome: list[object] = []

    def toucher() -> None:
        try:
            outcome.append(mm.read8(vma.start))
        except dmamap.DmamapError as exc:
            outcome.append(exc)

    t = threading.Thread(target=toucher)
    t.start()
    assert inside.wait(30)
    m.close()
    closed.set()
    t.join(30)
    assert not t.is_alive(), "close() blocked on, or broke, the running fault"
    assert outcome and (outcome[0] == 0 or isinstance(outcome[0], dmamap.MachineClosedError)), outcome
    with pytest.raises(dmamap.MachineClosedError):
        mm.read8(vma.start)


@pytest.mark.parametrize("ram", [2 << 20, 64 << 20, 8 << 30])
def test_backing_is_aligned_for_host_huge_pages(ram: int) -> None:
    """Emulated RAM is one private mapping, 2 MiB-aligned and advised for huge
    pages, so that a walk over many emulated pages does not miss the host TLB on each."""
    with dmamap.Machine("x86", ram=ram) as m:
        lo, hi = _backing_range(m)
        assert lo % (2 << 20) == 0 and hi - lo == ram
        flags = [set(v.split()) for v in _smaps_fields(lo, hi, "VmFlags:")]
        assert len(flags) == 1 and "hg" in flags[0] and "sh" not in flags[0], flags
        assert _resident_in(lo, hi) <= 1024   # sparse: the pages the boot touched, in at most two huge pages
