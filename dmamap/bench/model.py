"""The cost model: what the host kernel would spend doing what dmamap did.

dmamap counts its events exactly (PTEs written and cleared, faults by kind,
TLB misses, cache lines maintained: :class:`~dmamap.mm.AsStats`).  A
:class:`Profile` prices each event in nanoseconds for one machine; the
prediction for a run is the sum of count × cost.  ``dmamap calibrate`` fits the
prices to host-kernel runs whose event mix it varies (:func:`fit`), and saves
the profile as JSON (schema in docs/benchmarks.md); a profile for other
hardware can be written by hand (see ``profiles/``).
"""

from __future__ import annotations

import json
import math
import os
import platform as _platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["SCHEMA", "MAP_EVENTS", "UNMAP_EVENTS", "EVENT_HELP", "Profile", "fit", "machine_info", "describe",
           "example_profiles", "load_profile", "ProfileError"]

SCHEMA = "dmamap-cost-profile/1"
#: Events priced in the map + touch time, and in the unmap time.
MAP_EVENTS = ("map_call", "fill_call", "pte_write", "around_pte", "fault", "table_fault", "tlb_miss", "cache_line")
UNMAP_EVENTS = ("unmap_call", "pte_clear")
EVENT_HELP = {
    "map_call": "one mmap (+ the driver's mmap handler): fixed cost per mapping",
    "fill_call": "one prefault of a mapping at mmap time (remap_pfn_range / MAP_POPULATE): fixed cost",
    "pte_write": "one page-table entry written by a prefault or by a fault for its own page",
    "around_pte": "one extra entry a fault-around fault maps beside the faulting page",
    "fault": "one page fault taken (exception, VMA lookup, handler), beyond the PTE it writes",
    "table_fault": "the first fault in a 2 MiB region of a lazy mapping (the kernel allocates its PTE table then)",
    "tlb_miss": "one touch that misses the TLB and walks the tables (the first touch of a page)",
    "cache_line": "one cache line cleaned or invalidated by cache maintenance (non-coherent DMA)",
    "unmap_call": "one munmap: fixed cost per mapping",
    "pte_clear": "one page-table entry cleared by munmap / zap",
}


class ProfileError(ValueError):
    """A profile file that does not follow the schema."""


@dataclass
class Profile:
    """Per-event costs (ns) of one machine's kernel."""

    name: str
    costs_ns: dict[str, float]
    source: str = ""
    date: str = ""
    machine: dict[str, Any] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    fit: dict[str, Any] = field(default_factory=dict)
    host: dict[str, Any] = field(default_factory=dict)

    #: Costs calibrated at given mapping sizes, ascending: ``[(size, {event: ns}), ...]``.  Per-page
    #: costs grow with the span a mapping covers (TLB and cache reach: on the reference VM a fault
    #: costs about 1.5x more in a 64 MiB mapping than in a 4 MiB one), so a prediction for a mapping
    #: of ``size`` bytes interpolates these in log2(size), clamped at both ends; an event a size
    #: does not price falls back to ``costs_ns``.
    by_size: list[tuple[int, dict[str, float]]] = field(default_factory=list)

    def cost(self, event: str, size: int | None = None) -> float:
        """The cost of one ``event`` (ns), in a mapping of ``size`` bytes when given."""
        if size is None or not self.by_size:
            return float(self.costs_ns.get(event, 0.0))
        pts = [(s, c[event]) for s, c in self.by_size if event in c]
        if not pts:
            return float(self.costs_ns.get(event, 0.0))
        if size <= pts[0][0]:
            return pts[0][1]
        for (s0, c0), (s1, c1) in zip(pts, pts[1:], strict=False):
            if size <= s1:
                t = (math.log2(size) - math.log2(s0)) / (math.log2(s1) - math.log2(s0))
                return c0 + (c1 - c0) * t
        return pts[-1][1]

    def predict(self, counts: Mapping[str, float], events: Sequence[str] = MAP_EVENTS,
                size: int | None = None) -> float:
        """Σ count × cost over ``events`` (ns), for a mapping of ``size`` bytes when given."""
        return sum(self.cost(e, size) * float(counts.get(e, 0)) for e in events)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"schema": SCHEMA, "name": self.name, "source": self.source, "date": self.date,
             "machine": self.machine, "sources": self.sources, "costs_ns": self.costs_ns,
             "fit": self.fit, "host": self.host}
        if self.by_size:
            d["by_size"] = [{"size": s, "costs_ns": c} for s, c in self.by_size]
        return d

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n")

    @staticmethod
    def from_json(d: Mapping[str, Any], where: str = "profile") -> Profile:
        if d.get("schema") != SCHEMA:
            raise ProfileError(f"{where}: schema is {d.get('schema')!r}, expected {SCHEMA!r}")
        costs = d.get("costs_ns")
        if not isinstance(costs, dict) or not costs:
            raise ProfileError(f"{where}: costs_ns must be a non-empty object of event -> ns")
        known = set(MAP_EVENTS) | set(UNMAP_EVENTS)
        bad = [k for k, v in costs.items() if k not in known or not isinstance(v, int | float) or v < 0]
        if bad:
            raise ProfileError(f"{where}: bad cost entries {', '.join(bad)} (events: {', '.join(sorted(known))}; "
                               "costs are non-negative ns)")
        by_size = []
        for i, e in enumerate(d.get("by_size") or []):
            c = e.get("costs_ns") if isinstance(e, dict) else None
            if not isinstance(c, dict) or not isinstance(e.get("size"), int) or e["size"] <= 0:
                raise ProfileError(f"{where}: by_size[{i}] must be {{\"size\": bytes > 0, \"costs_ns\": {{...}}}}")
            bad = [k for k, v in c.items() if k not in known or not isinstance(v, int | float) or v < 0]
            if bad:
                raise ProfileError(f"{where}: by_size[{i}]: bad cost entries {', '.join(bad)}")
            by_size.append((e["size"], {k: float(v) for k, v in c.items()}))
        return Profile(name=str(d.get("name", where)), costs_ns={k: float(v) for k, v in costs.items()},
                       source=str(d.get("source", "")), date=str(d.get("date", "")),
                       machine=dict(d.get("machine", {})), sources=list(d.get("sources", [])),
                       fit=dict(d.get("fit", {})), host=dict(d.get("host", {})),
                       by_size=sorted(by_size, key=lambda e: e[0]))


