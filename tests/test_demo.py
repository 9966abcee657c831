"""`dmamap demo` and dmamap.demo.exercise: the original bug replayed with four
drivers on each platform."""

from __future__ import annotations

import re
import time

import pytest
from typer.testing import CliRunner

from dmamap.cli import app
from dmamap.demo import DRIVERS, exercise

EXPECTED = {
    "x86": {"virt_to_page fault": "correct", "nopage right page": "correct", "remap_pfn_range": "correct",
            "dma_mmap_coherent": "correct"},
    "arm": {"virt_to_page fault": "error", "nopage right page": "stale", "remap_pfn_range": "stale",
            "dma_mmap_coherent": "correct"},
    "sram": {"virt_to_page fault": "error", "nopage right page": "error", "remap_pfn_range": "stale",
             "dma_mmap_coherent": "correct"},
    "riscv": {"virt_to_page fault": "error", "nopage right page": "stale", "remap_pfn_range": "stale",
              "dma_mmap_coherent": "correct"},
}
# sram has no page descriptor: dma_coherent_to_page itself refuses
ERRORS = {"virt_to_page fault": "VirtToPageError", "nopage right page": "BadPageError"}


@pytest.mark.parametrize("platform", list(EXPECTED))
@pytest.mark.parametrize("driver", list(DRIVERS))
def test_exercise_verdicts(platform: str, driver: str) -> None:
    """Each driver on each platform gets the verdict the platform table predicts,
    with a detail that says why."""
    out = exercise(platform, DRIVERS[driver])
    assert out.verdict == EXPECTED[platform][driver], out.detail
    if out.verdict == "error":
        assert out.detail == ERRORS[driver]
    elif out.verdict == "stale":
        assert "device read" in out.detail and "stale bytes" in out.detail
        cached, nc = ("PMA", "NC") if platform == "riscv" else ("NORMAL", "NORMAL_NC")
        assert f"reported: {cached} alias of {nc}" in out.detail
    else:
        cache = {"x86": "WB", "riscv": "NC"}.get(platform, "NORMAL_NC")
        assert out.detail == f"coherent both ways, user {cache}"


@pytest.mark.parametrize("platform", ["arm", "riscv"])
def test_nopage_right_page_refused_when_strict(platform: str) -> None:
    """The 2004 case (right page, cacheable alias) is refused with strict_memtype=True."""
    out = exercise(platform, DRIVERS["nopage right page"], strict_memtype=True)
    assert (out.verdict, out.detail) == ("error", "MemtypeConflictError")


def _cells(output: str) -> str:
    """The table's text with box drawing and wrapping removed."""
    return " ".join(re.sub(r"[│┃┏┓┗┛┡┩└┘━─┳┻╇┼┯┷╈╋┠┨]", " ", output).split())


def test_demo_command() -> None:
    """`dmamap demo` exits 0 in well under 2 s and prints all the platforms with
    their verdicts."""
    t0 = time.perf_counter()
    result = CliRunner().invoke(app, ["demo"])
    elapsed = time.perf_counter() - t0
    assert result.exit_code == 0, result.output
    assert elapsed < 1.5
    text = _cells(result.output)
    rows = {}
    for platform in EXPECTED:
        m = re.search(rf"\b{platform}\b", text)
        assert m, f"{platform} missing from the demo output"
        rows[platform] = m.start()
    assert rows["x86"] < rows["arm"] < rows["sram"]
    x86 = text[rows["x86"]:rows["arm"]]
    arm = text[rows["arm"]:rows["sram"]]
    assert x86.count("correct") >= 3 and "stale" not in x86 and "error" not in x86
    assert "error" in arm and "VirtToPage" in arm and "stale" in arm and "correct" in arm
    assert "stale" in text[rows["sram"]:] and "error" in text[rows["sram"]:]
    for driver in DRIVERS:
        assert driver.split()[0] in text
    assert re.search(r"ran in \d+\.\d+ s", text)


def test_demo_single_platform_and_unknown() -> None:
    """--platform limits the rows; an unknown platform exits 1 with the known ones."""
    result = CliRunner().invoke(app, ["demo", "-p", "arm"])
    assert result.exit_code == 0
    text = _cells(result.output)
    assert "arm" in text and "x86" not in text and "sram" not in text
    bad = CliRunner().invoke(app, ["demo", "-p", "nope"])
    assert bad.exit_code == 1
    assert "BackendError" in bad.output and "x86" in bad.output
