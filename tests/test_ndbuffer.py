"""dmamap.allocate: DMA buffers as numpy arrays (PYNQ's allocate), correct
through the cache model -- a device DMA engine's writes show after
invalidate(), the array's writes reach the device after flush() -- zero-copy
where the memory model allows it, shadowed otherwise; numpy stays optional."""

from __future__ import annotations

import builtins
import importlib
import subprocess
import sys
from typing import Any

import pytest

import dmamap
from dmamap import PAGE_SIZE
from dmamap.errors import DmaLeakError, DmaUseAfterFreeError, InvalidArgumentError, PteBusyError

np = pytest.importorskip("numpy")

#: (platform, machine options); "x86-noncoherent" is x86 whose DMA does not snoop (the cache model on).
PLATFORMS = {"x86": {}, "arm": {}, "sram": {}, "riscv": {}, "x86-noncoherent": {"dma_coherent": False}}
#: Where the array is the buffer itself (a coherent machine: no cache model).
ZERO_COPY = {"x86"}


#: Every platform with both kinds; x86 with DMA that does not snoop streams only (x86's coherent
#: allocator relies on snooping: a coherent buffer there has no meaning).
CASES = [(p, c) for p in PLATFORMS for c in (True, False) if not (p == "x86-noncoherent" and c)]


@pytest.mark.parametrize(("platform", "coherent"), CASES,
                         ids=[f"{p}-{'coherent' if c else 'streaming'}" for p, c in CASES])
def test_device_and_array_meet_at_flush_and_invalidate(platform: str, coherent: bool) -> None:
    with dmamap.Machine(platform.split("-")[0], **PLATFORMS[platform]) as m:
        dev = m.add_device("engine")
        a = dmamap.allocate(dev, (4, 256), np.uint32, coherent=coherent)
        assert isinstance(a, dmamap.DmaArray) and a.shape == (4, 256) and a.dtype == np.uint32
        assert a.coherent is coherent and a.zero_copy is (platform in ZERO_COPY)
        assert (a == 0).all()
        # the array's writes reach the device after flush()
        a[:] = np.arange(1024, dtype=np.uint32).reshape(4, 256)
        a.flush()
        got = np.frombuffer(dev.dma_read(a.device_address, a.nbytes), dtype=np.uint32)
        assert (got == np.arange(1024)).all()
        # the device's writes show in the array after invalidate()
        dev.dma_write(a[2].device_address, np.full(256, 0xA5A5A5A5, np.uint32).tobytes())
        a.invalidate()
        assert (a[2] == 0xA5A5A5A5).all()
        assert (a[1] == np.arange(256, 512)).all()
        # slices know their own bus and kernel addresses
        assert a[1].device_address == a.device_address + 1024
        assert a[1, 3:].cpu_addr == int(a.cpu_addr) + 1024 + 12
        a.free()
        a.free()   # idempotent
        with pytest.raises(DmaUseAfterFreeError):
            a.flush()


def test_noncoherent_without_the_syncs_is_stale_on_arm() -> None:
    """What the syncs are for: on a non-coherent machine the CPU's view and the
    device's differ until flush/invalidate (the shadow makes it visible)."""
    with dmamap.Machine("arm") as m:
        dev = m.add_device("engine")
        a = dmamap.allocate(dev, 64, np.uint8, coherent=False)
        a[:] = 1
        a.flush()
        a[:] = 2                                     # not flushed: the device still sees 1
        assert dev.dma_read(a.device_address, 64) == b"\x01" * 64
        dev.dma_write(a.device_address, b"\x03" * 64)
        assert (a == 2).all()                        # not invalidated: the CPU still sees its own
        a.invalidate()
        assert (a == 3).all()
        a.free()


def test_flush_twice_without_invalidate() -> None:
    """PYNQ's flush may repeat (send, send again): the CPU takes the buffer back first."""
    with dmamap.Machine("arm") as m:
        dev = m.add_device("engine")
        a = dmamap.allocate(dev, 16, np.uint8, coherent=False, direction=dmamap.DMA_TO_DEVICE)
        for value in (1, 2, 3):
            a[:] = value
            a.flush()
            assert dev.dma_read(a.device_address, 16) == bytes([value]) * 16
        a.free()


def test_zero_copy_array_is_the_memory_and_pins_it() -> None:
    with dmamap.Machine("x86") as m:
        dev = m.add_device("engine")
        a = dmamap.allocate(dev, PAGE_SIZE, np.uint8)
        dev.dma_write(a.device_address, b"\x07" * 8)
        assert (a[:8] == 7).all()                    # coherent: visible without any call
        a[8] = 9
        assert m.kernel.read8(a.cpu_addr + 8) == 9
        page = m.virt_to_page(a.cpu_addr)
        assert page.refcount == 2                    # pinned while the array's buffer lives
        with pytest.raises(PteBusyError):
            m.free_pages(page)
        a.free()
        assert page.refcount == 0                    # unpinned and freed


