"""Shared fixtures: bare-ISA machines (no platform policy) and small machines of
each seed platform, always closed."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

import dmamap

# CI runs the property tests on a fixed sequence of examples (Hypothesis's
# derandomize), so a green run means the same thing twice; a developer's run
# (and the README's longer fuzz) keeps exploring new ones.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")

ISAS = ("x86_64", "aarch64")   # riscv64: tests/test_riscv.py (these tests spell out bits per ISA)
SMALL_RAM = 16 << 20
SMALL_SRAM = 1 << 20


@pytest.fixture(params=ISAS)
def isa(request: pytest.FixtureRequest) -> str:
    """Each instruction set in turn."""
    return str(request.param)


@pytest.fixture
def machine(isa: str) -> Iterator[dmamap.Machine]:
    """A bare machine of each ISA (16 MiB RAM, 1 MiB SRAM: memory without page descriptors), closed after
    the test."""
    m = dmamap.Machine(isa, ram=SMALL_RAM, sram=SMALL_SRAM)
    try:
        yield m
    finally:
        m.close()


@pytest.fixture
def mm(machine: dmamap.Machine) -> dmamap.AddressSpace:
    """A fresh user address space on ``machine``."""
    return machine.new_address_space()


PLATFORMS = ("x86", "arm", "sram", "riscv")
PLATFORM_RAM = 16 << 20


@pytest.fixture(params=PLATFORMS)
def plat(request: pytest.FixtureRequest) -> str:
    """Each seed platform in turn."""
    return str(request.param)


@pytest.fixture
def m(plat: str) -> Iterator[dmamap.Machine]:
    """A small machine of the platform, always closed."""
    with dmamap.Machine(plat, ram=PLATFORM_RAM) as machine:
        yield machine
