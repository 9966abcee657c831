"""Touch loops on several threads in one address space (they hold its lock
shared, each on a CPU slot of its own; see docs/threads.md): every fault is
counted once, every page reference goes back, a touch nested in a fault
handler of the same space does not wait for itself, and a close under running
touch loops ends them cleanly."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

import dmamap
from dmamap.errors import MachineClosedError
from dmamap.mm import PAGE_SIZE

PAGES = 256
ROUNDS = 20


def _run(fns: list[Callable[[], None]], timeout: float = 60.0) -> list[BaseException]:
    """Run each fn on its own thread; the exceptions they raised (a hang fails the test)."""
    errors: list[BaseException] = []

    def wrap(fn: Callable[[], None]) -> None:
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - reported to the test
            errors.append(e)

    threads = [threading.Thread(target=wrap, args=(fn,)) for fn in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a touch loop hung"
    return errors


@pytest.mark.parametrize("platform", ["x86_64", "aarch64"])
def test_two_threads_fault_one_space_and_every_fault_counts(platform: str) -> None:
    with dmamap.Machine(platform, ram=32 << 20) as m:
        mm = m.new_address_space()
        bufs = [m.alloc_pages(PAGES) for _ in range(3)]
        used = m.stats.ram_pages_used
        shared = mm.mmap(PAGES * PAGE_SIZE)   # both threads race for these PTEs too
        shared.set_builtin_fault("page", [(bufs[2].pfn, PAGES)])
        s0 = mm.stats

        def worker(k: int) -> None:
            for _ in range(ROUNDS):
                vma = mm.mmap(PAGES * PAGE_SIZE)
                vma.set_builtin_fault("page", [(bufs[k].pfn, PAGES)])
                mm.touch(vma.start, PAGES)
                mm.touch(shared.start, PAGES)
                assert mm.count_present(vma.start, PAGES * PAGE_SIZE) == PAGES
                mm.munmap(vma)

        assert _run([lambda: worker(0), lambda: worker(1)]) == []
        faults = mm.stats.faults - s0.faults
        # each private round faults every page once; the shared VMA is faulted once in all
        assert faults == 2 * ROUNDS * PAGES + PAGES
        assert mm.count_present(shared.start, PAGES * PAGE_SIZE) == PAGES
        for i in range(PAGES):   # one PTE, one map count, however the threads raced
            assert dmamap.Page(m, bufs[2].pfn + i).mapcount == 1
        mm.munmap(shared)
        for b in bufs:
            for i in range(PAGES):
                assert dmamap.Page(m, b.pfn + i).mapcount == 0
        assert m.stats.ram_pages_used == used
        mm.close()


def test_touch_nested_in_a_fault_handler_of_the_same_space() -> None:
    with dmamap.Machine("x86_64", ram=16 << 20) as m:
        mm = m.new_address_space()
        pages = m.alloc_pages(8)
        other = mm.mmap(8 * PAGE_SIZE)
        other.set_builtin_fault("page", [(pages.pfn, 8)])
        vma = mm.mmap(8 * PAGE_SIZE)

        def handler(vmf: dmamap.VmFault) -> dmamap.Page:
            mm.touch(other.start, 8)   # re-enters the address space this fault holds
            return dmamap.Page(m, pages.pfn + vmf.pgoff)

        vma.set_fault_handler(handler)
        assert _run([lambda: mm.touch(vma.start, 8)], timeout=30) == []
        assert mm.count_present(vma.start, 8 * PAGE_SIZE) == 8
        assert mm.count_present(other.start, 8 * PAGE_SIZE) == 8


def test_close_under_running_touch_loops() -> None:
    with dmamap.Machine("x86_64", ram=32 << 20) as m:
        mm = m.new_address_space()
        bufs = [m.alloc_pages(PAGES) for _ in range(2)]
        started = threading.Barrier(3)

        def worker(k: int) -> None:
            started.wait()
            try:
                while True:
                    vma = mm.mmap(PAGES * PAGE_SIZE)
                    vma.set_builtin_fault("page", [(bufs[k].pfn, PAGES)])
                    mm.touch(vma.start, PAGES)
                    mm.munmap(vma)
            except MachineClosedError:
                pass

        def closer() -> None:
            started.wait()
            threading.Event().wait(0.02)
            mm.close()

        assert _run([lambda: worker(0), lambda: worker(1), closer]) == []
        for b in bufs:   # the close took every mapping down: no reference left behind
            for i in range(PAGES):
                assert dmamap.Page(m, b.pfn + i).mapcount == 0
