"""The records a benchmark run produces: one :class:`Run` per swept point
(medians with spread, and dmamap's exact event counts), the :class:`HostRun`
references, the targets (:class:`Target`) and the :class:`SweepResult`
holding them all."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dmamap.bench.config import SweepConfig
from dmamap.bench.spread import Spread

__all__ = ["Run", "HostRun", "Target", "SweepResult", "Scenario"]


@dataclass
class Run:
    """One (platform, size, density, order, strategy) point: ``repeat`` interleaved runs."""

    platform: str
    size: int
    density: float
    order: str
    strategy: str
    pages: int
    touched: int
    total: Spread        # map + touch, ns
    map: Spread
    touch: Spread
    unmap: Spread
    helper: Spread       # the dma_mmap_coherent call as a driver makes it, Python included
    counts: dict[str, int]   # AsStats / MachineStats deltas over map + touch (deterministic)
    unmap_counts: dict[str, int]
    limit_ns: int        # store loop writing `ptes` 8-byte values
    predicted_ns: float | None = None         # the host kernel per the profile, map + touch
    predicted_unmap_ns: float | None = None
    wall: Spread | None = None   # map + touch on the monotonic clock (the others: CPU time of the thread)

    @property
    def faults(self) -> int:
        return self.counts.get("faults", 0)

    @property
    def ptes(self) -> int:
        return self.counts.get("ptes_written", 0)

    @property
    def total_ns(self) -> float:
        return self.total.median

    @property
    def x_limit(self) -> float:
        return self.total.median / max(self.limit_ns, 1)


@dataclass
class HostRun:
    """The host kernel doing the same: map a memfd of `size` bytes and touch the pattern."""

    size: int
    density: float
    order: str
    kind: str            # references.HOST_KINDS
    total: Spread | None = None
    map: Spread | None = None
    touch: Spread | None = None
    unmap: Spread | None = None
    map_faults: int = 0  # the kernel's minor faults while mapping (populate takes its own)
    faults: int = 0      # ... and while touching
    ptes: int = 0        # PTEs the kernel wrote (fault-around: windows × window pages)
    touched: int = 0
    unavailable: str = ""
    wall: Spread | None = None   # map + touch on the monotonic clock (the others: CPU time of the thread)

    @property
    def total_ns(self) -> float:
        return self.total.median if self.total else float("nan")


@dataclass
class Target:
    """One performance target, measured as a ratio against its reference in the same run."""

    name: str
    measured: str
    goal: str
    status: str         # PASS | MISS | INFO
    value: float
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Scenario:
    """One preset from real use: rows of (what, figures) and notes on how it was measured."""

    name: str
    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class SweepResult:
    """Everything one run measured (possibly interrupted: ``complete`` False)."""

    config: SweepConfig
    runs: list[Run] = field(default_factory=list)
    host: list[HostRun] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    scenarios: list[Scenario] = field(default_factory=list)
    store_ns_per_pte: float = 0.0
    seconds: float = 0.0
    profile: Any = None          # model.Profile used for the predictions
    profile_note: str = ""
    host_facts: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    complete: bool = True
