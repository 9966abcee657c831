"""The device bus: the machine's devices by name and by id, each id used once."""

from __future__ import annotations

import itertools
import threading
from typing import Any

from dmamap.errors import InvalidArgumentError

__all__ = ["DeviceBus"]


class DeviceBus:
    """Attached devices; ids count up and are never reused, so an MMIO access
    the core routes to a removed device's id can never reach a newer one."""

    def __init__(self) -> None:
        self._by_name: dict[str, Any] = {}
        self._by_id: dict[int, Any] = {}
        self._names: dict[int, str] = {}   # every id ever given, for the memory map's owners
        self._ids = itertools.count()
        self._lock = threading.Lock()

    def reserve(self, name: str) -> int:
        """A fresh id for a device about to be attached as ``name``."""
        with self._lock:
            if name in self._by_name:
                raise InvalidArgumentError(f"a device named {name!r} already exists on this machine")
            i = next(self._ids)
            self._names[i] = name
            return i

    def attach(self, dev: Any) -> None:
        with self._lock:
            if dev.name in self._by_name:
                raise InvalidArgumentError(f"a device named {dev.name!r} already exists on this machine")
            self._by_name[dev.name] = dev
            self._by_id[dev.id] = dev

    def detach(self, dev: Any) -> None:
        name, i = dev.name, dev.id
        with self._lock:
            if self._by_name.get(name) is dev:
                del self._by_name[name]
            self._by_id.pop(i, None)

    def by_id(self, i: int) -> Any:
        return self._by_id.get(i)

    def by_name(self, name: str) -> Any:
        return self._by_name.get(name)

    def name_of(self, i: int) -> str | None:
        return self._names.get(i)

    def devices(self) -> dict[str, Any]:
        """A snapshot: name -> device."""
        with self._lock:
            return dict(self._by_name)
