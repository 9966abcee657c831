"""``dmamap calibrate``: the host kernel's cost per event on this machine.

The host references the sweep compares with (MAP_POPULATE, store-first
touches, fault-around loads) are run at the sweep's sizes -- 4 KiB to 256 MiB --
dense and sparse, sequential and random, each ``repeat`` times (more for the
small ones, which take microseconds), interleaved within a size as the sweep
interleaves them, every round visiting every size.  Each run is split into its
map phase (mmap, with the kernel's prefault for MAP_POPULATE) and its touch phase
(faults, fault-around, loads over populated pages), and a non-negative least
squares fit of the phases' medians to their event counts gives the cost of each
event (:func:`dmamap.bench.model.fit`).  Splitting the phases keeps the fixed
cost of an mmap apart from the per-page costs, so that a cost fitted at one
size holds at another.  The kernel's own fault counts (getrusage) are used,
not assumed; the events are those dmamap counts for the strategy each
reference stands for (:func:`~dmamap.bench.references.host_phase_events`).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from typing import Any

from dmamap._binding import bench as cbench
from dmamap.bench.config import KiB, MiB, fmt_size
from dmamap.bench.harness import Pattern, make_pattern
from dmamap.bench.model import MAP_EVENTS, UNMAP_EVENTS, Profile, fit, machine_info
from dmamap.bench.references import (
    HostSample,
    HostUnavailable,
    fault_around_bytes,
    host_facts,
    host_phase_events,
    host_sample,
    host_table_faults,
)
from dmamap.bench.spread import spread
from dmamap.mm import PAGE_SHIFT, PAGE_SIZE

__all__ = ["CALIBRATION_RUNS", "calibrate", "calibrate_steps", "default_profile_path"]

#: Grouped by pattern, each group in the sweep's order (references.MEASURE_ORDER): what ran just
#: before moves a run's cost (a store fault right after MAP_POPULATE of the same pages finds their
#: page-cache entries warm), so calibration runs them as the sweep does.
_KINDS_BY_DENSITY: tuple[tuple[str, float, str], ...] = (
    ("populate", 1.0, "seq"), ("store-touch", 1.0, "seq"), ("read-touch", 1.0, "seq"),
    ("populate", 0.3, "seq"), ("store-touch", 0.3, "seq"),
    ("populate", 0.1, "random"), ("store-touch", 0.1, "random"), ("read-touch", 0.1, "random"),
    ("read-touch", 0.03, "seq"),
    ("populate", 0.01, "random"), ("store-touch", 0.01, "random"),
)
#: (kind, size, density, order): the host runs of a calibration, grouped by size.
CALIBRATION_RUNS: tuple[tuple[str, int, float, str], ...] = (
    ("populate", 4 * KiB, 1.0, "seq"), ("store-touch", 4 * KiB, 1.0, "seq"), ("read-touch", 4 * KiB, 1.0, "seq"),
    *((k, size, d, o) for size in (64 * KiB, MiB, 16 * MiB, 64 * MiB, 256 * MiB) for k, d, o in _KINDS_BY_DENSITY),
)
#: Events whose cost is one per call, fitted over the mappings of at most SMALL bytes; the others
#: are fitted over every size with these held, times a factor per size (:func:`_scaled_fit`).
FIXED_EVENTS = ("map_call", "fill_call", "unmap_call")
SMALL = 256 * KiB
#: The references a one-page mapping's costs are fitted from (see :func:`calibrate`); read-touch
#: counts the same events as store-touch there (one fault, one PTE) and would blur the two.
ONE_PAGE_KINDS = ("populate", "store-touch")
#: Fixed events a one-page mapping prices itself (listed at every size: the others keep the shared cost).
ONE_PAGE_OWN = ("map_call",)
PRIOR_WEIGHT = 0.5


def default_profile_path() -> str:
    """Where ``dmamap calibrate`` saves and ``dmamap bench`` looks for the profile of this machine."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "dmamap", "profile.json")


def _more(size: int) -> int:
    """How many times ``repeat`` a size is run: small mappings take microseconds and their
    medians steady only over many runs (the one-page ranking hangs on a few per cent)."""
    return 16 if size <= PAGE_SIZE else 8 if size <= 64 * KiB else 6 if size <= MiB else 2 if size <= 16 * MiB else 1


def calibrate_steps(repeat: int) -> int:
    """How many times :func:`calibrate` calls ``advance`` (for a progress bar)."""
    return len({s for _k, s, _d, _o in CALIBRATION_RUNS}) * (repeat + 1) + 1


def _median(xs: list[int]) -> float:
    return spread(xs).median


Rows = dict[int, list[tuple[dict[str, float], float]]]


