"""Bindings of the benchmark references (csrc/bench.c) and of prepared calls:
a C entry point bound to its arguments, so a timed section holds no Python
argument handling."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dmamap._binding import _local, call, ffi, lib, raise_for

__all__ = ["HOST", "now_ns", "store_loop", "load_pages", "u64_buffer", "host_memfd", "host_ref", "host_fault_around",
           "populate", "prepared", "HOST_REF_OUT"]

#: Flags of ``dmamap_bench_host_ref`` (fill, memory, touch), by the C names less DMAMAP_HOST_.
HOST: dict[str, int] = {name[len("DMAMAP_HOST_"):]: getattr(lib, name) for name in dir(lib)
                        if name.startswith("DMAMAP_HOST_")}
#: How many results ``host_ref`` returns.
HOST_REF_OUT = 10


def now_ns() -> int:
    return int(lib.dmamap_now_ns())


def u64_buffer(n: int) -> Any:
    return ffi.new("uint64_t[]", n)


def store_loop(buf: Any, n: int, value: int) -> int:
    """Nanoseconds to store ``value`` into ``n`` words of ``buf`` (the PTE-fill floor)."""
    return int(lib.dmamap_bench_store_loop(buf, n, value))


def load_pages(m: Any, pa: int, npages: int) -> int:
    """Nanoseconds to load the first byte of each of ``npages`` pages of emulated memory
    from ``pa``, as a fault run loads them, with no emulation (GIL released)."""
    ns = ffi.new("uint64_t *")
    call(lib.dmamap_bench_load_pages, m, pa, npages, ns)
    return int(ns[0])


def host_memfd(size: int) -> int:
    """A host memfd of ``size`` bytes (negative errno on failure)."""
    return int(lib.dmamap_bench_host_memfd(size))


def host_ref(fd: int, size: int, flags: int, vas: Any, base: int, count: int, stride: int) -> tuple[int, list[int]]:
    """One host-kernel reference run: ``(rc, results)`` (see csrc/bench.c)."""
    out = ffi.new("uint64_t[]", HOST_REF_OUT)
    rc = lib.dmamap_bench_host_ref(fd, size, flags, ffi.NULL if vas is None else vas, base, count, stride, out)
    return int(rc), [int(out[i]) for i in range(HOST_REF_OUT)]


def host_fault_around(fd: int, size: int) -> int:
    return int(lib.dmamap_bench_host_fault_around(fd, size))


def populate(m: Any, pa: int, size: int) -> None:
    """Give the host pages behind emulated memory their backing, contents unchanged."""
    call(lib.dmamap_bench_populate, m, pa, size)


def prepared(name: str, *args: Any) -> Callable[[], None]:
    """``dmamap_<name>(*args, err)`` bound now, called later with nothing else
    in the way; raises as every binding does."""
    fn = getattr(lib, f"dmamap_{name}")

    def run() -> None:
        err = _local.err
        rc = fn(*args, err)
        if rc < 0:
            raise_for(rc, err)

    return run
