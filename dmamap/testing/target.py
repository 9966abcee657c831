"""What the conformance suite tests: a :class:`Target` (one backend, its
claimed :class:`Capabilities`, a factory for fresh machines) and the two
outcomes a rule can raise besides passing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dmamap
from dmamap import PAGE_SIZE
from dmamap.backends import Backend
from dmamap.errors import BackendError, BadPageError
from dmamap.machine import Machine
from dmamap.policy import PioMethod
from dmamap.registry import available_backends, get_backend, register_backend, unregister_backend
from dmamap.strategy import STRATEGIES

__all__ = [
    "ConformanceFailure", "RuleSkipped", "Capabilities", "Target", "resolve_backend", "STRATEGY_VARIANTS",
    "LARGE_STRATEGIES", "PAGE_STRATEGIES", "MiB",
]

#: ``"default"`` (the backend's own choice) and every strategy the helpers know.
STRATEGY_VARIANTS = ("default", *STRATEGIES)
#: Strategies that need large pages.
LARGE_STRATEGIES = tuple(s.name for s in STRATEGIES.values() if s.large)
#: Strategies that hand out page descriptors whatever the memory.
PAGE_STRATEGIES = tuple(s.name for s in STRATEGIES.values() if s.hands_out_pages is True)
MiB = 1 << 20


class ConformanceFailure(AssertionError):
    """A backend broke a rule; the message names the rule and the address."""

    def __init__(self, rule: str, addr: int, message: str) -> None:
        self.rule = rule
        self.addr = int(addr)
        self.detail = message
        super().__init__(f"[{rule}] at {self.addr:#x}: {message}")


class RuleSkipped(Exception):
    """The rule needs a capability the backend does not claim."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class Capabilities:
    """What a backend claims; rules needing an unclaimed capability are skipped.

    ``None`` in :meth:`Target.__init__` overrides means "detect": page
    descriptors from a trial allocation (``dma_coherent_to_page``), port I/O
    from ``Backend.pio``, large pages and scatter-gather are claimed by every
    backend that uses the generic helpers.
    """

    page_descriptors: bool
    port_io: bool
    large_pages: bool
    scatter_gather: bool
    strategies: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"page_descriptors": self.page_descriptors, "port_io": self.port_io,
                "large_pages": self.large_pages, "scatter_gather": self.scatter_gather,
                "strategies": list(self.strategies)}


def resolve_backend(backend: str | Backend | type[Backend]) -> tuple[str, bool]:
    """``(name, registered)``: the registry name under which ``backend`` can be
    given to Machine(), and whether it had to be registered for that (Backend
    objects and classes not registered yet are; :meth:`Target.close` undoes it)."""
    if isinstance(backend, str):
        get_backend(backend)   # BackendError names the known ones
        return backend, False
    if isinstance(backend, type) and issubclass(backend, Backend):
        cls: type[Backend] = backend
        inst: Backend | None = None
    elif isinstance(backend, Backend):
        cls, inst = type(backend), backend
    else:
        raise BackendError(f"conformance target must be a backend name, Backend or Backend subclass, "
                           f"not {backend!r}")
    name = cls.name or cls.__name__
    if name in available_backends():
        existing = get_backend(name)
        if existing is inst or (inst is None and type(existing) is cls):
            return name, False
        name = f"{name}@{cls.__module__}.{cls.__qualname__}"
    register_backend(name, inst if inst is not None else cls(), clobber=True)
    return name, True


class Target:
    """One backend under test: its registry name, claimed capabilities and a
    factory for fresh machines."""

    def __init__(self, backend: str | Backend | type[Backend], *, ram: int = 64 * MiB,
                 page_descriptors: bool | None = None, port_io: bool | None = None,
                 large_pages: bool | None = None, scatter_gather: bool | None = None,
                 strategies: tuple[str, ...] | None = None, model_examples: int = 30, model_steps: int = 30,
                 model_shrink: bool = True) -> None:
        self.name, self._registered = resolve_backend(backend)
        self.backend = get_backend(self.name)
        self.ram = ram
        self.model_examples = model_examples
        self.model_steps = model_steps
        self.model_shrink = model_shrink
        if page_descriptors is None:
            page_descriptors = self._detect_page_descriptors()
        if port_io is None:
            port_io = self.backend.pio in tuple(PioMethod)
        large = True if large_pages is None else bool(large_pages)
        sg = True if scatter_gather is None else bool(scatter_gather)
        if strategies is None:
            strategies = tuple(s for s in STRATEGIES
                               if (page_descriptors or s not in PAGE_STRATEGIES)
                               and (large or s not in LARGE_STRATEGIES))
        unknown = set(strategies) - set(STRATEGIES)
        if unknown:
            raise ValueError(f"unknown strategies {sorted(unknown)}; known: {', '.join(STRATEGIES)}")
        self.caps = Capabilities(bool(page_descriptors), bool(port_io), large, sg, tuple(strategies))

    def __repr__(self) -> str:
        return f"<conformance Target {self.name!r} {self.caps}>"

    def close(self) -> None:
        """Unregister the backend if this target registered it."""
        if self._registered:
            self._registered = False
            try:
                if get_backend(self.name) is self.backend:
                    unregister_backend(self.name)
            except BackendError:   # someone else unregistered it already
                pass

    def __enter__(self) -> Target:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _detect_page_descriptors(self) -> bool:
        """Does ``dma_coherent_to_page`` work on a trial buffer?  (A backend
        that cannot even allocate claims nothing here; the rules then fail it.)"""
        try:
            with self.machine() as m:
                dev = m.add_device("probe")
                buf = dmamap.dma_alloc_coherent(dev, PAGE_SIZE)
                try:
                    dmamap.dma_coherent_to_page(dev, buf.cpu_addr, buf.dma_handle)
                    return True
                except BadPageError:
                    return False
        except Exception:   # noqa: BLE001
            return False

    @contextmanager
    def machine(self) -> Iterator[Machine]:
        m = Machine(self.name, ram=self.ram)
        try:
            yield m
        finally:
            m.close()

    def strategy(self, variant: str) -> str | None:
        """The strategy argument for a variant, or RuleSkipped if not allowed."""
        if variant == "default":
            return None
        if variant not in self.caps.strategies:
            if variant in PAGE_STRATEGIES and not self.caps.page_descriptors:
                raise RuleSkipped(f"strategy {variant!r} hands out page descriptors and {self.name}'s coherent "
                                  f"memory has none (the helpers must refuse it: see bad_inputs_rejected)")
            if variant in LARGE_STRATEGIES and not self.caps.large_pages:
                raise RuleSkipped(f"strategy {variant!r} needs large pages, which {self.name} does not claim")
            raise RuleSkipped(f"strategy {variant!r} is not among {self.name}'s strategies")
        return variant

    def need(self, capability: str) -> None:
        if not getattr(self.caps, capability):
            raise RuleSkipped(f"{self.name} does not claim {capability.replace('_', ' ')}")
