"""The ``dmamap`` command (also ``python -m dmamap``).

Every command reads at 80 columns and in pipes: table cells wrap instead of
being cut, and when stdout is not a terminal there is no colour, no progress
display and no box drawing.  ``--json FILE`` writes the results as JSON;
``--json -`` prints only the JSON, on stdout.
"""

from __future__ import annotations

import _thread
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

import dmamap
from dmamap.bench.config import SWEEP_STRATEGIES
from dmamap.errors import BackendError, DmamapError, InvalidArgumentError
from dmamap.isa import ISAS, isa_info


class _Command(TyperCommand):
    """A command whose --help shows no value type (typer prints ``<bool>`` for it)."""

    def get_help_option(self, ctx: Any) -> Any:
        opt = super().get_help_option(ctx)
        if opt is not None:
            opt.metavar = ""
        return opt


class _Group(TyperGroup):
    """The app's group, with the same --help as :class:`_Command`."""

    def get_help_option(self, ctx: Any) -> Any:
        opt = super().get_help_option(ctx)
        if opt is not None:
            opt.metavar = ""
        return opt


app = typer.Typer(add_completion=False, no_args_is_help=True, cls=_Group, rich_markup_mode="markdown",
                  help="Architecture-portable mmap helpers for device memory, on an emulated machine.")
console = Console()
err_console = Console(stderr=True)

#: The seed backends, shown first (in this order) wherever every backend is listed.
SEED_BACKENDS = ("x86", "arm", "sram")
#: Exit status after Ctrl-C, as a shell reports a SIGINT death.
EXIT_INTERRUPTED = 130

JsonOption = Annotated[str | None, typer.Option(  # noqa: UP007
    "--json", metavar="FILE", help="Also write the results as JSON to FILE ('-': only the JSON, on stdout).")]


def _version(value: bool) -> None:
    if value:
        console.print(f"dmamap {dmamap.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool | None, typer.Option("--version", callback=_version, is_eager=True,  # noqa: UP007
                                                    metavar="", help="Show the version and exit.")] = None,
) -> None:
    """dmamap command line."""


def fail(exc: DmamapError) -> NoReturn:
    """A library error: one red line naming its class, exit status 1."""
    err_console.print(f"[red]error:[/red] {type(exc).__name__}: {escape(str(exc))}", highlight=False,
                      soft_wrap=True)
    raise typer.Exit(1)


def error_line(message: str) -> NoReturn:
    """One red ``error:`` line on stderr, exit status 1."""
    err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@contextlib.contextmanager
