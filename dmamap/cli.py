"""The ``dmamap`` command."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

import dmamap
from dmamap.bench.config import SWEEP_STRATEGIES
from dmamap.errors import DmamapError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Architecture-portable mmap helpers for device memory, on an emulated machine.")
console = Console()
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        console.print(f"dmamap {dmamap.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool | None, typer.Option("--version", callback=_version, is_eager=True,  # noqa: UP007
                                                    help="Show the version and exit.")] = None,
) -> None:
    """dmamap command line."""


def fail(exc: DmamapError) -> NoReturn:
    """A library error: one red line naming its class, exit status 1."""
    err_console.print(f"[red]error:[/red] {type(exc).__name__}: {exc}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@app.command()
def info(
    platform: Annotated[str, typer.Argument(
        help="Backend (x86, arm, sram, riscv, ...) or ISA (x86_64, aarch64, riscv64).")] = "x86",
    ram: Annotated[int, typer.Option(help="Emulated RAM in MiB.")] = 256,
) -> None:
    """Print a machine's configuration and physical memory map."""
    try:
        with dmamap.Machine(platform, ram=ram << 20) as m:
            data = m.info()
            table = Table(title=f"dmamap machine: {data['platform']}")
            table.add_column("setting")
            table.add_column("value")
            for k, v in data.items():
                if k == "memory_map":
                    continue
                table.add_row(k, hex(v) if k == "page_offset" else str(v))
            console.print(table)
            mt = Table(title="physical memory map")
            for col in ("start", "end", "kind", "owner"):
                mt.add_column(col)
            for r in data["memory_map"]:
                mt.add_row(f"{r.base:#014x}", f"{r.end:#014x}", r.kind, r.owner or "")
            console.print(mt)
            console.print(f"backends: {', '.join(dmamap.available_backends())}")
    except DmamapError as exc:
        fail(exc)


@app.command()
def demo(
    platforms: Annotated[list[str] | None, typer.Option("--platform", "-p",  # noqa: UP007
                                                           help="Platforms to run (default: all four).")] = None,
) -> None:
    """Replay the original bug: three drivers on each platform."""
    from dmamap.demo import run_demo

    try:
        ok = run_demo(platforms or ["x86", "arm", "sram", "riscv"], console)
    except DmamapError as exc:
        fail(exc)
    if not ok:
        raise typer.Exit(1)


def error_line(message: str) -> NoReturn:
    """One red ``error:`` line on stderr, exit status 1."""
    err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@app.command()
def conformance(
    backend: Annotated[str, typer.Argument(help="A registered backend (x86, arm, sram or a dmamap.arch entry "
                                                "point).")],
    json_file: Annotated[Path | None, typer.Option("--json", metavar="FILE",  # noqa: UP007
                                                   help="Also write the results as JSON to FILE.")] = None,
    rule: Annotated[list[str] | None, typer.Option("--rule", "-r",  # noqa: UP007
                                                   help="Run only this rule (repeatable).")] = None,
    detail: Annotated[bool, typer.Option("--detail", help="One row per check instead of per rule.")] = False,
    examples: Annotated[int, typer.Option(help="Examples for the model-based rule.")] = 30,
    shrink: Annotated[bool, typer.Option(help="Shrink a model-based failure to a minimal sequence.")] = True,
) -> None:
    """Run the conformance suite against BACKEND; exit status 1 on any failure."""
    from dmamap.testing import runner
    from dmamap.testing.render import render_report
    from dmamap.testing.rules import rule_by_name

    try:
        names = None if not rule else [rule_by_name(n).name for n in rule]
    except KeyError as exc:
        error_line(str(exc.args[0]))
    runner.isolate_hypothesis_home()
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console, transient=True)
    try:
        with progress:
            task = progress.add_task(f"conformance {backend}", total=runner.count_checks(names))
            report = runner.run_conformance(
                backend, rules=names, model_examples=examples, model_shrink=shrink,
                on_start=lambda r, v: progress.update(task, description=f"{r.name}{f'[{v}]' if v else ''}"),
                on_result=lambda res: progress.advance(task))
    except DmamapError as exc:
        fail(exc)
    render_report(console, report, detail=detail)
    if json_file is not None:
        json_file.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        console.print(f"results written to {escape(str(json_file))}", highlight=False)
    if not report.ok:
        raise typer.Exit(1)