_SHORT = {
    "map_call": "one mmap + the driver's handler", "fill_call": "one prefault at mmap time, fixed part",
    "pte_write": "one entry, by a prefault or for the faulting page", "around_pte": "one fault-around extra entry",
    "fault": "one fault, beyond its entry", "table_fault": "a 2 MiB region's first fault: its PTE table",
    "tlb_miss": "one touch that walks the tables",
    "cache_line": "one cache line cleaned/invalidated", "unmap_call": "one munmap", "pte_clear": "one entry cleared",
}


def describe(prof: Profile) -> list[str]:
    """The profile as lines of at most 80 columns: each event's cost, then the per-size costs
    of the per-page events (ns), when the profile has them."""
    lines = []
    for e in (*MAP_EVENTS, *UNMAP_EVENTS):
        if e in prof.costs_ns:
            lines.append(f"  {e:11} {prof.costs_ns[e]:8.1f} ns  {_SHORT[e]}")
    if prof.by_size:
        sizes = [s for s, _c in prof.by_size]
        names = [f"{s >> 20} MiB" if s >= 1 << 20 else f"{s >> 10} KiB" for s in sizes]
        lines.append("  per mapping size (ns):" + "".join(f"{n:>8}" for n in names)[:56])
        for e in ("map_call", "pte_write", "around_pte", "fault", "table_fault", "tlb_miss", "pte_clear"):
            lines.append(f"  {e:22}" + "".join(f"{prof.cost(e, s):8.0f}" for s in sizes)[:56])
    return lines


def load_profile(path: str | os.PathLike[str]) -> Profile:
    """A profile from a JSON file, or by the name of a shipped example (``example-...``)."""
    p = Path(path)
    if not p.exists():
        shipped = example_profiles()
        if str(path) in shipped:
            return shipped[str(path)]
        raise ProfileError(f"no profile file {str(path)!r} (shipped examples: {', '.join(shipped) or 'none'})")
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ProfileError(f"{path}: {exc}") from None
    return Profile.from_json(data, str(path))


def example_profiles() -> dict[str, Profile]:
    """The hand-written profiles shipped in dmamap/bench/profiles, by file stem."""
    out = {}
    for f in resources.files("dmamap.bench").joinpath("profiles").iterdir():
        if f.name.endswith(".json"):
            out[f.name[:-5]] = Profile.from_json(json.loads(f.read_text()), f.name)
    return out


def machine_info() -> dict[str, Any]:
    """What a profile is valid for: CPU model, kernel, core count, load."""
    cpu = _platform.processor() or _platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Model")):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "arch": _platform.machine(), "kernel": _platform.release(), "cpus": os.cpu_count(),
            "loadavg": list(os.getloadavg()), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _solve(a: list[list[float]], b: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting (the normal equations are tiny)."""
    n = len(b)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(m[r][c]))
        if abs(m[p][c]) < 1e-30:
            raise ProfileError("calibration runs do not separate the events (singular system)")
        m[c], m[p] = m[p], m[c]
        for r in range(n):
            if r != c and m[r][c]:
                f = m[r][c] / m[c][c]
                m[r] = [x - f * y for x, y in zip(m[r], m[c], strict=True)]
    return [m[i][n] / m[i][i] for i in range(n)]


def fit(rows: Sequence[tuple[Mapping[str, float], float]], events: Sequence[str],
        fixed: Mapping[str, float] | None = None, weights: Sequence[float] | None = None) -> dict[str, float]:
    """Non-negative least squares of ``measured ≈ Σ count × cost`` over ``rows`` (counts, measured ns),
    weighted by 1/measured so that every run counts by its relative error.  An event whose cost
    comes out negative is priced 0 and the rest refitted, as is an event no row counts.  Events in
    ``fixed`` keep the cost given (their share is taken off each measurement first) and are not
    returned.  ``weights`` (one per row, default 1) scale each row's squared relative error."""
    fixed = dict(fixed or {})
    rows = [(c, y - sum(fixed[e] * float(c.get(e, 0)) for e in fixed)) for c, y in rows]
    events = [e for e in events if e not in fixed]
    active = [e for e in events if any(r[0].get(e, 0) for r in rows)]
    while active:
        ata = [[0.0] * len(active) for _ in active]
        atb = [0.0] * len(active)
        for (counts, y), k in zip(rows, weights or [1.0] * len(rows), strict=True):
            w = math.sqrt(k) / max(abs(y), 1.0)
            x = [float(counts.get(e, 0)) * w for e in active]
            for i, xi in enumerate(x):
                atb[i] += xi * y * w
                for j, xj in enumerate(x):
                    ata[i][j] += xi * xj
        sol = _solve(ata, atb)
        neg = [e for e, c in zip(active, sol, strict=True) if c < 0]
        if not neg:
            got = dict(zip(active, sol, strict=True))
            return {e: got.get(e, 0.0) for e in events}
        active.remove(min(neg, key=lambda e: sol[active.index(e)]))
    return dict.fromkeys(events, 0.0)
