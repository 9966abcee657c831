"""Group "access": CPU accesses through mappings from Python (TLB hits) and in bulk."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from benchutil import Mapped, MiB, Timed, rounds

import dmamap
from dmamap.bench import BASE_VA
from dmamap.mm import PAGE_SIZE

pytestmark = pytest.mark.benchmark(group="access")


@pytest.fixture(scope="module")
def x86_mapped() -> Iterator[Mapped]:
    mp = Mapped("x86", 64 * MiB)
    mp.map("prefault")
    yield mp
    mp.close()


def bench_read32(benchmark: Any, x86_mapped: Mapped) -> None:
    """One read32 from Python through a write-back mapping (target: under 1 µs)."""
    mm = x86_mapped.mm
    mm.read32(BASE_VA)
    benchmark(mm.read32, BASE_VA + 0x40)


def bench_write32(benchmark: Any, x86_mapped: Mapped) -> None:
    mm = x86_mapped.mm
    benchmark(mm.write32, BASE_VA + 0x40, 0x1234_5678)


@pytest.mark.parametrize("platform", ["x86", "arm"])
def bench_read_1mib_cacheable(benchmark: Any, timed: Timed, platform: str) -> None:
    """Bulk read of 1 MiB through a cacheable mapping: x86 WB, arm NORMAL through the
    modelled write-back cache (target: at least 2 GB/s)."""
    with dmamap.Machine(platform, ram=256 * MiB) as m:
        mm = m.new_address_space()
        dev = m.add_device("bench")
        buf = dmamap.dma_alloc_coherent(dev, MiB)
        vma = mm.mmap(MiB)
        cache = "WB" if m.isa == "x86_64" else "NORMAL"
        dmamap.remap_pfn_range(vma, vma.start, dmamap.dma_coherent_to_pfn(dev, buf.cpu_addr, buf.dma_handle), MiB,
                               dmamap.PgProt.make(m.isa, write=True, cache=cache))
        data = benchmark(timed(lambda: mm.read(vma.start, MiB)))
        assert len(data) == MiB
        benchmark.extra_info.update(gb_per_s=MiB / timed.best, cache=cache)


@pytest.mark.parametrize("pages", [256, 16384], ids=["1MiB-tlb-hits", "64MiB-tlb-misses"])
def bench_touch_present(benchmark: Any, x86_mapped: Mapped, timed: Timed, pages: int) -> None:
    """Touch present pages in one C call: all TLB hits (256 pages fit the 512-entry TLB) or all misses."""
    mm = x86_mapped.mm
    mm.touch(BASE_VA, pages)
    benchmark.pedantic(timed(lambda: mm.touch(BASE_VA, pages)), rounds=rounds(benchmark, 50))
    benchmark.extra_info.update(ns_per_page=timed.best / pages)


def bench_translate(benchmark: Any, x86_mapped: Mapped) -> None:
    """A full page-table walk decoded into a Translation (Python object)."""
    t = benchmark(x86_mapped.mm.translate, BASE_VA + 5 * PAGE_SIZE)
    assert t is not None and t.cache == "WB"
