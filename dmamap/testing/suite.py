"""The conformance suite as pytest base classes (needs pytest).

Subclass in your own tests and name the backend; every rule becomes a test
named ``test_<rule>`` (parametrized by strategy / case where it has variants)::

    from dmamap.testing import BackendConformance

    class TestRiscvConformance(BackendConformance):
        backend = "riscv"            # a registered name, a Backend, or a Backend subclass
        # port_io = False            # optional capability claims; None = detect

Capabilities the backend does not claim are skipped with the reason, never
failed.  The per-area classes (:class:`CoherencyConformance`, ...) can be
used on their own; :class:`BackendConformance` combines them all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest

from dmamap.backends import Backend
from dmamap.testing.rules import RULES, Rule, RuleSkipped, Target, run_rule

__all__ = [
    "ConformanceBase", "CoherencyConformance", "AttributeConformance", "PageDescriptorConformance",
    "ScatterGatherConformance", "UnmapConformance", "BadInputConformance", "IOConformance", "ModelConformance",
    "BackendConformance",
]


class ConformanceBase:
    """Fixtures and knobs shared by every conformance class."""

    #: The backend under test: registry name, Backend instance or subclass.  Required.
    backend: ClassVar[str | Backend | type[Backend] | None] = None
    #: Capability claims; None detects (see dmamap.testing.rules.Capabilities).
    page_descriptors: ClassVar[bool | None] = None
    port_io: ClassVar[bool | None] = None
    large_pages: ClassVar[bool | None] = None
    scatter_gather: ClassVar[bool | None] = None
    #: Strategies to test; None = every strategy the capabilities allow.
    strategies: ClassVar[tuple[str, ...] | None] = None
    #: Emulated RAM of each test machine.
    ram: ClassVar[int] = 64 << 20
    #: Bounds of the model-based test (derandomized).
    model_examples: ClassVar[int] = 30
    model_steps: ClassVar[int] = 30

    @pytest.fixture(scope="class")
    def conformance_target(self, request: pytest.FixtureRequest) -> Iterator[Target]:
        """The backend under test with its capabilities (one per test class)."""
        cls = request.cls
        if cls is None or cls.backend is None:
            raise pytest.UsageError(f"{getattr(cls, '__name__', cls)} must set `backend` to the backend under test")
        with Target(cls.backend, ram=cls.ram, page_descriptors=cls.page_descriptors, port_io=cls.port_io,
                    large_pages=cls.large_pages, scatter_gather=cls.scatter_gather, strategies=cls.strategies,
                    model_examples=cls.model_examples, model_steps=cls.model_steps) as target:
            yield target


def _make_test(rule: Rule) -> Callable[..., None]:
    def run(target: Target, variant: str) -> None:
        try:
            run_rule(rule, target, variant)
        except RuleSkipped as exc:
            pytest.skip(exc.reason)

    if rule.variants == ("",):
        def test(self: Any, conformance_target: Target) -> None:
            run(conformance_target, "")
    else:
        @pytest.mark.parametrize("variant", rule.variants)
        def test(self: Any, conformance_target: Target, variant: str) -> None:
            run(conformance_target, variant)

    test.__name__ = test.__qualname__ = f"test_{rule.name}"
    test.__doc__ = f"{rule.summary}."
    return test


def _area(name: str, doc: str, groups: tuple[str, ...]) -> type[ConformanceBase]:
    ns: dict[str, Any] = {"__doc__": doc, "__module__": __name__}
    for rule in RULES:
        if rule.group in groups:
            ns[f"test_{rule.name}"] = _make_test(rule)
    return type(name, (ConformanceBase,), ns)


CoherencyConformance = _area(
    "CoherencyConformance", "Coherent mappings, plain and scatter-gather, both DMA directions, every strategy.",
    ("coherency",))
AttributeConformance = _area(
    "AttributeConformance", "User PTE attributes decoded from raw page tables, against the kernel alias; large "
                            "pages.", ("attributes",))
PageDescriptorConformance = _area(
    "PageDescriptorConformance", "Page descriptors for RAM only; dma_coherent_to_page.", ("page descriptors",))
ScatterGatherConformance = _area(
    "ScatterGatherConformance", "Every page of a scatter-gather mapping lands on the right chunk and byte.",
    ("scatter-gather",))
UnmapConformance = _area(
    "UnmapConformance", "Unmap clears PTEs and TLB; resources return to baseline.", ("unmap", "resources"))
BadInputConformance = _area(
    "BadInputConformance", "Documented bad inputs raise their documented errors and change nothing.",
    ("bad inputs",))
IOConformance = _area(
    "IOConformance", "MMIO width exactness and port I/O reachability.", ("I/O",))
ModelConformance = _area(
    "ModelConformance", "Random operation sequences against a reference model (needs hypothesis).", ("model",))


class BackendConformance(CoherencyConformance, AttributeConformance, PageDescriptorConformance,  # type: ignore[misc,valid-type]
                         ScatterGatherConformance, UnmapConformance, BadInputConformance, IOConformance,
                         ModelConformance):
    """The whole conformance suite: subclass it as ``Test...`` and set ``backend``."""


_covered = {r.group for r in RULES}
_grouped = {"coherency", "attributes", "page descriptors", "scatter-gather", "unmap", "resources", "bad inputs",
            "I/O", "model"}
assert _covered <= _grouped, f"rule groups without a conformance class: {_covered - _grouped}"
