"""Backend attributes are validated when a backend is registered or first
loaded: a typo is a BackendError naming the attribute and the allowed values."""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest

import dmamap
from dmamap.backends import Backend
from dmamap.backends.arm import ArmBackend
from dmamap.backends.x86 import X86Backend
from dmamap.errors import BackendError
from dmamap.isa import ISAS
from dmamap.strategy import STRATEGIES

reg = importlib.import_module("dmamap.registry")


@pytest.fixture(autouse=True)
def restore_registry() -> Iterator[None]:
    reg.available_backends()
    saved = dict(reg._known)
    yield
    with reg._lock:
        reg._known.clear()
        reg._known.update(saved)


def variant(base: type[Backend], **attrs: Any) -> type[Backend]:
    return type("Variant", (base,), {"name": "variant", **attrs})


@pytest.mark.parametrize(("base", "attr", "value", "allowed"), [
    (X86Backend, "pio", "windows", ["'trap'", "'window'"]),
    (X86Backend, "coherent_memory", "dram", ["'ram'", "'remap'", "'sram'"]),
    (X86Backend, "isa", "arm64", list(map(repr, ISAS))),
    (X86Backend, "kernel_cache", "NORMAL_NC", ["WB", "UC-", "WC"]),
    (ArmBackend, "user_cache", "WC", ["NORMAL_NC", "DEVICE_nGnRnE"]),
    (X86Backend, "default_strategy", "lazy", list(STRATEGIES)),
    (X86Backend, "dma_coherent", "yes", ["True or False"]),
    (X86Backend, "default_sram", -4096, ["multiple of 0x1000"]),
    (X86Backend, "default_sram", 100, ["multiple of 0x1000"]),
    (ArmBackend, "default_sram", 1 << 40, ["multiple of 0x1000"]),
    (X86Backend, "dma_offset", 1 << 64, ["2**64"]),
    (X86Backend, "dma_offset", 1.5, ["2**64"]),
])
@pytest.mark.parametrize("form", ["instance", "class", "lazy"])
def test_bad_attribute_is_named_with_allowed_values(base: type[Backend], attr: str, value: object,
                                                    allowed: list[str], form: str) -> None:
    """Registering (or first loading, for a lazy reference) a backend with one bad
    attribute raises BackendError naming it, its value and what is allowed;
    nothing is registered for an object, and the lazy one never loads."""
    cls = variant(base, **{attr: value})
    if form == "lazy":
        mod = types.ModuleType("dmamap_test_lazy_backend")
        mod.Bad = cls  # type: ignore[attr-defined]
        sys.modules[mod.__name__] = mod
        try:
            dmamap.register_backend("variant", f"{mod.__name__}:Bad")
            with pytest.raises(BackendError) as exc:
                dmamap.Machine("variant", ram=1 << 20)
        finally:
            del sys.modules[mod.__name__]
        assert dmamap.registry["variant"] == f"{mod.__name__}:Bad"     # still the unloaded reference
    else:
        with pytest.raises(BackendError) as exc:
            dmamap.register_backend("variant", cls() if form == "instance" else cls)
        assert "variant" not in dmamap.available_backends()
    msg = str(exc.value)
    assert f"{attr} = {value!r}" in msg
    for word in allowed:
        assert word in msg


def test_sram_memory_refuses_a_page_handing_default() -> None:
    """Coherent memory without page descriptors cannot default to a strategy that
    hands out pages."""
    with pytest.raises(BackendError, match="default_strategy = 'fault-page'.*page descriptors"):
        dmamap.register_backend("variant", variant(X86Backend, coherent_memory="sram", default_sram=1 << 20,
                                                   default_strategy="fault-page"))


def test_good_backends_and_plain_strings_validate() -> None:
    """The seed backends validate; plain strings equal to the enum values are fine."""
    for name in ("x86", "arm", "sram"):
        dmamap.get_backend(name).validate()
    dmamap.register_backend("variant", variant(ArmBackend, pio="window", coherent_memory="remap",
                                               default_strategy="fault-around", dma_offset=-(1 << 32)))
    with dmamap.Machine("variant", ram=1 << 20) as m:
        assert m.backend is not None and m.backend.name == "variant"


def test_isa_list_is_read_at_validation_time() -> None:
    """Every ISA the core's table has is accepted, with its own cache names, without the
    validator naming any ISA (riscv64 came after the validator was written)."""
    assert "riscv64" in ISAS
    be = variant(X86Backend, isa="riscv64", kernel_cache="PMA", user_cache="NC")()
    be.validate()
    with pytest.raises(BackendError, match="'riscv64'"):   # the allowed list names it
        variant(X86Backend, isa="riscv")().validate()


def test_backend_and_registry_reprs() -> None:
    """Backends and the registry print something useful, not <object at 0x...>."""
    r = repr(dmamap.get_backend("arm"))
    assert r.startswith("<ArmBackend 'arm': aarch64") and "remap" in r and "NORMAL_NC" in r and " at 0x" not in r
    rr = repr(dmamap.registry)
    assert "'x86': 'dmamap.backends.x86:X86Backend'" in rr and " at 0x" not in rr


def test_describe_has_the_whole_policy() -> None:
    """describe() covers every policy attribute a porter sets."""
    d = dmamap.get_backend("arm").describe()
    assert d["bus offset"] == "bus address = physical address - 0x40000000"
    assert d["memtype policy"].startswith("conflicting cache types are reported")
    assert d["kernel attribute"] == d["user attribute"] == "NORMAL_NC"
    assert d["default strategy"] == "prefault" and d["pio"] == "memory-mapped I/O window"
    assert dmamap.get_backend("x86").describe()["bus offset"].startswith("none")
    assert dmamap.get_backend("sram").describe()["sram pool"] == "16 MiB"
