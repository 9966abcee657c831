"""Shared fixtures of the pytest-benchmark suite (``python -m pytest bench --benchmark-enable``).

With the project's default ``--benchmark-disable`` every bench runs once, as a
smoke test; sizes here keep that run well under a second each.  The full
sweep with larger sizes is ``dmamap bench`` (see docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from benchutil import GiB, Timed

import dmamap


@pytest.fixture
def timed() -> Timed:
    return Timed()


@pytest.fixture(scope="module")
def x86_big() -> Iterator[dmamap.Machine]:
    """An x86 machine with 2 GiB of (sparse) emulated RAM: room for a 1 GiB mapping."""
    with dmamap.Machine("x86", ram=2 * GiB) as m:
        yield m
