"""The backend registry: entry points, unknown names, third-party backends,
duplicates and the read-only view."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from importlib.metadata import entry_points

import pytest

import dmamap
from dmamap import PAGE_SIZE
from dmamap.backends import Backend
from dmamap.backends.arm import ArmBackend
from dmamap.backends.sram import SramBackend
from dmamap.backends.x86 import X86Backend
from dmamap.errors import BackendError

# The module, not the ``dmamap.registry`` mapping that the package exports.
reg = importlib.import_module("dmamap.registry")
SEED = {"x86": X86Backend, "arm": ArmBackend, "sram": SramBackend}


@pytest.fixture(autouse=True)
def restore_registry() -> Iterator[None]:
    """Registrations made by a test do not leak into other tests."""
    reg.available_backends()
    saved = dict(reg._known)
    yield
    with reg._lock:
        reg._known.clear()
        reg._known.update(saved)


class BusOffsetBackend(X86Backend):
    """A third-party x86 variant whose devices see RAM 4 GiB up."""

    name = "bus4g"
    dma_offset = -(1 << 32)
    description = "test backend"


def test_unknown_backend_lists_known_names() -> None:
    """Machine('nope') raises BackendError (a LookupError) naming every backend."""
    with pytest.raises(BackendError) as exc:
        dmamap.Machine("nope")
    assert isinstance(exc.value, LookupError)
    msg = str(exc.value)
    assert "'nope'" in msg
    for name in SEED:
        assert name in msg
    with pytest.raises(BackendError):
        dmamap.get_backend("")


def test_seed_backends_come_from_entry_points() -> None:
    """x86, arm and sram are registered through the 'dmamap.arch' entry point group
    and load to the right classes and ISAs."""
    eps = {ep.name: ep.value for ep in entry_points(group=reg.ENTRY_POINT_GROUP)}
    assert reg.ENTRY_POINT_GROUP == "dmamap.arch"
    for name, cls in SEED.items():
        assert eps[name] == f"{cls.__module__}:{cls.__qualname__}"
        assert name in dmamap.available_backends()
        be = dmamap.get_backend(name)
        assert type(be) is cls and be.name == name
        assert dmamap.get_backend(name) is be          # loaded once
        assert dmamap.registry[name] == eps[name]
    assert dmamap.get_backend("x86").isa == "x86_64"
    assert dmamap.get_backend("arm").isa == dmamap.get_backend("sram").isa == "aarch64"


@pytest.mark.parametrize("form", ["instance", "class", "string"])
def test_register_third_party_backend(form: str) -> None:
    """A Backend subclass registered as an instance, as the class itself or as a lazy
    'module:attr' string becomes a working platform, with its own bus offset."""
    target: object = {"instance": BusOffsetBackend(), "class": BusOffsetBackend,
                      "string": f"{__name__}:BusOffsetBackend"}[form]
    dmamap.register_backend("bus4g", target)  # type: ignore[arg-type]
    assert "bus4g" in dmamap.available_backends()
    assert dmamap.registry["bus4g"].endswith(":BusOffsetBackend")
    with dmamap.Machine("bus4g", ram=1 << 20) as m:
        assert isinstance(m.backend, BusOffsetBackend) and m.isa == "x86_64"
        dev = m.add_device("nic")
        buf = dmamap.dma_alloc_coherent(dev, PAGE_SIZE)
        pa = dmamap.dma_coherent_to_pfn(dev, buf.cpu_addr, buf.dma_handle) * PAGE_SIZE
        assert buf.dma_handle == pa + (1 << 32)
        mm = m.new_address_space()
        vma = mm.mmap(PAGE_SIZE)
        dmamap.dma_mmap_coherent(dev, vma, *buf)
        mm.write(vma.start, b"third party")
        assert dev.dma_read(buf.dma_handle, 11) == b"third party"


def test_duplicates_are_refused() -> None:
    """Registering a name twice (or over a seed backend) raises BackendError and
    keeps the first; re-registering the identical object is a no-op; clobber=True
    replaces."""
    first = BusOffsetBackend()
    dmamap.register_backend("bus4g", first)
    dmamap.register_backend("bus4g", first)
    with pytest.raises(BackendError):
        dmamap.register_backend("bus4g", BusOffsetBackend())
    with pytest.raises(BackendError):
        dmamap.register_backend("bus4g", BusOffsetBackend)
    assert dmamap.get_backend("bus4g") is first
    for name in SEED:
        with pytest.raises(BackendError):
            dmamap.register_backend(name, BusOffsetBackend())
        assert type(dmamap.get_backend(name)) is SEED[name]
    second = BusOffsetBackend()
    dmamap.register_backend("bus4g", second, clobber=True)
    assert dmamap.get_backend("bus4g") is second


def test_bad_registrations_are_refused() -> None:
    """Empty names, bare ISA names and objects that are not backends are refused at
    registration; a lazy reference that does not load fails with BackendError."""
    with pytest.raises(BackendError):
        dmamap.register_backend("", BusOffsetBackend())
    for isa in ("x86_64", "aarch64"):
        with pytest.raises(BackendError):
            dmamap.register_backend(isa, BusOffsetBackend())
    for junk in (42, object(), BackendError, None):
        with pytest.raises(BackendError):
            dmamap.register_backend("junk", junk)  # type: ignore[arg-type]
    assert "junk" not in dmamap.available_backends()
    dmamap.register_backend("missing", "no_such_module_dmamap:Thing")
    with pytest.raises(BackendError):
        dmamap.Machine("missing")
    dmamap.register_backend("notabackend", "dmamap.errors:DmamapError")
    with pytest.raises(BackendError):
        dmamap.get_backend("notabackend")


def test_registry_is_read_only_mapping() -> None:
    """dmamap.registry is a Mapping view (name -> where it loads from) that cannot be
    modified, and reflects new registrations."""
    from collections.abc import Mapping, MutableMapping

    r = dmamap.registry
    assert isinstance(r, Mapping) and not isinstance(r, MutableMapping)
    assert set(SEED) <= set(r) and len(r) == len(dmamap.available_backends())
    assert list(r) == sorted(r)
    with pytest.raises(TypeError):
        r["x86"] = "elsewhere:X"  # type: ignore[index]
    with pytest.raises(TypeError):
        del r["x86"]  # type: ignore[attr-defined]
    for attr in ("pop", "update", "clear", "setdefault"):
        assert not hasattr(r, attr)
    with pytest.raises(KeyError):
        r["nope"]
    dmamap.register_backend("bus4g", BusOffsetBackend)
    assert "bus4g" in r and r.get("bus4g", "").endswith(":BusOffsetBackend")


def test_bare_isa_machine_has_no_policy() -> None:
    """Machine('x86_64'/'aarch64') is a bare ISA: no backend, so the DMA helpers
    refuse with a message naming the platforms."""
    for isa in ("x86_64", "aarch64"):
        with dmamap.Machine(isa, ram=1 << 20) as m:
            assert m.backend is None and m.isa == isa
            dev = m.add_device("nic")
            with pytest.raises(dmamap.InvalidArgumentError, match="x86"):
                dmamap.dma_alloc_coherent(dev, PAGE_SIZE)


def test_backend_base_class_describes_itself() -> None:
    """Every seed backend is a Backend and describes its platform table row."""
    for name, cls in SEED.items():
        be = dmamap.get_backend(name)
        assert isinstance(be, Backend) and issubclass(cls, Backend)
        d = be.describe()
        assert d["isa"] == be.isa
        assert d["dma_coherent"].startswith("yes" if name == "x86" else "no")
        assert d["pio"] == ("trapped port space" if name == "x86" else "memory-mapped I/O window")
