"""Lifetimes and threads: the fourteen defects a six-thread soak and hostile
single-process cases found, each as a test (issue "Lifetimes and threads").

Races are made likely with a tiny switch interval and many rounds; every join
is bounded, and every thread's unexpected exception fails the test.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

import dmamap
from dmamap import (
    PAGE_SIZE,
    DmaDoubleFreeError,
    DmaLeakError,
    DmamapError,
    InvalidArgumentError,
    MachineClosedError,
    SegmentationFault,
    SgTable,
    VmaNotMappedError,
    dma_alloc_coherent,
    dma_alloc_coherent_sg,
    dma_free_coherent,
    dma_free_coherent_sg,
    pio_map,
    vm_insert_page,
)

P = PAGE_SIZE
JOIN = 60.0


@contextmanager
def fast_switching() -> Iterator[None]:
    """Let the interpreter switch threads as often as it can: races show."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def run(targets: list[Callable[[], None]]) -> None:
    """Run each target on its own thread, released together; re-raise the first error."""
    barrier = threading.Barrier(len(targets))
    errors: list[BaseException] = []

    def wrap(fn: Callable[[], None]) -> Callable[[], None]:
        def go() -> None:
            try:
                barrier.wait(timeout=JOIN)
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
        return go

    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=JOIN)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]


# ---- 1. the SRAM pool under threads ----

def test_sram_pool_never_hands_one_page_to_two_live_buffers() -> None:
    with dmamap.Machine("sram", ram=16 << 20) as m, fast_switching():
        devs = [m.add_device(f"d{i}") for i in range(6)]
        owners: dict[int, int] = {}
        lock = threading.Lock()
        clashes: list[str] = []

        def worker(k: int) -> Callable[[], None]:
            def go() -> None:
                d = devs[k]
                pat = bytes([k + 1]) * P
                for _ in range(150):
                    b = dma_alloc_coherent(d, P)
                    with lock:
                        if b.dma_handle in owners:
                            clashes.append(f"{b.dma_handle:#x} owned by {owners[b.dma_handle]} and {k}")
                        owners[b.dma_handle] = k
                    d.dma_write(b.dma_handle, pat)
                    time.sleep(0)
                    assert d.dma_read(b.dma_handle, P) == pat, "another buffer wrote into mine"
                    with lock:
                        del owners[b.dma_handle]
                    dma_free_coherent(d, P, b.cpu_addr, b.dma_handle)
            return go

        run([worker(k) for k in range(6)])
        assert not clashes
        assert m.sram_pool.avail == m.sram_size


# ---- 2, 3, 10. closing an address space under other threads ----

def test_two_threads_closing_one_address_space_at_once() -> None:
    with dmamap.Machine("x86", ram=16 << 20) as m, fast_switching():
        pg = m.alloc_pages(1)
        base = m.stats.ram_pages_used
        for _ in range(150):
            mm = m.new_address_space()
            v = mm.mmap(4 * P)
            vm_insert_page(v, v.start + P, pg)   # a table path and a page reference to drop
            run([mm.close, mm.close])
            assert mm.closed and pg.mapcount == 0
        del mm
        assert m.stats.ram_pages_used == base
        m.free_pages(pg)


@pytest.mark.parametrize("platform", ["x86", "arm"])
def test_closing_an_address_space_while_another_thread_uses_it(platform: str) -> None:
    with dmamap.Machine(platform, ram=16 << 20) as m, fast_switching():
        dev = m.add_device("d")
        seen: set[str] = set()
        for _ in range(30):
            mm = m.new_address_space()
            buf = dma_alloc_coherent(dev, 4 * P)
            v = mm.mmap(4 * P)
            dmamap.dma_mmap_coherent(dev, v, buf.cpu_addr, buf.dma_handle, buf.size, strategy="fault")
            started = threading.Event()

            def user() -> None:
                try:
                    while True:
                        mm.write32(v.start, 1)
                        mm.read32(v.start)
                        started.set()
                except MachineClosedError:
                    seen.add("closed")
                finally:
                    started.set()

            def closer() -> None:
                started.wait(JOIN)
                mm.close()

            run([user, closer])
            assert not v.live
            with pytest.raises(MachineClosedError):
                mm.read32(v.start)
            # nothing leaked a mapcount: the buffer frees cleanly
            dma_free_coherent(dev, buf.size, buf.cpu_addr, buf.dma_handle)
        assert seen == {"closed"}


def test_machine_close_racing_mmap_and_vma_queries_raise_only_machine_closed() -> None:
    for _ in range(40):
        m = dmamap.Machine("x86", ram=16 << 20)
        mm = m.new_address_space()
        vmas = [mm.mmap(P) for _ in range(4)]
        bad: list[BaseException] = []

        def mapper() -> None:
            try:
                for _ in range(200):
                    mm.mmap(P)
                    assert all(isinstance(v.live, bool) for v in vmas)
            except MachineClosedError:
                pass
            except BaseException as exc:  # noqa: BLE001
                bad.append(exc)

        run([mapper, m.close])
        assert not bad, bad
        assert not any(v.live for v in vmas)


