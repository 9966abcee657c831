"""The driver prototypes in examples/drivers/ run end to end on every seed
platform (each main() asserts what its driver must achieve)."""

from __future__ import annotations

import importlib.util
import inspect
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import dmamap

DRIVERS = Path(__file__).resolve().parent.parent / "examples" / "drivers"
PLATFORMS = ("x86", "arm", "sram", "riscv")


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_driver_{name}", DRIVERS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod   # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("platform", PLATFORMS)
def test_pcm(platform: str) -> None:
    r = _load("pcm").main(platform)
    assert r["periods"] == r["irqs"] == 10 and r["attribute_reports"] == 0


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("mode", ["aperture", "dma"])
def test_framebuffer(platform: str, mode: str) -> None:
    r = _load("framebuffer").main(platform, mode)
    assert r["user_cache"] == r["kernel_cache"]
    if mode == "aperture":
        assert r["user_cache"] in ("WC", "NORMAL_NC", "NC")   # write-combining on every ISA


@pytest.mark.parametrize("platform", PLATFORMS)
def test_nic_rx_ring(platform: str) -> None:
    r = _load("nic_rx_ring").main(platform)
    assert r["frames"] == 40 and r["chunks"] > 1 and r["attribute_reports"] == 0
    # the ring is partially unmapped wherever munmap can split a VMA
    assert r["partial_munmap"] == ("length" in inspect.signature(dmamap.AddressSpace.munmap).parameters)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_uart16550(platform: str) -> None:
    r = _load("uart16550").main(platform)
    assert (r["tx"], r["rx"], r["irqs"]) == (b"AT\r\n", b"OK\r\nRING", 2)


def test_every_prototype_runs_as_a_script() -> None:
    for script in sorted(DRIVERS.glob("*.py")):
        out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, (script.name, out.stderr)
        assert "'platform': 'x86'" in out.stdout
