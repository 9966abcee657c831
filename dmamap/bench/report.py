"""A run for people and for programs.  :func:`render` prints a summary (or with
``full`` every run) as plain lines of at most 80 columns, so that nothing is
cut in a narrow terminal or a pipe; :func:`to_json` gives everything measured
as plain JSON data; :func:`compare` shows what changed between two JSON files."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any

from rich.console import Console

import dmamap
from dmamap.bench.config import fmt_ns, fmt_size
from dmamap.bench.crossover import crossovers
from dmamap.bench.predict import agreement, calibration_ratio
from dmamap.bench.references import CONTESTED_FACTOR, HOST_KINDS, HOST_LABELS, host_kind
from dmamap.bench.results import Run, SweepResult
from dmamap.bench.spread import TIE, Spread, beats, winner
from dmamap.strategy import FAULT, PREFAULT

__all__ = ["render", "to_json", "compare", "point_winners", "WIDTH"]

WIDTH = 80
_STYLE = {"PASS": "green", "MISS": "red", "INFO": "cyan"}


def _out(console: Console, line: str = "", style: str | None = None) -> None:
    console.print(line, markup=False, highlight=False, soft_wrap=True, style=style if console.is_terminal else None)


def _table(console: Console, header: Sequence[str], rows: Iterable[Sequence[str]], right: Sequence[int] = ()) -> None:
    rows = [list(map(str, r)) for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return " ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths,
                                                                                             strict=True))).rstrip()
    _out(console, line(header))
    _out(console, " ".join("-" * w for w in widths))
    for r in rows:
        _out(console, line(r))


def _wrap(console: Console, text: str, indent: str = "", style: str | None = None) -> None:
    for ln in textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=indent + "  ") or [""]:
        _out(console, ln, style)


def _pct(d: float) -> str:
    return f"{d:.0%}" if d >= 0.1 or d == 0 else f"{d:.0%}" if d * 100 == round(d * 100) else f"{d:.1%}"


def _iqr(s: Spread) -> str:
    return f"{s.rel_iqr * 100:.0f}%"


def point_winners(res: SweepResult) -> dict[tuple[str, int, float, str], str]:
    """The declared winner (or 'tie') of every (platform, size, density, order)."""
    groups: dict[tuple[str, int, float, str], dict[str, Spread]] = {}
    for r in res.runs:
        groups.setdefault((r.platform, r.size, r.density, r.order), {})[r.strategy] = r.total
    return {k: winner(v)[0] for k, v in groups.items()}


def _host_winner(host: dict[tuple[int, float, str, str], Any], size: int, d: float, order: str) -> str:
    hf, hp = host.get((size, d, order, "store-touch")), host.get((size, d, order, "populate"))
    if not (hf and hp and hf.total and hp.total):
        return "-"
    return "fault" if beats(hf.total, hp.total) else "prefault" if beats(hp.total, hf.total) else TIE


def render(console: Console, res: SweepResult, *, full: bool = False) -> None:
    """Summary (or ``full``: every run) of a sweep, its host references, the model, crossovers,
    targets and scenarios, in lines of at most 80 columns."""
    cfg = res.config
    host = {(h.size, h.density, h.order, h.kind): h for h in res.host}
    if not res.complete:
        _out(console, "INTERRUPTED: partial results, what was measured before Ctrl-C", "bold yellow")
    load = res.meta.get("uptime_load")
    if load:
        _wrap(console, f"host: {res.meta.get('cpu', '?')}, {res.meta.get('cpus')} CPUs, Linux "
                       f"{res.meta.get('kernel')}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start")
    _wrap(console, f"each point: median of {cfg.repeat} runs interleaved across strategies (host: "
                   f"{CONTESTED_FACTOR * cfg.repeat} where fault and prefault overlap), in CPU time of the measuring "
                   "thread; spread ±IQR/2 as a % of the median; a winner is declared only where its IQR does not "
                   "overlap the others' (else 'tie').")
    by_point: dict[tuple[str, int, float, str], list[Run]] = {}
    for r in res.runs:
        by_point.setdefault((r.platform, r.size, r.density, r.order), []).append(r)
    for plat in cfg.platforms:
        pts = [(k, rs) for k, rs in by_point.items() if k[0] == plat]
        if not pts:
            continue
        _out(console)
        _out(console, f"{plat}: map + touch (strategy medians)", "bold")
        if full:
            rows = []
            for (_, size, d, order), rs in pts:
                for r in rs:
                    h = host.get((size, d, order, host_kind(r.strategy)))
                    rows.append([fmt_size(size), _pct(d), order[:3], r.strategy, fmt_ns(r.total.median),
                                 _iqr(r.total), fmt_ns(h.total_ns) if h and h.total else "-",
                                 fmt_ns(r.predicted_ns) if r.predicted_ns is not None else "-", str(r.faults),
                                 str(r.ptes)])
            _table(console, ["size", "dens", "ord", "strategy", "median", "IQR", "host", "model", "faults", "PTEs"],
                   rows, right=(0, 1, 4, 5, 6, 7, 8, 9))
            continue
        rows = []
        for (_, size, d, order), rs in pts:
            costs = {r.strategy: r.total for r in rs}
            w, tied = winner(costs)
            best = costs[tied[0]]
            f, p = next((r for r in rs if r.strategy == FAULT.name), None), next(
                (r for r in rs if r.strategy == PREFAULT.name), None)
            model = "-"
            if f and p and f.predicted_ns is not None and p.predicted_ns:
                model = f"{f.predicted_ns / p.predicted_ns:.2f}"
            fp = "-"
            if f and p:
                fp = "fault" if beats(f.total, p.total) else "prefault" if beats(p.total, f.total) else TIE
            rows.append([fmt_size(size), _pct(d), order[:3], w if w != TIE else f"tie({len(tied)})",
                         fmt_ns(best.median), _iqr(best), fp, _host_winner(host, size, d, order), model])
        _table(console, ["size", "dens", "ord", "winner", "median", "IQR", "f/pf", "host f/pf", "model f/pf"], rows,
               right=(0, 1, 4, 5, 8))
    if res.runs and not full:
        _wrap(console, "f/pf: fault vs prefault in dmamap; host f/pf: the host kernel's store-touch (one page per "
                       "fault) vs MAP_POPULATE; model f/pf: the profile's prediction of the host's fault / prefault "
                       "cost from dmamap's counts (below 1: fault cheaper).")
    _render_host(console, res)
    _render_model(console, res)
    cross = crossovers(res)
    if cross:
        _out(console)
        _out(console, "crossover: density below which fault beats prefault, median (interval)", "bold")
        _wrap(console, "'fault ≤d': fault cheaper at every density measured up to d; 'prefault ≥d': prefault "
                       "cheaper at every density from d")
        _table(console, ["platform", "size", "ord", "dmamap", "host kernel", "model"],
               [[c.platform, fmt_size(c.size), c.order[:3], c.dmamap.text(), c.host.text(),
                 c.predicted.text() if c.predicted else "-"] for c in cross], right=(1,))
    for s in res.skipped:
        _wrap(console, f"skipped: {s}")
    if res.targets:
        _out(console)
        _out(console, "targets: ratios against references of this same run", "bold")
        _wrap(console, "(a MISS depends on the host as much as on dmamap)")
        for t in res.targets:
            _wrap(console, f"{t.status:4}  {t.name}", style=_STYLE.get(t.status))
            _wrap(console, f"{t.measured}; goal {t.goal}", indent="      ")
    for sc in res.scenarios:
        _out(console)
        _out(console, f"scenario {sc.name}: {sc.title}", "bold")
        _table(console, sc.header, sc.rows, right=tuple(range(1, len(sc.header))))
        for n in sc.notes:
            _wrap(console, n)
    _out(console)
    end = res.meta.get("loadavg_end")
    parts = [f"store loop (limit): {res.store_ns_per_pte:.3f} ns per 8-byte PTE",
             f"sweep took {res.seconds:.1f} s"] if res.runs else []   # (no sweep: the targets time their own)
    parts += [f"load average at end {end[0]:.2f}"] if end else []
    if parts:
        _wrap(console, "; ".join(parts))


def _render_host(console: Console, res: SweepResult) -> None:
    if not res.host:
        return
    size = max(h.size for h in res.host)
    d = max(h.density for h in res.host)
    _out(console)
    _out(console, f"host references at {fmt_size(size)}, {_pct(d)} of pages, seq (kernel's own fault counts)",
         "bold")
    rows = []
    for k in HOST_KINDS:
        h = next((h for h in res.host if (h.size, h.density, h.order, h.kind) == (size, d, "seq", k)), None)
        if h is None:
            continue
        if h.unavailable:
            rows.append([k, "unavailable", "", "", h.unavailable[:30]])
            continue
        assert h.total is not None
        rows.append([k, fmt_ns(h.total.median), str(h.map_faults + h.faults),
                     f"{h.ptes / max(h.map_faults + h.faults, 1):.1f}", HOST_LABELS[k]])
    _table(console, ["reference", "median", "faults", "pg/flt", "what it measures"], rows, right=(1, 2, 3))
    f = res.host_facts or (res.profile.host if res.profile is not None else {})
    if f.get("anon_4k") and f.get("anon_thp"):
        _wrap(console, f"2 MiB pages (anonymous THP, {fmt_size(f['anon_4k'].get('size', 0))}, zeroing included): "
                       f"{f['anon_4k'].get('faults')} faults with MADV_NOHUGEPAGE, {f['anon_thp'].get('faults')} "
                       f"with MADV_HUGEPAGE ({f.get('thp_fault_drop', 0):.0f}× fewer); THP {f.get('thp_enabled')}, "
                       f"shmem THP {f.get('thp_shmem_enabled')}: large-page strategies are compared with the 4 KiB "
                       "references.")


def _render_model(console: Console, res: SweepResult) -> None:
    prof = res.profile
    if prof is None:
        if res.profile_note:
            _wrap(console, res.profile_note)
        return
    _out(console)
    _out(console, f"cost model: {prof.name}", "bold")
    if res.profile_note:
        _wrap(console, res.profile_note)
    _wrap(console, "ns per event: " + ", ".join(f"{k} {v:.1f}" for k, v in prof.costs_ns.items()))
    a = agreement(res)
    if a.ratios:
        _wrap(console, f"prediction vs measured host: fault vs prefault agrees at {a.agree_all}/{a.points} sweep "
                       f"points: {a.agree}/{a.ranked} where the host declared a winner (the model must predict "
                       f"it cheaper), {a.ties_agree}/{a.host_ties} host ties (the predicted fault/prefault ratio "
                       f"must lie within the host's quartile range); predicted/measured median "
                       f"{a.median_ratio:.2f}×, median |error| {a.median_abs_error:.0%} ({len(a.ratios)} runs).")
        if a.disagree:
            def seen(sz: int, d: float, o: str) -> str:
                c = calibration_ratio(prof, sz, d, o)
                return "" if c is None else f" (the calibration's host run: f/pf {c:.2f})"
            _wrap(console, "disagreements: " + "; ".join(
                f"{fmt_size(sz)} {_pct(d)} {o[:3]} host {h} (f/pf {hr:.2f}), model f/pf {m:.2f}{seen(sz, d, o)}"
                for sz, d, o, h, m, hr in a.disagree))


def to_json(res: SweepResult) -> dict[str, Any]:
    """Everything measured, with the derived figures, as plain JSON data."""
    def run(r: Run) -> dict[str, Any]:
        d = {k: v for k, v in asdict(r).items() if not isinstance(v, dict) or k in ("counts", "unmap_counts")}
        for k in ("total", "map", "touch", "unmap", "helper", "wall"):
            s = getattr(r, k)
            d[k] = s.to_json() if s else None
        d.update(total_ns=r.total_ns, x_limit=r.x_limit, host_kind=host_kind(r.strategy), faults=r.faults,
                 ptes=r.ptes)
        return d

    def hrun(h: Any) -> dict[str, Any]:
        d = {k: v for k, v in asdict(h).items() if k not in ("total", "map", "touch", "unmap", "wall")}
        for k in ("total", "map", "touch", "unmap", "wall"):
            s = getattr(h, k)
            d[k] = s.to_json() if s else None
        d["total_ns"] = h.total.median if h.total else None
        d["label"] = HOST_LABELS.get(h.kind, h.kind)
        return d

    a = agreement(res) if res.profile is not None else None
    return {
        "meta": dict(res.meta, dmamap=dmamap.__version__, seconds=res.seconds, complete=res.complete),
        "config": asdict(res.config),
        "store_loop_ns_per_pte": res.store_ns_per_pte,
        "runs": [run(r) for r in res.runs],
        "host": [hrun(h) for h in res.host],
        "winners": [{"platform": k[0], "size": k[1], "density": k[2], "order": k[3], "winner": w}
                    for k, w in point_winners(res).items()],
        "crossover": [asdict(c) for c in crossovers(res)],
        "profile": res.profile.to_json() if res.profile is not None else None,
        "model": None if a is None else {"points": a.points, "agree_all": a.agree_all, "ranked": a.ranked,
                                         "agree": a.agree, "host_ties": a.host_ties, "ties_agree": a.ties_agree,
                                         "median_ratio": a.median_ratio, "median_abs_error": a.median_abs_error,
                                         "disagree": a.disagree},
        "skipped": res.skipped,
        "targets": [asdict(t) for t in res.targets],
        "scenarios": [asdict(s) for s in res.scenarios],
    }


def compare(console: Console, a: dict[str, Any], b: dict[str, Any], names: tuple[str, str] = ("A", "B")) -> float:
    """Print what changed from run ``a`` to run ``b`` (JSON from --json); return the share of
    declared winners in ``a`` that ``b`` does not contradict (declares no other winner)."""
    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return (r["platform"], r["size"], r["density"], r["order"])

    wa = {key(w): w["winner"] for w in a.get("winners", [])}
    wb = {key(w): w["winner"] for w in b.get("winners", [])}
    common = [k for k in wa if k in wb]
    declared = [k for k in common if wa[k] != TIE]
    kept = [k for k in declared if wb[k] in (wa[k], TIE)]
    same = [k for k in common if wa[k] == wb[k]]
    _out(console, f"compare {names[0]} → {names[1]}", "bold")
    _wrap(console, f"winners: {len(same)}/{len(common)} points identical; of {len(declared)} winners declared in "
                   f"{names[0]}, {len(kept)} not contradicted in {names[1]} "
                   + (f"({len(kept) / len(declared):.0%})." if declared else "(none declared)."))
    rows = [[k[0], fmt_size(k[1]), _pct(k[2]), k[3][:3], wa[k], wb[k]] for k in common if wa[k] != wb[k]]
    if rows:
        _table(console, ["platform", "size", "dens", "ord", names[0][:14], names[1][:14]], rows)
    ra = {(*key(r), r["strategy"]): r for r in a.get("runs", [])}
    rb = {(*key(r), r["strategy"]): r for r in b.get("runs", [])}
    ch = sorted(((rb[k]["total"]["median"] / ra[k]["total"]["median"], k) for k in ra if k in rb
                 and ra[k]["total"]["median"]), key=lambda x: x[0])
    if ch:
        med = ch[len(ch) // 2][0]
        _wrap(console, f"run medians {names[1]}/{names[0]}: median {med:.2f}×, range {ch[0][0]:.2f}×–"
                       f"{ch[-1][0]:.2f}× over {len(ch)} runs")
    ta = {t["name"]: t for t in a.get("targets", [])}
    for t in b.get("targets", []):
        o = ta.get(t["name"])
        if o and (o["status"] != t["status"] or abs(t["value"] - o["value"]) > 0.1 * abs(o["value"] or 1)):
            _wrap(console, f"{o['status']}→{t['status']} {t['name']}: {o['value']:.3g} → {t['value']:.3g}")
    return len(kept) / max(len(declared), 1)
