"""The records a benchmark run produces: one :class:`Run` per swept point,
the :class:`HostRun` references, the issue's performance targets
(:class:`Target`) and the :class:`SweepResult` holding them all."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dmamap.bench.config import SweepConfig

__all__ = ["Run", "HostRun", "Target", "SweepResult"]


@dataclass
class Run:
    """One (platform, size, density, order, strategy) measurement (best of the repeats)."""

    platform: str
    size: int
    density: float
    order: str
    strategy: str
    pages: int
    touched: int
    map_ns: int
    touch_ns: int
    unmap_ns: int
    faults: int
    ptes: int
    helper_ns: int      # the dma_mmap_coherent call as a driver makes it, Python included
    limit_ns: int       # store loop writing `ptes` 8-byte values
    host_ns: int        # host kernel, same size and pattern (host_kind of the strategy)

    @property
    def total_ns(self) -> int:
        return self.map_ns + self.touch_ns

    @property
    def ns_per_mapped(self) -> float:
        return self.total_ns / self.pages

    @property
    def ns_per_touched(self) -> float:
        return self.total_ns / self.touched

    @property
    def x_limit(self) -> float:
        return self.total_ns / max(self.limit_ns, 1)

    @property
    def x_host(self) -> float:
        return self.total_ns / max(self.host_ns, 1)


@dataclass
class HostRun:
    """The host kernel doing the same: map a memfd of `size` bytes and touch the pattern."""

    size: int
    density: float
    order: str
    kind: str           # populate | fault | fault-around
    map_ns: int
    touch_ns: int
    unmap_ns: int

    @property
    def total_ns(self) -> int:
        return self.map_ns + self.touch_ns


@dataclass
class Target:
    """One performance target of the issue, measured."""

    name: str
    measured: str
    goal: str
    status: str         # PASS | MISS | INFO
    value: float
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class SweepResult:
    """Everything one run measured."""

    config: SweepConfig
    runs: list[Run] = field(default_factory=list)
    host: list[HostRun] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    store_ns_per_pte: float = 0.0
    seconds: float = 0.0

