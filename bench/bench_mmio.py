"""Group "mmio": device registers through a user mapping (a Python callback per access) and port I/O."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import dmamap
from dmamap.mm import PAGE_SIZE

pytestmark = pytest.mark.benchmark(group="mmio")


@pytest.fixture(scope="module", params=["x86", "arm"])
def regs(request: pytest.FixtureRequest) -> Iterator[tuple[dmamap.AddressSpace, int, int]]:
    """(address space, VA of a mapped register BAR, VA of a mapped 16-port range)."""
    with dmamap.Machine(request.param, ram=64 << 20) as m:
        dev = m.add_device("bench", bars=[PAGE_SIZE], ports=[(0x300, 16)])
        mm = m.new_address_space()
        bar = mm.mmap(PAGE_SIZE)
        dmamap.mmio_map(bar, dev.bar(0)[0], PAGE_SIZE)
        pio = mm.mmap(PAGE_SIZE)
        dmamap.pio_map(pio, 0x300, 16)
        yield mm, bar.start, pio.start


def bench_mmio_read32(benchmark: Any, regs: tuple[Any, ...]) -> None:
    mm, bar, _ = regs
    benchmark(mm.read32, bar + 8)


def bench_mmio_write32(benchmark: Any, regs: tuple[Any, ...]) -> None:
    mm, bar, _ = regs
    benchmark(mm.write32, bar + 8, 0xDEAD_BEEF)


def bench_pio_read8(benchmark: Any, regs: tuple[Any, ...]) -> None:
    """inb through a user mapping: trapped port space (x86) or the I/O window (arm)."""
    mm, _, pio = regs
    benchmark(mm.read8, pio + 4)
