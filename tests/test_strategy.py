"""Strategies as records, backend policies as string enums."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import ClassVar

import pytest

import dmamap
from dmamap.backends import Backend
from dmamap.policy import RAM_BACKED, CoherentMemory, PioMethod
from dmamap.strategy import FAULT, PREFAULT, STRATEGIES, Strategy

NAMES = ("prefault", "prefault-large", "fault", "fault-page", "fault-pfn", "fault-around", "fault-large")


def test_strategies_iterate_names_in_documented_order() -> None:
    assert tuple(dmamap.STRATEGIES) == NAMES
    assert dmamap.STRATEGIES is STRATEGIES
    assert all(isinstance(STRATEGIES[n], Strategy) and STRATEGIES[n].name == n for n in NAMES)
    assert (PREFAULT.name, FAULT.name) == ("prefault", "fault")
    with pytest.raises(TypeError):
        STRATEGIES["eager"] = PREFAULT   # type: ignore[index]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("is_ram", [True, False])
def test_records_mean_what_the_names_said(name: str, is_ram: bool) -> None:
    """The records reproduce the string tests the helpers used to make."""
    s = STRATEGIES[name]
    assert s.prefault == name.startswith("prefault")
    assert s.large == (name in ("prefault-large", "fault-large"))
    assert s.fault_around == (16 if name == "fault-around" else 1)
    old_page_mode = name in ("fault-page", "fault-around") and is_ram or (name == "fault" and is_ram)
    assert s.uses_pages(is_ram) == (old_page_mode and not s.prefault)
    assert s.allowed_for(is_ram) == (is_ram or name != "fault-page")


def test_policies_are_str_enums_equal_to_their_strings() -> None:
    assert CoherentMemory.SRAM == "sram" and CoherentMemory("remap") is CoherentMemory.REMAP
    assert PioMethod.WINDOW == "window" and "trap" in tuple(PioMethod)
    assert "ram" in RAM_BACKED and "sram" not in RAM_BACKED
    assert dmamap.get_backend("arm").coherent_memory is CoherentMemory.REMAP


class _PlainStrings(Backend):
    """A third-party backend that sets the policies as plain strings."""

    name = "plain-strings-sram"
    isa = "aarch64"
    dma_coherent = False
    strict_memtype = False
    pio: ClassVar[str] = "window"
    coherent_memory: ClassVar[str] = "sram"
    kernel_cache = "NORMAL_NC"
    user_cache = "NORMAL_NC"
    default_strategy = "fault"
    default_sram = 1 << 20


@pytest.fixture
def plain_strings() -> Iterator[_PlainStrings]:
    be = _PlainStrings()
    dmamap.register_backend(be.name, be)
    try:
        yield be
    finally:
        reg = sys.modules["dmamap.registry"]
        with reg._lock:
            reg._known.pop(be.name, None)


def test_backend_with_plain_policy_strings_works(plain_strings: _PlainStrings) -> None:
    be = plain_strings
    with dmamap.Machine(be.name, ram=16 << 20) as m:
        assert m.has_io_window
        dev = m.add_device("d")
        buf = dmamap.dma_alloc_coherent(dev, 2 * dmamap.PAGE_SIZE)
        assert not m.pfn_valid(dmamap.dma_coherent_to_pfn(dev, buf.cpu_addr, buf.dma_handle))   # from SRAM
        sg = dmamap.dma_alloc_coherent_sg(dev, 3 * dmamap.PAGE_SIZE, max_chunk_pages=1)
        dmamap.dma_free_coherent_sg(dev, sg)
        with pytest.raises(dmamap.StrategyError, match="'fault-page' hands out page descriptors"):
            dmamap.dma_mmap_coherent(dev, m.new_address_space().mmap(2 * dmamap.PAGE_SIZE), *buf,
                                     strategy="fault-page")
        assert be.describe()["coherent memory"] == "on-bus SRAM, no page descriptor"
        assert be.describe()["pio"] == "memory-mapped I/O window"
