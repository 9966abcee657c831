"""Group "sg": scatter-gather buffers mapped as one linear range, prefaulted chunk by chunk or faulted lazily."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from benchutil import MiB, Timed, rounds

import dmamap
from dmamap.bench import BASE_VA
from dmamap.mm import PAGE_SHIFT

pytestmark = pytest.mark.benchmark(group="sg")

PAGES = (16 * MiB) >> PAGE_SHIFT


@pytest.fixture(scope="module", params=["x86", "arm"])
def sg(request: pytest.FixtureRequest) -> Iterator[tuple[dmamap.Machine, dmamap.Device, dmamap.SgTable,
                                                         dmamap.AddressSpace]]:
    with dmamap.Machine(request.param, ram=256 * MiB) as m:
        dev = m.add_device("bench")
        table = dmamap.dma_alloc_coherent_sg(dev, PAGES << PAGE_SHIFT, max_chunk_pages=64, seed=1)
        yield m, dev, table, m.new_address_space()


@pytest.mark.parametrize("strategy", ["prefault", "fault"])
def bench_sg_map_and_touch(benchmark: Any, sg: tuple[Any, ...], timed: Timed, strategy: str) -> None:
    """dma_mmap_coherent_sg of 16 MiB in chunks of up to 64 pages, then one touch per page."""
    m, dev, table, mm = sg
    state: dict[str, Any] = {"vma": None}

    def setup() -> None:
        if state["vma"] is not None:
            dmamap.dma_munmap_coherent(state["vma"])
        state["vma"] = mm.mmap(PAGES << PAGE_SHIFT, addr=BASE_VA)

    def run() -> None:
        dmamap.dma_mmap_coherent_sg(dev, state["vma"], table, strategy=strategy)
        mm.touch(BASE_VA, PAGES)

    benchmark.pedantic(timed(run), setup=setup, rounds=rounds(benchmark, 10))
    assert mm.count_present(BASE_VA, PAGES << PAGE_SHIFT) == PAGES
    benchmark.extra_info.update(chunks=len(table), pages=PAGES, ns_per_page=timed.best / PAGES)
    dmamap.dma_munmap_coherent(state["vma"])