def _ctrl_c() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt in the main thread until it has ended the block: an
    interrupt that lands in a finalizer or a gc callback (where Python would print "Exception
    ignored" and go on) is raised again within 0.1 s without a traceback, and one swallowed
    anywhere else (a callback that catches everything) is raised again after a second."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    done = threading.Event()
    raised: list[float] = []   # when the handler last raised

    def handler(signum: int, frame: object) -> None:
        raised.append(time.monotonic())
        raise KeyboardInterrupt

    def repeat() -> None:
        while not done.wait(0.1):
            if swallowed.is_set() or (raised and time.monotonic() - raised[-1] >= 1.0):
                swallowed.clear()
                _thread.interrupt_main(signal.SIGINT)

    def unraisable(args: Any) -> None:
        """The interrupt landed in a finalizer or a gc callback: no traceback, raise it again."""
        if isinstance(args.exc_value, KeyboardInterrupt):
            swallowed.set()
        else:
            old_hook(args)

    swallowed = threading.Event()
    old_hook = sys.unraisablehook
    sys.unraisablehook = unraisable
    old = signal.signal(signal.SIGINT, handler)
    watchdog = threading.Thread(target=repeat, name="dmamap-ctrl-c", daemon=True)
    watchdog.start()
    try:
        yield
    finally:
        done.set()
        signal.signal(signal.SIGINT, old)
        sys.unraisablehook = old_hook
        watchdog.join()


def _out(json_file: str | None) -> Console:
    """Where the human-readable output goes: nowhere when the JSON owns stdout."""
    return Console(quiet=True) if json_file == "-" else console


def _emit_json(json_file: str | None, data: dict[str, Any]) -> None:
    if json_file is None:
        return
    text = json.dumps(data, indent=2) + "\n"
    if json_file == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        Path(json_file).write_text(text)
    except OSError as exc:
        error_line(f"cannot write {json_file}: {exc.strerror or exc}")
    console.print(f"results written to {escape(json_file)}", highlight=False)


def _table(title: str, *columns: str) -> Table:
    """A table whose cells fold (never an ellipsis); no box drawing outside a terminal."""
    table = Table(title=title, box=box.HEAVY_HEAD if console.is_terminal else None)
    for col in columns:
        table.add_column(col, overflow="fold")
    return table


def all_backends() -> list[str]:
    """Every registered backend, the seed ones first."""
    names = dmamap.available_backends()
    return [n for n in SEED_BACKENDS if n in names] + [n for n in names if n not in SEED_BACKENDS]


def require_backend(name: str) -> None:
    """Refuse a bare ISA or an unknown name with a BackendError that lists the backends."""
    if name in ISAS:
        raise BackendError(f"{name!r} is a bare ISA, not a backend: it has no DMA policy to run; "
                           f"backends: {', '.join(all_backends())}")
    if name not in dmamap.available_backends():
        raise BackendError(f"unknown backend {name!r}; known backends: {', '.join(all_backends())}")
    dmamap.get_backend(name)   # loads and validates it


#: The owner column for regions that no device owns.
_REGION_OWNERS = {"ram": "RAM", "sram": "SRAM pool", "io-window": "I/O window"}


def _ram_max_mib(platform: str) -> int | None:
    """The most RAM, in MiB, ``platform``'s memory map holds (None: unknown platform)."""
    try:
        isa = platform if platform in ISAS else dmamap.get_backend(platform).isa
        return isa_info(isa).layout.ram_max >> 20
    except DmamapError:
        return None


@app.command(cls=_Command)
def info(
    platform: Annotated[str, typer.Argument(metavar="PLATFORM", help="A backend (listed at the end) or a bare ISA "
                                                                     "(x86_64, aarch64, riscv64).")] = "x86",
    ram: Annotated[int, typer.Option(metavar="MIB", help="Emulated RAM in MiB.")] = 256,
    json_file: JsonOption = None,
) -> None:
    """Print a platform's policy, its machine's configuration and physical memory map."""
    out = _out(json_file)
    ram_max = _ram_max_mib(platform)
    if ram_max is not None and not 1 <= ram <= ram_max:
        fail(InvalidArgumentError(f"--ram is in MiB: between 1 and {ram_max} for {platform}, not {ram}"))
    try:
        with dmamap.Machine(platform, ram=ram << 20) as m:
            data = m.info()
            policy = m.backend.describe() if m.backend is not None else None
            description = m.backend.description if m.backend is not None else "bare ISA: no DMA policy"
    except DmamapError as exc:
        fail(exc)
    regions = [{"kind": r.kind, "start": r.base, "end": r.end, "size": r.size,
                "owner": r.owner or _REGION_OWNERS.get(r.kind, "")} for r in data.pop("memory_map")]
    backends = all_backends()
    table = _table(f"dmamap machine: {data['platform']}", "setting", "value")
    table.add_row("description", escape(description))
    for k, v in data.items():
        table.add_row(k, hex(v) if k == "page_offset" else escape(str(v)))
    out.print(table)
    if policy is not None:
        pt = _table(f"{data['platform']} policy (Backend.describe())", "setting", "value")
        for k, v in policy.items():
            if k != "isa":
                pt.add_row(k, escape(v))
        out.print(pt)
    mt = _table("physical memory map", "start", "end", "size", "kind", "owner")
    for r in regions:
        mt.add_row(f"{r['start']:#014x}", f"{r['end']:#014x}", _size(r["size"]), r["kind"], escape(r["owner"]))
    out.print(mt)
    out.print(f"ISAs (bare, no DMA policy): {', '.join(ISAS)}", highlight=False)
    out.print(f"backends: {', '.join(backends)}", highlight=False)
    _emit_json(json_file, {
        "platform": data["platform"], "description": description, "machine": data, "policy": policy,
        "memory_map": [{**r, "start_hex": hex(r["start"]), "end_hex": hex(r["end"])} for r in regions],
        "isas": list(ISAS), "backends": backends,
    })


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n:#x}"


@app.command(cls=_Command)
def demo(
    platforms: Annotated[list[str] | None, typer.Option(  # noqa: UP007
        "--platform", "-p", metavar="BACKEND",
        help="Backend to run (repeatable; default: every registered backend).")] = None,
    json_file: JsonOption = None,
) -> None:
    """Replay the original bug: one coherent buffer mapped by four drivers on each platform."""
    from dmamap.demo import collect, demo_table

    out = _out(json_file)
    names = platforms or all_backends()
    try:
        for name in names:
            require_backend(name)
        run = collect(names)
    except DmamapError as exc:
        fail(exc)
    out.print(demo_table(run, boxed=out.is_terminal))
    out.print(f"ran in {run.seconds:.2f} s")
    _emit_json(json_file, run.to_dict())


@app.command(cls=_Command)
def conformance(
    backend: Annotated[str, typer.Argument(metavar="BACKEND", help="A registered backend (x86, arm, sram or a "
                                                                   "dmamap.arch entry point).")],
    json_file: JsonOption = None,
    rule: Annotated[list[str] | None, typer.Option("--rule", "-r", metavar="RULE",  # noqa: UP007
                                                   help="Run only this rule (repeatable).")] = None,
    detail: Annotated[bool, typer.Option("--detail", metavar="",
                                         help="One row per check instead of per rule.")] = False,
    examples: Annotated[int, typer.Option(min=1, metavar="N", help="Examples for the model-based rule.")] = 30,
    shrink: Annotated[bool, typer.Option(metavar="", help="Shrink a model-based failure to a minimal "
                                                          "sequence.")] = True,
) -> None:
    """Run the conformance suite against BACKEND; exit status 1 on any failure, 130 on Ctrl-C (after
    printing, and writing as JSON, what ran)."""
    from dmamap.testing import runner
    from dmamap.testing.render import render_report
    from dmamap.testing.rules import rule_by_name

    out = _out(json_file)
    try:
        names = None if not rule else [rule_by_name(n).name for n in rule]
    except KeyError as exc:
        error_line(str(exc.args[0]))
    try:
        require_backend(backend)
    except DmamapError as exc:
        error_line(str(exc))
    runner.isolate_hypothesis_home()
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=out, transient=True)
    total = runner.count_checks(names)
    try:
        with _ctrl_c(), progress:
            task = progress.add_task(f"conformance {backend}", total=total)
            report = runner.run_conformance(
                backend, rules=names, model_examples=examples, model_shrink=shrink,
                on_start=lambda r, v: progress.update(task, description=f"{r.name}{f'[{v}]' if v else ''}"),
                on_result=lambda res: progress.advance(task))
    except runner.Interrupted as exc:
        report = exc.report
    except KeyboardInterrupt:
        err_console.print("interrupted before any check ran", highlight=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except DmamapError as exc:
        fail(exc)
    render_report(out, report, detail=detail)
    _emit_json(json_file, report.to_dict())
    if report.interrupted:
        err_console.print(f"interrupted: {len(report.results)} of {total} checks ran", highlight=False)
        raise typer.Exit(EXIT_INTERRUPTED)
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


@app.command(cls=_Command)
def calibrate(
    output: Annotated[str | None, typer.Option("--output", "-o", metavar="FILE",  # noqa: UP007
                                               help="Where to save the profile (default: the profile "
                                                    "dmamap bench loads).")] = None,
    repeat: Annotated[int, typer.Option(min=1, metavar="N", help="Runs per calibration point (median kept).")] = 5,
) -> None:
    """Measure the host kernel's cost per event (PTE written, fault, TLB miss, PTE cleared, call) on this
    machine and save it as a cost profile for dmamap bench --profile."""
    from dmamap import bench as b
    from dmamap.bench.calibrate import CALIBRATION_RUNS

    path = output or b.default_profile_path()
    progress, advance = _progress(b.calibrate_steps(repeat))
    try:
        with progress:
            prof = b.calibrate(repeat, advance)
    except OSError as exc:
        error_line(f"calibration failed: {exc}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    prof.save(path)
    console.print(f"host kernel cost per event ({len(CALIBRATION_RUNS)} host runs × {repeat}, median "
                  f"|error| of the fit {prof.fit['median_abs_rel_error']:.0%}):", highlight=False)
    for line in b.model.describe(prof):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    console.print(f"profile written to {path}", highlight=False, markup=False, soft_wrap=True)


@app.command("bench", cls=_Command)
def bench(
    quick: Annotated[bool, typer.Option("--quick", metavar="", help="Small preset (4 KiB, 1 MiB, 64 MiB; median of 5): "
                                                        "under a minute.")] = False,
    platforms: Annotated[list[str] | None, typer.Option("--platform", "-p", metavar="BACKEND",  # noqa: UP007
                                                           help="Platforms: any registered backend (default x86, "
                                                                "arm, sram, riscv).")] = None,
    sizes: Annotated[list[str] | None, typer.Option("--size", "-s", metavar="SIZE",  # noqa: UP007
                                                       help="Buffer sizes, e.g. 4K 64K 1M 16M 256M 1G.")] = None,
    densities: Annotated[list[float] | None, typer.Option("--density", "-d", metavar="D",  # noqa: UP007
                                                             help="Touched fraction of pages, 0 < d ≤ 1.")] = None,
    orders: Annotated[list[str] | None, typer.Option("--order", metavar="ORDER", help="seq and/or random.")] = None,  # noqa: UP007
    strategies: Annotated[list[str] | None, typer.Option(  # noqa: UP007
        "--strategy", metavar="NAME", help=f"Strategies: {', '.join(SWEEP_STRATEGIES)}.")] = None,
    repeat: Annotated[int | None, typer.Option(metavar="N", help="Runs per point, interleaved (median and IQR kept).")  # noqa: UP007
                      ] = None,
    targets: Annotated[bool, typer.Option(metavar="", help="Measure the ratio targets too.")] = True,
    sweep: Annotated[bool, typer.Option(metavar="", help="Run the strategy sweep.")] = True,
    full: Annotated[bool, typer.Option("--full", metavar="", help="Every run, not the summary.")] = False,
    profile_file: Annotated[str | None, typer.Option("--profile", metavar="FILE",  # noqa: UP007
                                                     help="Cost profile for the host predictions (default: the "
                                                          "one dmamap calibrate saved, else calibrate now).")] = None,
    scenario: Annotated[list[str] | None, typer.Option(  # noqa: UP007
        "--scenario", metavar="NAME", help="Preset from real use: gpu-32x4g, "
                                                       "alsa, nic-ring (repeatable; skips the sweep and "
                                                       "targets unless asked).")] = None,
    compare_files: Annotated[list[str] | None, typer.Option("--compare", metavar="JSON",  # noqa: UP007
                                                            help="Compare two --json results (give it twice) "
                                                                 "instead of measuring.")] = None,
    json_file: Annotated[str | None, typer.Option("--json", metavar="FILE",  # noqa: UP007
                                                  help="Write all results to this JSON file.")] = None,
    plot_file: Annotated[str | None, typer.Option("--plot", metavar="PNG",  # noqa: UP007
                                                  help="Draw cost against density (PNG).")] = None,
    seed: Annotated[int, typer.Option(metavar="N", help="Seed of the random touch orders.")] = 1,
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
    progress, advance = _progress(b.bench_steps(cfg, targets, sweep) + len(scenario or []) + b.calibrate_steps(3))
    try:
        with _ctrl_c(), progress:
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