# ---- 4. a fault handler closing its own address space ----

def test_fault_handler_closing_its_own_address_space_ends_the_fault() -> None:
    with dmamap.Machine("x86", ram=16 << 20) as m:
        mm = m.new_address_space()
        v = mm.mmap(4 * P)
        pg = m.alloc_pages(1)
        made: list[tuple[dmamap.AddressSpace, dmamap.Vma]] = []

        def handler(vmf: dmamap.VmFault) -> dmamap.Page:
            mm.close()
            mm2 = m.new_address_space()
            made.append((mm2, mm2.mmap(4 * P)))
            return pg

        v.set_fault_handler(handler)
        with pytest.raises(MachineClosedError):
            mm.read8(v.start)
        mm2, v2 = made[0]
        assert mm2.translate(v2.start) is None, "the fault finished in another address space"
        assert pg.mapcount == 0 and pg.refcount == 1
        m.free_pages(pg)


# ---- 5. VMA ids never repeat ----

def test_a_stale_vma_stays_stale_after_many_reuses_of_its_slot() -> None:
    with dmamap.Machine("x86", ram=16 << 20) as m:
        mm = m.new_address_space()
        s = mm.mmap(P)
        mm.munmap(s)
        for _ in range(1100):
            mm.munmap(mm.mmap(P))
        v = mm.mmap(2 * P)
        assert not s.live and v.live
        with pytest.raises(VmaNotMappedError):
            mm.munmap(s)
        with pytest.raises(VmaNotMappedError):
            dmamap.remap_pfn_range(s, s.start, m.sram_base >> 12 if m.sram_size else 0x100, P, s.page_prot)
        assert v.live and mm.count_present(v.start, len(v)) == 0


# ---- 6. MMIO space is given back ----

def test_mmio_window_space_is_given_back_on_removal_and_refusal() -> None:
    with dmamap.Machine("arm", ram=16 << 20) as m:
        before = m.mmio_window.avail
        for _ in range(5):
            m.add_device("hot", bars=[256 << 20]).remove()
        assert m.mmio_window.avail == before
        with pytest.raises(InvalidArgumentError, match="MMIO window exhausted"):
            m.add_device("big", bars=[256 << 20] * 4)
        assert m.mmio_window.avail == before
        assert "big" not in m.devices and [r for r in m.memory_map if r.kind == "mmio"] == []
        m.add_device("fits", bars=[256 << 20, 256 << 20])


# ---- 7. a scatter list freed with a duplicated chunk ----

def test_dma_free_coherent_sg_with_a_duplicated_chunk_frees_nothing() -> None:
    with dmamap.Machine("x86", ram=16 << 20) as m:
        dev = m.add_device("d")
        sg = dma_alloc_coherent_sg(dev, 8 * PAGE_SIZE, seed=1)
        used, live = m.stats.ram_pages_used, sorted(dev.dma_debug.live)
        with pytest.raises(DmaDoubleFreeError, match="twice"):
            dma_free_coherent_sg(dev, SgTable([sg[0], sg[0]], dev))
        assert m.stats.ram_pages_used == used and sorted(dev.dma_debug.live) == live
        dma_free_coherent_sg(dev, sg)


# ---- 8. concurrent pio_map ----

@pytest.mark.parametrize("platform", ["arm", "sram"])
def test_concurrent_pio_map_never_breaks_another_threads_mapping(platform: str) -> None:
    with dmamap.Machine(platform, ram=16 << 20) as m, fast_switching():
        regs = bytearray(16 * 8)
        m.add_device("uart", ports=[dmamap.PortRange(0x3f8, 16 * 8,
                                                     read=lambda o, s: regs[o],
                                                     write=lambda o, s, v: regs.__setitem__(o, v))])
        mm = m.new_address_space()

        def worker(k: int) -> Callable[[], None]:
            def go() -> None:
                for i in range(20):
                    v = mm.mmap(P)
                    pio_map(v, 0x3f8 + 8 * k, 8)
                    mm.write8(v.start + 1, (k * 16 + i) & 0xff)
                    assert mm.read8(v.start + 1) == (k * 16 + i) & 0xff
                    mm.munmap(v)
            return go

        run([worker(k) for k in range(6)])
        assert m.io_window.avail == m.io_window.size


# ---- 9. a store split across a gap ----

def test_x86_store_split_across_a_gap_writes_nothing() -> None:
    with dmamap.Machine("x86", ram=16 << 20) as m:
        mm = m.new_address_space()
        v = mm.mmap(P)
        pg = m.alloc_pages(1)
        vm_insert_page(v, v.start, pg)
        end = v.end
        mm.write(end - 4, b"\x11\x22\x33\x44")
        with pytest.raises(SegmentationFault):
            mm.write32(end - 2, 0xAABBCCDD)
        assert mm.read(end - 4, 4) == b"\x11\x22\x33\x44", "a faulting x86 store had an effect"