def _progress(total: int) -> tuple[Progress, Callable[[str], None]]:
    """A transient progress bar (nothing when stdout is not a terminal); no auto-refresh: a
    rendering thread running during the timed C calls would skew them."""
    columns = (TextColumn("[progress.description]{task.description:<30.30}"), BarColumn(bar_width=20),
               MofNCompleteColumn(), TimeElapsedColumn())
    progress = Progress(*columns, console=console, transient=True, auto_refresh=False,
                        disable=not console.is_terminal)
    task = progress.add_task("starting", total=total)

    def advance(what: str) -> None:
        progress.update(task, description=what, advance=1)
        progress.refresh()
    return progress, advance


@app.command()
def calibrate(
    output: Annotated[str | None, typer.Option("--output", "-o", metavar="FILE",  # noqa: UP007
                                               help="Where to save the profile (default: the profile "
                                                    "dmamap bench loads).")] = None,
    repeat: Annotated[int, typer.Option(min=1, help="Runs per calibration point (median kept).")] = 5,
) -> None:
    """Measure the host kernel's cost per event (PTE written, fault, TLB miss, PTE cleared, call) on this
    machine and save it as a cost profile for dmamap bench --profile."""
    from dmamap import bench as b
    from dmamap.bench.calibrate import CALIBRATION_RUNS

    path = output or b.default_profile_path()
    progress, advance = _progress(repeat + 2)
    try:
        with progress:
            prof = b.calibrate(repeat, advance)
    except OSError as exc:
        error_line(f"calibration failed: {exc}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    prof.save(path)
    console.print(f"host kernel cost per event ({len(CALIBRATION_RUNS)} host runs × {repeat}, median "
                  f"|error| of the fit {prof.fit['median_abs_rel_error']:.0%}):", highlight=False)
    for k, v in prof.costs_ns.items():
        console.print(f"  {k:11} {v:9.1f} ns  {b.model.EVENT_HELP[k].split(':')[0].split(',')[0]}",
                      highlight=False, markup=False, soft_wrap=True)
    console.print(f"profile written to {path}", highlight=False, markup=False, soft_wrap=True)


@app.command("bench")
def bench(
    quick: Annotated[bool, typer.Option("--quick", help="Small preset (4 KiB, 1 MiB, 64 MiB; median of 5): "
                                                        "under a minute.")] = False,
    platforms: Annotated[list[str] | None, typer.Option("--platform", "-p",  # noqa: UP007
                                                           help="Platforms: any registered backend (default x86, "
                                                                "arm, sram, riscv).")] = None,
    sizes: Annotated[list[str] | None, typer.Option("--size", "-s",  # noqa: UP007
                                                       help="Buffer sizes, e.g. 4K 64K 1M 16M 256M 1G.")] = None,
    densities: Annotated[list[float] | None, typer.Option("--density", "-d",  # noqa: UP007
                                                             help="Touched fraction of pages, 0 < d ≤ 1.")] = None,
    orders: Annotated[list[str] | None, typer.Option("--order", help="seq and/or random.")] = None,  # noqa: UP007
    strategies: Annotated[list[str] | None, typer.Option(  # noqa: UP007
        "--strategy", help=f"Strategies: {', '.join(SWEEP_STRATEGIES)}.")] = None,
    repeat: Annotated[int | None, typer.Option(help="Runs per point, interleaved (median and IQR kept).")  # noqa: UP007
                      ] = None,
    targets: Annotated[bool, typer.Option(help="Measure the ratio targets too.")] = True,
    sweep: Annotated[bool, typer.Option(help="Run the strategy sweep.")] = True,
    full: Annotated[bool, typer.Option("--full", help="Every run, not the summary.")] = False,
    profile_file: Annotated[str | None, typer.Option("--profile", metavar="FILE",  # noqa: UP007
                                                     help="Cost profile for the host predictions (default: the "
                                                          "one dmamap calibrate saved, else calibrate now).")] = None,
    scenario: Annotated[list[str] | None, typer.Option("--scenario", help="Preset from real use: gpu-32x4g, "  # noqa: UP007
                                                       "alsa, nic-ring (repeatable; skips the sweep and "
                                                       "targets unless asked).")] = None,
    compare_files: Annotated[list[str] | None, typer.Option("--compare", metavar="JSON",  # noqa: UP007
                                                            help="Compare two --json results (give it twice) "
                                                                 "instead of measuring.")] = None,
    json_file: Annotated[str | None, typer.Option("--json",  # noqa: UP007
                                                  help="Write all results to this JSON file.")] = None,
    plot_file: Annotated[str | None, typer.Option("--plot",  # noqa: UP007
                                                  help="Draw cost against density (PNG).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random touch orders.")] = 1,
) -> None:
    """Prefault versus lazy fault across sizes, densities and orders, against the store-loop limit, the host
    kernel and the cost model's prediction of it; ratio targets with PASS/MISS."""
    from dmamap import bench as b

    if compare_files:
        if len(compare_files) != 2:
            raise typer.BadParameter("give --compare exactly twice: --compare A.json --compare B.json",
                                     param_hint="--compare")
        try:
            a, c = (json.loads(Path(f).read_text()) for f in compare_files)
        except (OSError, json.JSONDecodeError) as exc:
            error_line(f"cannot read a result: {exc}")
        b.compare(console, a, c, (Path(compare_files[0]).name, Path(compare_files[1]).name))
        return
    if plot_file:
        try:
            b.check_matplotlib()
        except RuntimeError as exc:
            err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
    bad = [s for s in scenario or [] if s not in b.SCENARIOS]
    if bad:
        raise typer.BadParameter(f"unknown scenario {', '.join(bad)}; choose from {', '.join(b.SCENARIOS)}",
                                 param_hint="--scenario")
    try:
        cfg = b.make_config(quick=quick, platforms=platforms, sizes=sizes, densities=densities, orders=orders,
                            strategies=strategies, repeat=repeat, seed=seed)
    except b.ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint=exc.param) from None
    if scenario and not (sizes or densities or quick):
        sweep = targets = False   # a scenario alone
    note = ""
    prof = None
    try:
        if profile_file:
            prof = b.load_profile(profile_file)
            note = f"profile: {profile_file}"
        elif os.path.exists(b.default_profile_path()):
            prof = b.load_profile(b.default_profile_path())
            note = f"profile: {b.default_profile_path()} (from dmamap calibrate, {prof.date})"
    except b.ProfileError as exc:
        raise typer.BadParameter(str(exc), param_hint="--profile") from None
    res = b.SweepResult(cfg)
    progress, advance = _progress(b.bench_steps(cfg, targets, sweep) + len(scenario or []) + 3)
    try:
        with progress:
            if prof is None and sweep:
                prof = b.calibrate(3, advance)
                note = "profile: calibrated in this run (no saved profile; run dmamap calibrate to keep one)"
            res.profile_note = note
            b.run_bench(cfg, targets=targets, sweep=sweep, profile=prof, scenarios=scenario or [],
                        advance=advance, res=res)
    except KeyboardInterrupt:
        res.complete = False
        if prof is not None and res.profile is None:
            res.profile = prof
    except DmamapError as exc:
        fail(exc)
    b.render(console, res, full=full)
    if json_file:
        with open(json_file, "w") as f:
            json.dump(b.to_json(res), f, indent=1)
        console.print(f"results written to {json_file}", highlight=False, markup=False, soft_wrap=True)
    if plot_file and res.runs:
        b.plot(res, plot_file)
        console.print(f"plot written to {plot_file}", highlight=False, markup=False, soft_wrap=True)
    if not res.complete:
        raise typer.Exit(130)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
