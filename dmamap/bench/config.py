"""What one ``dmamap bench`` run sweeps: :class:`SweepConfig`, the presets,
the sizes and units, and :func:`make_config` from command-line style options."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dmamap.mm import PAGE_SIZE
from dmamap.registry import available_backends
from dmamap.strategy import STRATEGIES

__all__ = [
    "KiB", "MiB", "GiB", "BASE_VA", "SWEEP_STRATEGIES", "PLATFORMS", "ORDERS", "SRAM_POOL", "SweepConfig", "FULL",
    "QUICK", "ConfigError", "make_config", "parse_size", "fmt_size", "fmt_ns",
]

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
#: Fixed user address of every benchmark mapping: 1 GiB-aligned, inside every ISA's user range
#: (Sv39 users end at 256 GiB).
BASE_VA = 0x20_0000_0000
#: The strategies a sweep compares: every strategy except the fault variants that only force
#: the insert kind (they cost what "fault" costs on the memory they suit); small pages first.
SWEEP_STRATEGIES = tuple(s.name for s in sorted((s for s in STRATEGIES.values() if not s.forces_insert_kind),
                                                key=lambda s: s.large))
#: The default platforms; any registered backend (dmamap.available_backends()) is accepted.
PLATFORMS = ("x86", "arm", "sram", "riscv")
ORDERS = ("seq", "random")
SRAM_POOL = 192 * MiB   # the most on-bus SRAM the AArch64 layout has room for


@dataclass(frozen=True)
class SweepConfig:
    """What one ``dmamap bench`` run sweeps."""

    sizes: tuple[int, ...] = (4 * KiB, 64 * KiB, MiB, 16 * MiB, 256 * MiB, GiB)
    densities: tuple[float, ...] = (1.0, 0.3, 0.1, 0.03, 0.01)
    orders: tuple[str, ...] = ORDERS
    strategies: tuple[str, ...] = SWEEP_STRATEGIES
    platforms: tuple[str, ...] = PLATFORMS
    repeat: int = 5        # runs per point, interleaved across strategies
    seed: int = 1
    fault_size: int = 64 * MiB     # buffer of the lazy-fault target
    scale_size: int = 16 * GiB     # mapping of the scale target
    scale_ram: int = 64 * GiB


FULL = SweepConfig(repeat=7)
QUICK = SweepConfig(sizes=(4 * KiB, MiB, 64 * MiB), repeat=5, fault_size=16 * MiB)

_UNITS = {"": 1, "B": 1, "K": KiB, "KB": KiB, "KIB": KiB, "M": MiB, "MB": MiB, "MIB": MiB, "G": GiB, "GB": GiB,
          "GIB": GiB}


class ConfigError(ValueError):
    """A bad sweep option; ``param`` names the command-line option."""

    def __init__(self, message: str, param: str) -> None:
        self.param = param
        super().__init__(message)


def parse_size(text: str) -> int:
    """``"4K"``, ``"64KiB"``, ``"1M"``, ``"1G"`` or a byte count; a positive multiple of 4 KiB."""
    t = text.strip().upper()
    num = t.rstrip("KMGIB")
    unit = t[len(num):]
    if not num.isdigit() or unit not in _UNITS:
        raise ValueError(f"bad size {text!r}: use e.g. 4K, 64K, 1M, 16M, 1G")
    size = int(num) * _UNITS[unit]
    if size <= 0 or size % PAGE_SIZE:
        raise ValueError(f"size {text!r} is not a positive multiple of 4 KiB")
    return size


def fmt_size(n: int) -> str:
    for unit, div in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= div and n % div == 0:
            return f"{n // div} {unit}"
    return f"{n} B"


def fmt_ns(ns: float) -> str:
    """A duration with a unit that keeps 3-4 significant digits."""
    if ns < 1e3:
        return f"{ns:.1f} ns" if ns < 100 else f"{ns:.0f} ns"
    if ns < 1e6:
        return f"{ns / 1e3:.1f} µs"
    if ns < 1e9:
        return f"{ns / 1e6:.1f} ms"
    return f"{ns / 1e9:.2f} s"


def _pick(values: Sequence[str] | None, allowed: Sequence[str], what: str, param: str) -> tuple[str, ...] | None:
    if not values:
        return None
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ConfigError(f"unknown {what} {', '.join(bad)}; choose from {', '.join(allowed)}", param)
    return tuple(dict.fromkeys(values))


def make_config(*, quick: bool = False, platforms: Sequence[str] | None = None, sizes: Sequence[str] | None = None,
                densities: Sequence[float] | None = None, orders: Sequence[str] | None = None,
                strategies: Sequence[str] | None = None, repeat: int | None = None, seed: int = 1) -> SweepConfig:
    """A :class:`SweepConfig` from the preset (QUICK or FULL) and the options given;
    :class:`ConfigError` names the bad option."""
    base = QUICK if quick else FULL
    try:
        size_list = tuple(parse_size(s) for s in sizes) if sizes else base.sizes
    except ValueError as exc:
        raise ConfigError(str(exc), "--size") from None
    if repeat is not None and repeat < 1:
        raise ConfigError("--repeat must be at least 1", "--repeat")
    if densities and any(not 0 < d <= 1 for d in densities):
        raise ConfigError("densities must be in (0, 1]", "--density")
    return SweepConfig(
        sizes=tuple(sorted(set(size_list))),
        densities=tuple(sorted(set(densities), reverse=True)) if densities else base.densities,
        orders=_pick(orders, ORDERS, "order", "--order") or base.orders,
        strategies=_pick(strategies, SWEEP_STRATEGIES, "strategy", "--strategy") or base.strategies,
        platforms=_pick(platforms, available_backends(), "platform", "--platform") or base.platforms,
        repeat=repeat or base.repeat, seed=seed, fault_size=base.fault_size, scale_size=base.scale_size,
        scale_ram=base.scale_ram,
    )
