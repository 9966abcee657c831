"""``dmamap demo``: the original bug, replayed with the same three drivers on
every platform."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

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


def driver_nopage_right_page(dev: Device, vma: Vma, buf: DmaBuffer) -> None:
    """Driver 2: the 2004 nopage driver fixed to return the right page
    (dma_coherent_to_page), still with the VMA's default cacheable protection."""

    def fault(vmf: VmFault) -> dmamap.Page:
        return dmamap.dma_coherent_to_page(dev, buf.cpu_addr, buf.dma_handle, vmf.pgoff << PAGE_SHIFT)

    vma.set_fault_handler(fault)


def driver_remap_pfn_range(dev: Device, vma: Vma, buf: DmaBuffer) -> None:
    """Driver 3: remap_pfn_range of the buffer's pfn with the VMA's default attributes."""
    pfn = dmamap.dma_coherent_to_pfn(dev, buf.cpu_addr, buf.dma_handle)
    dmamap.remap_pfn_range(vma, vma.start, pfn, buf.size, vma.page_prot)


def driver_dma_mmap_coherent(dev: Device, vma: Vma, buf: DmaBuffer) -> None:
    """Driver 4: the helper."""
    dmamap.dma_mmap_coherent(dev, vma, *buf)


DRIVERS: dict[str, Callable[[Device, Vma, DmaBuffer], None]] = {
    "virt_to_page fault": driver_virt_to_page,
    "nopage right page": driver_nopage_right_page,
    "remap_pfn_range": driver_remap_pfn_range,
    "dma_mmap_coherent": driver_dma_mmap_coherent,
}


#: Column widths: each function name and error class stays whole, and the table fits 80 columns.
WIDTHS = {"virt_to_page fault": 15, "nopage right page": 12, "remap_pfn_range": 15, "dma_mmap_coherent": 17}


def exercise(platform: str, driver: Callable[[Device, Vma, DmaBuffer], None], *,
             strict_memtype: bool | None = None) -> Outcome:
    """Map a coherent buffer with ``driver``; check both DMA directions."""
    with Machine(platform, ram=16 << 20, strict_memtype=strict_memtype) as m:
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
    """Run the four drivers on each platform."""
    t0 = time.perf_counter()
    outcomes = {p: {name: exercise(p, driver) for name, driver in DRIVERS.items()} for p in platforms}
    return DemoRun(outcomes, time.perf_counter() - t0)


def demo_table(run: DemoRun, *, boxed: bool = True) -> Group:
    """One row per platform, one column per driver, a short verdict per cell; what
    went stale is told once per distinct outcome, in numbered notes under the table."""
    table = Table(title="dmamap demo: one coherent buffer, four drivers, each platform",
                  box=box.HEAVY_HEAD if boxed else None, show_edge=False, pad_edge=False)
    table.add_column("platform", width=8, overflow="fold")
    for name in DRIVERS:
        table.add_column(name, width=WIDTHS[name], overflow="fold")
    styles = {"correct": "green", "stale": "yellow", "error": "red"}
    notes: dict[str, int] = {}

    def cell(o: Outcome) -> str:
        if o.verdict == "stale":
            n = notes.setdefault(o.detail, len(notes) + 1)
            return f"[{styles[o.verdict]}]stale[/] [{n}]"
        if o.verdict == "correct":
            return f"[{styles[o.verdict]}]correct[/] ({escape(o.detail.removeprefix('coherent both ways, user '))})"
        return f"[{styles[o.verdict]}]{o.verdict}[/]: {escape(o.detail)}"

    for platform, row in run.outcomes.items():
        table.add_row(escape(platform), *(cell(o) for o in row.values()))
    legend = Text("correct: both DMA directions see the other side's bytes, through the user mapping's "
                  "memory type (in brackets); stale: a side read old bytes; error: the mapping was refused "
                  "(right where the memory has no page descriptor).", style="dim")
    lines = [Text(f"[{n}] {detail}") for detail, n in notes.items()]
    return Group(table, legend, *lines)


def run_demo(platforms: list[str], console: Console) -> bool:
    """Run and print the demo; True when it ran (the verdicts are the point, not a failure)."""
    run = collect(platforms)
    console.print(demo_table(run, boxed=console.is_terminal))
    console.print(f"ran in {run.seconds:.2f} s")
    return True
