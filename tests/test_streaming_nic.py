"""The streaming-DMA NIC prototype in examples/: correct on every platform,
each deliberate mistake named by DMA-API debug and, on arm, seen as stale data."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

import dmamap

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "streaming_nic" / "nic.py"
PLATFORMS = ("x86", "arm", "sram", "riscv", "iommu")


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("streaming_nic", EXAMPLE)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["streaming_nic"] = mod
    spec.loader.exec_module(mod)
    return mod


nic = _load()

EXPECTED = {
    "missing-sync": dmamap.DmaCpuOwnershipError,
    "wrong-direction": dmamap.DmaSyncError,
    "cpu-access-while-device-owned": dmamap.DmaCpuOwnershipError,
    "leaked-mapping": dmamap.DmaLeakError,
    "unchecked-mapping-error": dmamap.DmaMappingErrorUncheckedError,
}
#: Mistakes that corrupt data on a non-coherent machine (the others are only named).
STALE = {"missing-sync", "wrong-direction", "cpu-access-while-device-owned"}


@pytest.mark.parametrize("platform", PLATFORMS)
def test_correct_driver_is_correct_and_clean(platform: str) -> None:
    out = nic.run(platform)
    assert out.correct
    assert not out.report, out.report.summary()
    assert len(out.device_got) == 6 and len(out.driver_read) == 6


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("mistake", sorted(EXPECTED))
def test_each_mistake_is_named(platform: str, mistake: str) -> None:
    out = nic.run(platform, mistake)
    errors = {e.error for e in out.report.events}
    assert errors == {EXPECTED[mistake]}, out.report.summary()
    noncoherent = platform != "x86"
    if mistake in STALE and noncoherent:
        assert not out.correct   # stale data, as on hardware
    else:
        assert out.correct


def test_mistake_raises_in_raise_mode() -> None:
    with dmamap.Machine("arm", ram=16 << 20) as m:
        dev = nic.Nic(m)
        drv = nic.Driver(m, dev, "missing-sync")
        dev.receive(b"frame")
        with pytest.raises(dmamap.DmaCpuOwnershipError):
            drv.rx_poll()


def test_unknown_mistake() -> None:
    with pytest.raises(ValueError, match="unknown mistake"):
        nic.run("x86", "typo")
