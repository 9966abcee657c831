"""Group "fault": lazy faults through the C touch path (TLB miss, built-in handler, PTE insert, TLB fill)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from benchutil import Mapped, MiB, Timed, rounds

import dmamap
from dmamap.bench import BASE_VA
from dmamap.mm import PAGE_SIZE

pytestmark = pytest.mark.benchmark(group="fault")

SIZE = 16 * MiB


@pytest.fixture(scope="module", params=["x86", "arm", "sram"])
def mapped(request: pytest.FixtureRequest) -> Iterator[Mapped]:
    mp = Mapped(request.param, SIZE)
    yield mp
    mp.close()


@pytest.mark.parametrize("strategy", ["fault", "fault-around", "fault-large", "prefault"])
def bench_touch_after_map(benchmark: Any, mapped: Mapped, timed: Timed, strategy: str) -> None:
    """Touch every page of a freshly mapped 16 MiB buffer once: faults for the lazy strategies
    (page descriptors on RAM, PFN inserts on SRAM), TLB misses only for prefault."""
    mm, n = mapped.mm, mapped.pages
    before: dict[str, int] = {}

    def setup() -> None:
        mapped.map(strategy)
        before["faults"] = mm.stats.faults

    benchmark.pedantic(timed(lambda: mm.touch(BASE_VA, n)), setup=setup, rounds=rounds(benchmark, 10))
    faults = mm.stats.faults - before["faults"]
    assert mm.count_present(BASE_VA, SIZE) == n
    benchmark.extra_info.update(pages=n, faults=faults, ns_per_page=timed.best / n,
                                ns_per_fault=timed.best / faults if faults else None)
    mapped.unmap()


def bench_python_fault_handler(benchmark: Any, timed: Timed) -> None:
    """A Python vm_ops->fault handler returning page descriptors: one C -> Python call per fault."""
    with dmamap.Machine("x86", ram=64 * MiB) as m:
        mm = m.new_address_space()
        n = 256
        first = m.alloc_pages(n)
        state: dict[str, Any] = {"vma": None}

        def setup() -> None:
            if state["vma"] is not None:
                mm.munmap(state["vma"])
            vma = state["vma"] = mm.mmap(n * PAGE_SIZE, addr=BASE_VA)
            vma.set_fault_handler(lambda vmf: dmamap.Page(m, first.pfn + vmf.pgoff))

        benchmark.pedantic(timed(lambda: mm.touch(BASE_VA, n)), setup=setup, rounds=rounds(benchmark, 10))
        benchmark.extra_info.update(faults=n, ns_per_fault=timed.best / n)
