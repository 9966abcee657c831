"""The I/O-port space: which device claims which ports (x86 ``in``/``out``
and the memory-mapped I/O window of other platforms both end here)."""

from __future__ import annotations

import threading
from typing import Any

from dmamap.errors import InvalidArgumentError

__all__ = ["PortSpace", "PORT_SPACE_SIZE"]

#: 64 KiB of ports, as on x86 and in PCI I/O space.
PORT_SPACE_SIZE = 0x10000


class PortSpace:
    """Port claims, each ``[lo, hi)`` owned by one device; one lock guards them."""

    def __init__(self) -> None:
        self._claims: list[tuple[int, int, Any]] = []
        self._lock = threading.Lock()

    def claim(self, ranges: list[tuple[int, int]], owner: Any, name: str) -> None:
        """Claim every ``(base, count)`` range for ``owner``, all or nothing."""
        with self._lock:
            taken = list(self._claims)
            for base, count in ranges:
                if not (0 <= base and count > 0 and base + count <= PORT_SPACE_SIZE):
                    raise InvalidArgumentError(f"ports {base:#x}+{count} outside the 64 KiB port space", base)
                for lo, hi, other in taken:
                    if base < hi and lo < base + count:
                        who = "another range of the same device" if other is owner else \
                            f"device {getattr(other, 'name', other)!r}"
                        raise InvalidArgumentError(f"ports {base:#x}+{count} of {name!r} overlap {who}", base)
                taken.append((base, base + count, owner))
            self._claims = taken

    def release(self, owner: Any) -> None:
        """Drop every claim of ``owner``."""
        with self._lock:
            self._claims = [c for c in self._claims if c[2] is not owner]

    def owner_of(self, port: int) -> Any:
        """The device claiming ``port``, or None."""
        for lo, hi, owner in self._claims:   # the list is replaced, never changed in place
            if lo <= port < hi:
                return owner
        return None

    def claims(self) -> list[tuple[int, int, Any]]:
        return list(self._claims)
