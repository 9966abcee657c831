"""Group "prefault": remap_pfn_range as one C call, and clearing, per PTE, against the store-loop limit."""

from __future__ import annotations

from typing import Any

import pytest
from benchutil import GiB, MiB, Timed, rounds

import dmamap
from dmamap._binding import ffi, lib
from dmamap.bench import BASE_VA, StoreLimit
from dmamap.mm import PAGE_SHIFT

pytestmark = pytest.mark.benchmark(group="prefault")


def _remap_setup(m: dmamap.Machine, mm: dmamap.AddressSpace, size: int, state: dict[str, Any],
                 *, filled: bool) -> None:
    if state.get("vma") is not None and state["vma"].live:
        mm.munmap(state["vma"])
    state["vma"] = vma = mm.mmap(size, addr=BASE_VA)
    if filled:
        dmamap.remap_pfn_range(vma, vma.start, state["pfn"], size, state["prot"])


def _prefault_state(m: dmamap.Machine, size: int) -> dict[str, Any]:
    return {"pfn": m.ram_base >> PAGE_SHIFT, "prot": dmamap.PgProt.make(m.isa, write=True), "vma": None}


@pytest.mark.parametrize("size", [GiB, 64 * MiB, 2 * MiB, 4096], ids=["1GiB", "64MiB", "2MiB", "4KiB"])
def bench_remap_pfn_range(benchmark: Any, x86_big: dmamap.Machine, timed: Timed, size: int) -> None:
    """Prefault ``size`` bytes (1 GiB = 262,144 PTEs) with one remap_pfn_range call."""
    m, n = x86_big, size >> PAGE_SHIFT
    mm = m.new_address_space()
    st = _prefault_state(m, size)
    _remap_setup(m, mm, size, st, filled=True)   # warm the table pages once, as a running system has them
    benchmark.pedantic(timed(lambda: dmamap.remap_pfn_range(st["vma"], BASE_VA, st["pfn"], size, st["prot"])),
                       setup=lambda: _remap_setup(m, mm, size, st, filled=False), rounds=rounds(benchmark, 20))
    assert mm.count_present(BASE_VA, size) == n
    limit = StoreLimit().ns(n)
    benchmark.extra_info.update(ptes=n, ns_per_pte=timed.best / n, store_loop_ns_per_pte=limit / n,
                                x_store_loop=timed.best / limit)
    mm.close()


def bench_remap_pfn_range_large_1g(benchmark: Any, x86_big: dmamap.Machine, timed: Timed) -> None:
    """1 GiB prefault with large pages allowed: one 1 GiB entry on x86-64."""
    mm = x86_big.new_address_space()
    st = _prefault_state(x86_big, GiB)
    benchmark.pedantic(timed(lambda: dmamap.remap_pfn_range(st["vma"], BASE_VA, st["pfn"], GiB, st["prot"],
                                                            large=True)),
                       setup=lambda: _remap_setup(x86_big, mm, GiB, st, filled=False), rounds=rounds(benchmark, 20))
    t = mm.translate(BASE_VA)
    assert t is not None and t.page_size == GiB
    benchmark.extra_info.update(entries_per_call=1, ns=timed.best)
    mm.close()


@pytest.mark.parametrize("how", ["zap_vma_ptes", "munmap"])
def bench_clear_1g(benchmark: Any, x86_big: dmamap.Machine, timed: Timed, how: str) -> None:
    """Clear a prefaulted 1 GiB (262,144 PTEs) with zap_vma_ptes or munmap, in one call."""
    mm = x86_big.new_address_space()
    st = _prefault_state(x86_big, GiB)
    n = GiB >> PAGE_SHIFT

    def clear() -> None:
        if how == "munmap":
            mm.munmap(st["vma"])
        else:
            dmamap.zap_vma_ptes(st["vma"], BASE_VA, GiB)

    benchmark.pedantic(timed(clear), setup=lambda: _remap_setup(x86_big, mm, GiB, st, filled=True),
                       rounds=rounds(benchmark, 20))
    assert mm.count_present(BASE_VA, GiB) == 0
    limit = StoreLimit().ns(n)
    benchmark.extra_info.update(ptes=n, ns_per_pte=timed.best / n, x_store_loop=timed.best / limit)
    mm.close()


def bench_store_loop_1g(benchmark: Any) -> None:
    """The limit: storing 262,144 8-byte PTE values (dmamap_bench_store_loop, timed in C)."""
    n = GiB >> PAGE_SHIFT
    buf = ffi.new("uint64_t[]", n)
    ns = benchmark(lambda: lib.dmamap_bench_store_loop(buf, n, 0x63))
    benchmark.extra_info.update(ptes=n, ns_per_pte=ns / n)


@pytest.mark.parametrize("populate", [True, False], ids=["MAP_POPULATE", "lazy"])
def bench_host_map_64m(benchmark: Any, populate: bool) -> None:
    """The host kernel: map a 64 MiB memfd with MAP_POPULATE, or lazily with one write fault per page."""
    size = 64 * MiB
    fd = lib.dmamap_bench_host_memfd(size)
    assert fd >= 0
    try:
        ns = benchmark(lambda: lib.dmamap_bench_host_touch(fd, size, int(populate), ffi.NULL, 0,
                                                           0 if populate else size >> PAGE_SHIFT, 4096, 1,
                                                           ffi.NULL))
        assert ns > 0
        benchmark.extra_info.update(ns_per_page=ns / (size >> PAGE_SHIFT))
    finally:
        import os

        os.close(fd)
