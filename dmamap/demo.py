"""``dmamap demo``: the original bug, replayed with the same three drivers on
every platform."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import dmamap
from dmamap import PAGE_SHIFT, PAGE_SIZE, Device, DmaBuffer, Machine, Vma, VmFault
from dmamap.errors import DmamapError

BUF_PAGES = 4


@dataclass
class Outcome:
    verdict: str   # "correct", "stale", "error"
    detail: str


def driver_virt_to_page(dev: Device, vma: Vma, buf: DmaBuffer) -> None:
    """Driver 1: a fault handler returning virt_to_page(cpu_addr + offset)."""

    def fault(vmf: VmFault) -> dmamap.Page:
        return dmamap.virt_to_page(buf.cpu_addr + (vmf.pgoff << PAGE_SHIFT), machine=dev.machine)

    vma.set_fault_handler(fault)


def driver_remap_pfn_range(dev: Device, vma: Vma, buf: DmaBuffer) -> None:
    """Driver 2: remap_pfn_range of the buffer's pfn with the VMA's default attributes."""
    pfn = dmamap.dma_coherent_to_pfn(dev, buf.cpu_addr, buf.dma_handle)
    dmamap.remap_pfn_range(vma, vma.start, pfn, buf.size, vma.page_prot)


def driver_dma_mmap_coherent(dev: Device, vma: Vma, buf: DmaBuffer) -> None:
    """Driver 3: the helper."""
    dmamap.dma_mmap_coherent(dev, vma, *buf)


DRIVERS: dict[str, Callable[[Device, Vma, DmaBuffer], None]] = {
    "virt_to_page fault": driver_virt_to_page,
    "remap_pfn_range": driver_remap_pfn_range,
    "dma_mmap_coherent": driver_dma_mmap_coherent,
}


def exercise(platform: str, driver: Callable[[Device, Vma, DmaBuffer], None]) -> Outcome:
    """Map a coherent buffer with ``driver``; check both DMA directions."""
    with Machine(platform, ram=16 << 20) as m:
        dev = m.add_device("demo-dev", bars=[PAGE_SIZE])
        buf = dmamap.dma_alloc_coherent(dev, BUF_PAGES * PAGE_SIZE)
        mm = m.new_address_space()
        vma = mm.mmap(buf.size)
        try:
            driver(dev, vma, buf)
            # CPU -> device: user space fills the buffer, the device reads it.
            pattern = bytes((i * 7 + 1) & 0xFF for i in range(buf.size))
            mm.write(vma.start, pattern)
            seen = dev.dma_read(buf.dma_handle, buf.size)
            # device -> CPU: the device writes, user space reads.
            reply = bytes((i * 13 + 5) & 0xFF for i in range(buf.size))
            dev.dma_write(buf.dma_handle, reply)
            got = mm.read(vma.start, buf.size)
        except DmamapError as exc:
            return Outcome("error", f"{type(exc).__name__}")
        problems = []
        if seen != pattern:
            bad = sum(a != b for a, b in zip(seen, pattern, strict=False))
            problems.append(f"device read {bad} stale bytes")
        if got != reply:
            bad = sum(a != b for a, b in zip(got, reply, strict=False))
            problems.append(f"CPU read {bad} stale bytes")
        reports = m.attribute_reports
        if problems:
            note = "; ".join(problems)
            if reports:
                note += f" (reported: {reports[0]['requested']} alias of {reports[0]['existing']})"
            return Outcome("stale", note)
        t = mm.translate(vma.start)
        return Outcome("correct", f"coherent both ways, user {t.cache if t else '?'}")


@dataclass
class DemoRun:
    """Every driver's outcome on every platform, in order."""

    outcomes: dict[str, dict[str, Outcome]]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"platforms": [{"platform": p, "drivers": {d: asdict(o) for d, o in row.items()}}
                              for p, row in self.outcomes.items()],
                "seconds": round(self.seconds, 3)}


def collect(platforms: list[str]) -> DemoRun:
    """Run the three drivers on each platform."""
    t0 = time.perf_counter()
    outcomes = {p: {name: exercise(p, driver) for name, driver in DRIVERS.items()} for p in platforms}
    return DemoRun(outcomes, time.perf_counter() - t0)


def demo_table(run: DemoRun, *, boxed: bool = True) -> Table:
    """One row per platform, one column per driver; cells fold, never truncate."""
    table = Table(title="dmamap demo: one buffer, three drivers, each platform", box=box.HEAVY_HEAD if boxed else None)
    table.add_column("platform", overflow="fold")
    for name in DRIVERS:
        table.add_column(name, overflow="fold")
    styles = {"correct": "green", "stale": "yellow", "error": "red"}
    for platform, row in run.outcomes.items():
        table.add_row(escape(platform), *(f"[{styles[o.verdict]}]{o.verdict}[/]: {escape(o.detail)}"
                                          for o in row.values()))
    return table


def run_demo(platforms: list[str], console: Console) -> bool:
    """Run and print the demo; True when it ran (the verdicts are the point, not a failure)."""
    run = collect(platforms)
    console.print(demo_table(run, boxed=console.is_terminal))
    console.print(f"ran in {run.seconds:.2f} s")
    return True