def test_context_manager_and_computed_results() -> None:
    with dmamap.Machine("arm") as m:
        dev = m.add_device("engine")
        with dmamap.allocate(dev, (8,), "f8") as a:
            a[:] = 1.5
            b = a * 2                                 # a result in ordinary memory
            assert b.sum() == 24.0
            with pytest.raises(InvalidArgumentError):
                b.flush()
            with pytest.raises(InvalidArgumentError):
                _ = a.copy().device_address
            a.flush()
            assert np.frombuffer(dev.dma_read(a.device_address, 64), "f8").tolist() == [1.5] * 8
        with pytest.raises(DmaUseAfterFreeError):
            a.invalidate()
        dev.remove()   # nothing leaked


def test_leaked_buffer_is_reported_at_device_removal() -> None:
    with dmamap.Machine("x86") as m:
        dev = m.add_device("engine")
        a = dmamap.allocate(dev, 100, np.uint16)
        with pytest.raises(DmaLeakError):
            dev.remove()
        a.free()
        dev.remove()


@pytest.mark.parametrize(("shape", "dtype"), [((0,), "u4"), ((-1,), "u4"), ((2, 1.5), "u4"), (True, "u1"),
                                             ((2, True), "u1"), ("ab", "u1")])
def test_bad_shapes_are_refused(shape: Any, dtype: str) -> None:
    with dmamap.Machine("x86") as m:
        dev = m.add_device("engine")
        with pytest.raises(InvalidArgumentError):
            dmamap.allocate(dev, shape, dtype)
        with pytest.raises(TypeError):
            dmamap.allocate("dev", 4)   # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError):
            dmamap.allocate(dev, 4, coherent=False, direction=7)
        with pytest.raises(TypeError):
            dmamap.allocate(dev, 4, coherent=False, direction="in")   # type: ignore[arg-type]
        dev.remove()


def test_import_and_use_without_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    """numpy is an optional extra: dmamap imports and works without it, and
    allocate names the extra to install."""
    real_import = builtins.__import__

    def no_numpy(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "numpy" or name.startswith("numpy."):
            raise ImportError("No module named 'numpy'")
        return real_import(name, *args, **kwargs)

    saved = {k: v for k, v in sys.modules.items() if k == "numpy" or k.startswith("numpy.")}
    for k in saved:
        monkeypatch.delitem(sys.modules, k)
    monkeypatch.delitem(sys.modules, "dmamap._ndarray", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_numpy)
    monkeypatch.setattr(importlib, "import_module", _no_numpy_import_module(importlib.import_module))
    import dmamap.ndbuffer as ndb

    with dmamap.Machine("x86") as m:
        dev = m.add_device("engine")
        buf = dmamap.dma_alloc_coherent(dev, PAGE_SIZE)   # the library works
        m.kernel.write32(buf.cpu_addr, 1)
        with pytest.raises(ImportError, match=r"dmamap\[numpy\]"):
            ndb.allocate(dev, 4)
        with pytest.raises(ImportError, match=r"dmamap\[numpy\]"):
            _ = dmamap.DmaArray
        dmamap.dma_free_coherent(dev, PAGE_SIZE, *buf[:2])
        dev.remove()


def _no_numpy_import_module(real: Any) -> Any:
    def import_module(name: str, package: str | None = None) -> Any:
        if name == "numpy" or name.startswith("numpy."):
            raise ImportError("No module named 'numpy'")
        return real(name, package)
    return import_module


def test_import_dmamap_does_not_import_numpy() -> None:
    code = "import sys, dmamap; assert 'numpy' not in sys.modules, 'numpy imported'; print(dmamap.allocate)"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


@pytest.mark.parametrize("section", ["## Reading and writing mappings from Python", "## numpy buffers"])
def test_docs_examples_run(section: str) -> None:
    """docs/dma.md's examples of these sections run as written, warnings as errors."""
    import re
    import warnings
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "dma.md").read_text()
    body = text.split(section, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", body, flags=re.S)
    assert blocks
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for i, code in enumerate(blocks):
            exec(compile(code, f"docs/dma.md {section} block {i}", "exec"), {})   # noqa: S102 - the docs' own code


def test_shapes_take_numpy_integers() -> None:
    with dmamap.Machine("x86") as m:
        dev = m.add_device("engine")
        for shape, want in ((np.int64(5), (5,)), ((np.int32(2), 3), (2, 3)), ([4], (4,))):
            with dmamap.allocate(dev, shape, np.uint8) as a:
                assert a.shape == want
        dev.remove()


@pytest.mark.parametrize("platform", ["x86", "arm"])
def test_buffer_of_a_closed_machine(platform: str) -> None:
    m = dmamap.Machine(platform)
    dev = m.add_device("engine")
    a = dmamap.allocate(dev, 16, np.uint8)
    a[:] = 3
    m.close()
    with pytest.raises(dmamap.MachineClosedError):
        a.flush()
    with pytest.raises(dmamap.MachineClosedError):
        a.free()
    assert a.shape == (16,)   # the array itself stays readable (zero-copy: the memory went back, zeroed)