def test_aarch64_store_split_across_a_gap_may_write_its_first_bytes() -> None:
    """AArch64 permits a partial effect (documented in docs/differences.md)."""
    with dmamap.Machine("arm", ram=16 << 20) as m:
        mm = m.new_address_space()
        v = mm.mmap(P)
        pg = m.alloc_pages(1)
        vm_insert_page(v, v.start, pg)
        end = v.end
        mm.write(end - 4, b"\x11\x22\x33\x44")
        with pytest.raises(SegmentationFault):
            mm.write32(end - 2, 0xAABBCCDD)
        assert mm.read(end - 4, 4) == b"\x11\x22\xdd\xcc"


# ---- 11. removing a device while another thread allocates ----

def test_device_removal_racing_allocation_raises_only_dmamap_errors() -> None:
    with dmamap.Machine("x86", ram=32 << 20) as m, fast_switching():
        for i in range(60):
            dev = m.add_device(f"d{i}")
            stop = threading.Event()
            leaked: list[dmamap.DmaBuffer] = []

            def alloc() -> None:
                try:
                    while not stop.is_set():
                        b = dma_alloc_coherent(dev, P)
                        leaked.append(b)
                        dma_free_coherent(dev, P, b.cpu_addr, b.dma_handle)
                        leaked.pop()
                except InvalidArgumentError:   # "device ... was removed"
                    pass

            def remover() -> None:
                try:
                    for _ in range(50):
                        try:
                            dev.remove()
                            return
                        except DmaLeakError:
                            time.sleep(0)
                    stop.set()
                finally:
                    stop.set()

            run([alloc, remover])
            if not dev.removed:
                dev.remove(force=True)
        assert m.stats.ram_pages_used == m.stats.table_pages


# ---- 12. int subclasses whose comparisons lie ----

class Liar(int):
    def __lt__(self, other: object) -> bool:
        return True

    def __le__(self, other: object) -> bool:
        return True

    def __gt__(self, other: object) -> bool:
        return True

    def __ge__(self, other: object) -> bool:
        return True


def test_int_subclasses_with_lying_comparisons_get_dmamap_errors() -> None:
    huge = Liar(1 << 70)
    with dmamap.Machine("x86", ram=16 << 20) as m:
        mm = m.new_address_space()
        calls: list[Callable[[], object]] = [
            lambda: mm.read32(huge), lambda: mm.write32(huge, 1), lambda: m.pfn_valid(huge),
            lambda: mm.find_vma(huge), lambda: m.region_of(huge), lambda: m.memtype_lookup(huge),
            lambda: mm.touch_list([huge]), lambda: dmamap.PgProt(huge, "x86_64"),
        ]
        for c in calls:
            with pytest.raises(DmamapError):
                c()
        v = mm.mmap(P)
        vm_insert_page(v, v.start, m.alloc_pages(1))
        mm.write32(Liar(v.start), 7)   # a small liar is just its value
        assert mm.read32(Liar(v.start)) == 7


# ---- 13. finish_fault ----

def test_handler_that_inserts_the_pte_and_returns_a_page_succeeds_as_finish_fault() -> None:
    with dmamap.Machine("x86", ram=16 << 20) as m:
        mm = m.new_address_space()
        v = mm.mmap(4 * P)
        a, b = m.alloc_pages(1), m.alloc_pages(1)
        m.phys_write(a.phys_addr, b"A" * 8)
        m.phys_write(b.phys_addr, b"B" * 8)

        def handler(vmf: dmamap.VmFault) -> dmamap.Page:
            vm_insert_page(vmf.vma, vmf.address, a)
            return b   # dropped: the PTE is there already (mm/memory.c finish_fault)

        v.set_fault_handler(handler)
        assert mm.read(v.start, 8) == b"A" * 8
        assert a.mapcount == 1 and b.mapcount == 0 and b.refcount == 1


# ---- 14. calls racing Machine.close ----

@pytest.mark.parametrize("platform", ["x86", "arm", "sram"])
def test_calls_racing_machine_close_see_machine_closed(platform: str) -> None:
    for _ in range(15):
        m = dmamap.Machine(platform, ram=16 << 20)
        dev = m.add_device("d", bars=[P])
        mm = m.new_address_space()
        buf = dma_alloc_coherent(dev, 16 * P)
        r = mm.mmap(P)
        dmamap.mmio_map(r, dev.bar(0)[0], P)
        bad: list[BaseException] = []
        started = threading.Event()

        def user() -> None:
            try:
                while True:
                    v = mm.mmap(16 * P)
                    dmamap.dma_mmap_coherent(dev, v, buf.cpu_addr, buf.dma_handle, buf.size, strategy="fault")
                    mm.touch(v.start, 16)
                    mm.write32(r.start, 1)
                    dev.dma_write(buf.dma_handle, b"x" * 64)
                    m.phys_read(m.ram_base, 64)
                    started.set()
                    mm.munmap(v)
            except MachineClosedError:
                pass
            except BaseException as exc:  # noqa: BLE001
                bad.append(exc)
            finally:
                started.set()

        def closer() -> None:
            started.wait(JOIN)
            m.close()

        run([user, closer])
        assert not bad, [f"{type(e).__name__}: {e}" for e in bad]
