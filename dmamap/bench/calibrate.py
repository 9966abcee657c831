"""``dmamap calibrate``: the host kernel's cost per event on this machine.

Host runs whose event mix differs (every PTE written by MAP_POPULATE; one
fault per page by store-only first touches, dense and sparse, sequential and
random; fault-around by loads; random loads over populated mappings, which
cost TLB misses; munmap clearing what each left) are timed ``repeat`` times;
a non-negative least-squares fit of their medians to the event counts gives
the cost of each event (:func:`dmamap.bench.model.fit`).  The kernel's own
fault counts (getrusage) are used, not assumed.
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
from dmamap.bench.references import HostSample, fault_around_bytes, host_events, host_facts, host_sample
from dmamap.bench.spread import spread
from dmamap.mm import PAGE_SHIFT

__all__ = ["CALIBRATION_RUNS", "calibrate", "default_profile_path"]

#: (kind, size, density, order): the host runs of a calibration.
CALIBRATION_RUNS: tuple[tuple[str, int, float, str], ...] = (
    ("populate", 4 * KiB, 0.0, "seq"), ("populate", 64 * KiB, 0.0, "seq"), ("store-touch", 4 * KiB, 1.0, "seq"),
    ("store-touch", 64 * KiB, 1.0, "seq"), ("read-touch", 64 * KiB, 1.0, "seq"),
    ("populate", 4 * MiB, 0.0, "seq"), ("populate", 64 * MiB, 0.0, "seq"),
    ("populate", 64 * MiB, 0.1, "random"), ("populate", 64 * MiB, 1.0, "random"),
    ("store-touch", 4 * MiB, 1.0, "seq"), ("store-touch", 64 * MiB, 1.0, "seq"),
    ("store-touch", 64 * MiB, 0.1, "seq"), ("store-touch", 64 * MiB, 0.01, "random"),
    ("store-touch", 64 * MiB, 0.3, "random"),
    ("read-touch", 64 * MiB, 1.0, "seq"), ("read-touch", 64 * MiB, 0.1, "random"),
)


def default_profile_path() -> str:
    """Where ``dmamap calibrate`` saves and ``dmamap bench`` looks for the profile of this machine."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "dmamap", "profile.json")


def calibrate(repeat: int = 5, advance: Callable[[str], None] = lambda _: None, seed: int = 1) -> Profile:
    """Measure the calibration runs and fit the per-event costs of this host's kernel."""
    rng = random.Random(seed)
    map_rows: list[tuple[dict[str, float], float]] = []
    unmap_rows: list[tuple[dict[str, float], float]] = []
    detail: list[dict[str, Any]] = []
    fds: dict[int, int] = {}
    try:
        pats: list[Pattern | None] = []
        for _kind, size, d, order in CALIBRATION_RUNS:
            if size not in fds:
                fd = cbench.host_memfd(size)
                if fd < 0:
                    raise OSError(-fd, f"cannot create a {fmt_size(size)} memfd")
                fds[size] = fd
            pats.append(make_pattern(size >> PAGE_SHIFT, d, order, rng) if d else None)
        samples: list[list[HostSample]] = [[] for _ in CALIBRATION_RUNS]
        for rep in range(repeat + 1):   # interleaved; the first round warms up and is dropped
            advance(f"calibrate: round {rep + 1} of {repeat + 1}")
            for i, (kind, size, _d, _o) in enumerate(CALIBRATION_RUNS):
                s = host_sample(pats[i], fds[size], size, kind)
                if rep:
                    samples[i].append(s)
        for (kind, size, d, order), pat, ss in zip(CALIBRATION_RUNS, pats, samples, strict=True):
            faults = sorted(s.touch_faults for s in ss)[len(ss) // 2]
            ev, un = host_events(kind, size, pat, faults)
            tot, unm = spread([s.total_ns for s in ss]), spread([s.unmap_ns for s in ss])
            map_rows.append((ev, tot.median))
            unmap_rows.append((un, unm.median))
            detail.append({"kind": kind, "size": size, "density": d, "order": order, "events": ev,
                           "unmap_events": un, "ns": tot.to_json(), "unmap_ns": unm.to_json(),
                           "kernel_map_faults": sorted(s.map_faults for s in ss)[len(ss) // 2]})
        advance("calibrate: host facts")
        facts = host_facts(repeat=max(1, min(repeat, 3)))
    finally:
        for fd in fds.values():
            os.close(fd)
    costs = fit(map_rows, MAP_EVENTS)
    costs.update(fit(unmap_rows, UNMAP_EVENTS))
    prof = Profile(name=f"calibrated on {os.uname().nodename}", costs_ns=costs,
                   source="dmamap calibrate: least squares over host-kernel runs (csrc/bench.c)",
                   date=time.strftime("%Y-%m-%dT%H:%M:%S%z"), machine=machine_info(), host=facts)
    errs = []
    for (ev, y), row in zip(map_rows, detail, strict=True):
        row["predicted_ns"] = prof.predict(ev)
        errs.append(row["predicted_ns"] / y - 1)
    errs.sort()
    prof.fit = {"runs": detail, "repeat": repeat, "fault_around_bytes": fault_around_bytes(),
                "median_abs_rel_error": sorted(abs(e) for e in errs)[len(errs) // 2],
                "note": "cache_line is not measurable from user space on a coherent host: priced 0 unless "
                        "written by hand"}
    return prof
