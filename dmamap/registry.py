"""Backend registry: the in-tree platforms and any package's ``dmamap.arch``
entry points, loaded lazily on first use."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from importlib import import_module
from typing import Any

from dmamap.backends import Backend
from dmamap.errors import BackendError
from dmamap.isa import ISAS

ENTRY_POINT_GROUP = "dmamap.arch"

# name -> "module:attr" (lazy) or a loaded Backend instance
_known: dict[str, str | Backend] = {}
_lock = threading.Lock()
_scanned = False

__all__ = ["ENTRY_POINT_GROUP", "available_backends", "get_backend", "register_backend", "unregister_backend",
           "registry", "resolve_backend"]


def _scan() -> None:
    global _scanned
    with _lock:
        if _scanned:
            return
        from importlib.metadata import entry_points  # on first lookup: its import and scan cost start-up time

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            _known.setdefault(ep.name, ep.value)
        _scanned = True


def register_backend(name: str, backend: str | Backend, *, clobber: bool = False) -> None:
    """Register a backend object or :class:`Backend` subclass, or a lazy
    ``"module:attr"`` reference to one."""
    if not isinstance(name, str) or not name:
        raise BackendError(f"backend name must be a non-empty str, not {name!r}")
    if name in ISAS:
        raise BackendError(f"backend name {name!r} is a bare ISA name, which Machine() never looks up")
    if isinstance(backend, type) and issubclass(backend, Backend):
        backend = backend()
    if not isinstance(backend, (str, Backend)):
        raise BackendError(f"backend {name!r} must be a Backend, a Backend subclass or a 'module:attr' string, "
                           f"not {type(backend).__name__}")
    if isinstance(backend, Backend):
        backend.validate()
    _scan()
    with _lock:
        if name in _known and not clobber and _known[name] != backend:
            raise BackendError(f"backend {name!r} is already registered (pass clobber=True to replace it)")
        _known[name] = backend


def unregister_backend(name: str) -> None:
    """Forget a backend registered under ``name`` (entry points come back on a rescan)."""
    _scan()
    with _lock:
        if name not in _known:
            raise BackendError(f"unknown backend {name!r}; known backends: {', '.join(sorted(_known))}")
        del _known[name]


def available_backends() -> list[str]:
    """Names of every registered backend (none is imported by this)."""
    _scan()
    return sorted(_known)


def get_backend(name: str) -> Backend:
    """The backend registered under ``name``; unknown names list the known ones."""
    _scan()
    with _lock:
        entry = _known.get(name)
    if entry is None:
        raise BackendError(f"unknown backend {name!r}; known backends: {', '.join(available_backends())} "
                           f"(or a bare ISA: {', '.join(ISAS)})")
    if isinstance(entry, str):
        mod, _, attr = entry.partition(":")
        try:
            obj: Any = import_module(mod)
            for part in attr.split(".") if attr else []:
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise BackendError(f"backend {name!r} could not be loaded from {entry!r}: {exc}") from exc
        if isinstance(obj, type) and issubclass(obj, Backend):
            obj = obj()
        if not isinstance(obj, Backend):
            raise BackendError(f"backend {name!r} ({entry!r}) is not a dmamap.backends.Backend")
        obj.validate()
        with _lock:
            _known[name] = obj
        entry = obj
    return entry


def resolve_backend(arch: str | Backend | type[Backend]) -> tuple[str, Backend | None]:
    """What a machine of ``arch`` is: ``(isa, backend)`` for a backend (by name,
    object or class), ``(isa, None)`` for a bare ISA name."""
    if isinstance(arch, type) and issubclass(arch, Backend):
        arch = arch()
    if isinstance(arch, Backend):
        return arch.isa, arch
    if not isinstance(arch, str):
        raise TypeError(f"arch must be a backend name, a Backend or an ISA name, not {type(arch).__name__}")
    if arch in ISAS:
        return arch, None
    backend = get_backend(arch)
    return backend.isa, backend


class _View(Mapping[str, str]):
    def __getitem__(self, key: str) -> str:
        _scan()
        v = _known[key]
        return v if isinstance(v, str) else f"{type(v).__module__}:{type(v).__qualname__}"

    def __iter__(self) -> Any:
        _scan()
        return iter(sorted(_known))

    def __len__(self) -> int:
        _scan()
        return len(_known)

    def __repr__(self) -> str:
        return f"<dmamap.registry {dict(self)!r}>"


#: Read-only view: backend name -> where it is loaded from.
registry: Mapping[str, str] = _View()