def _scaled_fit(rows: Rows, events: tuple[str, ...], fixed: dict[str, float],
                rounds: int = 6) -> tuple[dict[str, float], dict[int, float]]:
    """Per-event costs shared by every size, times one factor per size: the split between
    events comes from all the runs together (so a slow moment during one size's runs cannot
    trade PTE cost for fault cost), the factor from that size's runs (cache and TLB reach make
    every per-page event dearer in a large mapping).  Alternating least squares, relative
    errors; the factors' median is 1."""
    scale = dict.fromkeys(rows, 1.0)
    costs: dict[str, float] = {}
    for _ in range(rounds):
        costs = fit([({e: n if e in fixed else n * scale[s] for e, n in c.items()}, y)
                     for s, rs in rows.items() for c, y in rs], events, fixed)
        for s, rs in rows.items():
            num = den = 0.0
            for c, y in rs:
                rest = y - sum(fixed.get(e, 0.0) * n for e, n in c.items())
                per = sum(costs.get(e, 0.0) * n for e, n in c.items() if e not in fixed)
                w = 1.0 / max(y, 1.0) ** 2
                num, den = num + w * rest * per, den + w * per * per
            scale[s] = max(num / den, 0.0) if den else 1.0
        mid = sorted(scale.values())[len(scale) // 2] or 1.0
        scale = {s: f / mid for s, f in scale.items()}
    return costs, scale


def _prior(costs: dict[str, float], scale: float, events: tuple[str, ...], fixed: dict[str, float],
           ) -> list[tuple[dict[str, float], float]]:
    """Pseudo-runs that pull a size's own fit towards the shared costs times its factor: each
    weighs as much as PRIOR_WEIGHT of a measured run, enough to keep a noisy size from trading
    one event's cost for another's, little enough to let a size's real split show (on the
    reference VM a fault costs 3.6 PTE writes at 1 MiB, 5 at 64 MiB)."""
    return [({e: 1.0}, costs[e] * scale) for e in events if e not in fixed and costs.get(e, 0) > 0]


def _fit_size(rows: list[tuple[dict[str, float], float]], prior: list[tuple[dict[str, float], float]],
              events: tuple[str, ...], fixed: dict[str, float]) -> dict[str, float]:
    return fit(rows + prior, events, fixed, [1.0] * len(rows) + [PRIOR_WEIGHT] * len(prior))


def _order_only(pat: Pattern | None, fd: int, size: int) -> None:
    """A populate-write run, dropped: the sweep interleaves it after the three references
    (references.MEASURE_ORDER), and what runs just before a one-page run moves its cost."""
    try:
        host_sample(pat, fd, size, "populate-write")
    except HostUnavailable:
        pass


def calibrate(repeat: int = 7, advance: Callable[[str], None] = lambda _: None, seed: int = 1) -> Profile:
    """Measure the calibration runs and fit the per-event costs of this host's kernel."""
    rng = random.Random(seed)
    pats: list[Pattern | None] = [make_pattern(size >> PAGE_SHIFT, d, order, rng) if d else None
                                  for _k, size, d, order in CALIBRATION_RUNS]
    samples: list[list[HostSample]] = [[] for _ in CALIBRATION_RUNS]
    sizes = sorted({s for _k, s, _d, _o in CALIBRATION_RUNS})
    fds: dict[int, int] = {}
    try:
        for size in sizes:
            fd = cbench.host_memfd(size)
            if fd < 0:
                raise OSError(-fd, f"cannot create a {fmt_size(size)} memfd")
            fds[size] = fd
        idx = {size: [i for i, run in enumerate(CALIBRATION_RUNS) if run[1] == size] for size in sizes}
        # every round visits every size, so that each size's median spans the whole calibration
        # (the host's speed drifts by tens of per cent over seconds when other jobs share it)
        for rep in range(repeat + 1):   # the first round warms up and is dropped
            for size in sizes:
                advance(f"calibrate: round {rep + 1} of {repeat + 1}, {fmt_size(size)}")
                # the first runs after switching sizes are slower (other memfd, caches cold after the
                # large sizes): dropped, one pass over the size's runs where they take microseconds
                # (the sweep measures its one-page point warm, after a dropped round), else one run
                for i in idx[size] if size <= 64 * KiB else idx[size][:1]:
                    host_sample(pats[i], fds[size], size, CALIBRATION_RUNS[i][0])
                for _ in range(_more(size)):
                    for i in idx[size]:
                        s = host_sample(pats[i], fds[size], size, CALIBRATION_RUNS[i][0])
                        if rep:
                            samples[i].append(s)
                    if size <= PAGE_SIZE:   # the sweep's order at one page, where a few per cent decide
                        _order_only(pats[idx[size][0]], fds[size], size)
    finally:
        for fd in fds.values():
            os.close(fd)
    advance("calibrate: host facts")
    return fit_profile(pats, samples, repeat, host_facts(repeat=max(1, min(repeat, 3))))


def fit_profile(pats: list[Pattern | None], samples: list[list[HostSample]], repeat: int,
                facts: dict[str, Any]) -> Profile:
    """The profile fitted to the samples of every calibration run (``CALIBRATION_RUNS`` order)."""
    rows: dict[int, list[tuple[dict[str, float], float]]] = {}
    unmap_rows: dict[int, list[tuple[dict[str, float], float]]] = {}
    one_rows: dict[int, list[tuple[dict[str, float], float]]] = {}
    detail: list[dict[str, Any]] = []
    for (kind, size, d, order), pat, ss in zip(CALIBRATION_RUNS, pats, samples, strict=True):
        faults = sorted(s.touch_faults for s in ss)[len(ss) // 2]
        mapped, touch, un = host_phase_events(kind, size, pat, faults)
        if host_table_faults(kind, pat):
            touch["table_fault"] = host_table_faults(kind, pat)
        map_ns, touch_ns = _median([s.map_ns for s in ss]), _median([s.touch_ns for s in ss])
        rows.setdefault(size, []).append((mapped, map_ns))
        if any(touch.values()):
            rows[size].append((touch, touch_ns))
        if size <= PAGE_SIZE and kind in ONE_PAGE_KINDS:
            one_rows.setdefault(size, []).append((mapped, map_ns))
            one_rows[size].append((touch, touch_ns))
        unm = spread([s.unmap_ns for s in ss])
        unmap_rows.setdefault(size, []).append((un, unm.median))
        detail.append({"kind": kind, "size": size, "density": d, "order": order, "map_events": mapped,
                       "touch_events": touch, "unmap_events": un, "map_ns": map_ns, "touch_ns": touch_ns,
                       "ns": spread([s.total_ns for s in ss]).to_json(), "unmap_ns": unm.to_json(),
                       "kernel_map_faults": sorted(s.map_faults for s in ss)[len(ss) // 2]})
    # the fixed costs from the small mappings, where they are a visible share of the time
    small = [s for s in sorted(rows) if s <= SMALL]
    fixed = fit([r for s in small for r in rows[s]], MAP_EVENTS)
    fixed.update(fit([r for s in small for r in unmap_rows[s]], UNMAP_EVENTS))
    fixed = {e: fixed[e] for e in FIXED_EVENTS}
    costs, scale = _scaled_fit(rows, MAP_EVENTS, fixed)
    unmap_costs, unmap_scale = _scaled_fit(unmap_rows, UNMAP_EVENTS, fixed)
    costs.update(unmap_costs)
    costs.update(fixed)
    by_size = []
    for size in sorted(rows):   # each size's own split, held near the shared one (PRIOR_WEIGHT runs' worth)
        # except one page, whose runs see each event alone (a populate's one PTE, its one load, one
        # fault): its split is exact, and a first fault or load in a fresh mapping costs more than
        # the average one of a larger mapping (cold caches, a new page table).  There the mmap's own
        # cost is fitted too, from the two references the ranking compares (ONE_PAGE_KINDS), so that
        # the model reproduces their one-page medians: fault and prefault differ by a few per cent
        # there, less than a map_call shared with 64 KiB misses by
        one = size <= PAGE_SIZE
        if one:
            # one fault, one table: the fault carries the table's cost there
            own = dict({e: c for e, c in fixed.items() if e not in ONE_PAGE_OWN}, table_fault=0.0)
            per = _fit_size(one_rows[size], [], MAP_EVENTS, own)
        else:
            per = _fit_size(rows[size], _prior(costs, scale[size], MAP_EVENTS, fixed), MAP_EVENTS, fixed)
        per.update(_fit_size(unmap_rows[size], [] if one else _prior(costs, unmap_scale[size], UNMAP_EVENTS, fixed),
                             UNMAP_EVENTS, fixed))
        counted = {e for c, _y in (one_rows[size] if one else rows[size]) + unmap_rows[size] for e, n in c.items()
                   if n}
        per = {e: c for e, c in per.items() if not one or e in counted}
        if one:
            per["table_fault"] = 0.0   # carried by the fault (see above), not taken from 64 KiB
        per.update({e: fixed[e] for e in ONE_PAGE_OWN if e not in per})   # the others keep the shared one
        by_size.append((size, per))
    prof = Profile(name=f"calibrated on {os.uname().nodename}", costs_ns=costs,
                   source="dmamap calibrate: least squares over host-kernel runs (csrc/bench.c)",
                   date=time.strftime("%Y-%m-%dT%H:%M:%S%z"), machine=machine_info(), host=facts, by_size=by_size)
    errs = []
    for row in detail:
        both = dict(row["map_events"])
        for k, v in row["touch_events"].items():
            both[k] = both.get(k, 0) + v
        row["predicted_ns"] = prof.predict(both, size=row["size"])
        errs.append(abs(row["predicted_ns"] / row["ns"]["median"] - 1))
    prof.fit = {"runs": detail, "repeat": repeat, "fault_around_bytes": fault_around_bytes(),
                "median_abs_rel_error": sorted(errs)[len(errs) // 2],
                "note": "cache_line is not measurable from user space on a coherent host: priced 0 unless "
                        "written by hand"}
    return prof
