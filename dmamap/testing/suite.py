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
from dmamap.testing.rules import RULES, RuleSkipped, Target, rule_by_name, run_rule

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


def _test(name: str) -> Callable[..., None]:
    """The pytest test method of rule ``name``."""
    rule = rule_by_name(name)

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


class CoherencyConformance(ConformanceBase):
    """Coherent mappings, plain and scatter-gather, both DMA directions, every strategy."""

    test_coherency_mmap = _test("coherency_mmap")
    test_coherency_mmap_sg = _test("coherency_mmap_sg")


class AttributeConformance(ConformanceBase):
    """User PTE attributes decoded from raw page tables, against the kernel alias; large pages."""

    test_user_attribute_matches_kernel = _test("user_attribute_matches_kernel")
    test_large_pages = _test("large_pages")


class PageDescriptorConformance(ConformanceBase):
    """Page descriptors for RAM only; dma_coherent_to_page."""

    test_page_descriptors_ram_only = _test("page_descriptors_ram_only")
    test_coherent_to_page = _test("coherent_to_page")


class ScatterGatherConformance(ConformanceBase):
    """Every page of a scatter-gather mapping lands on the right chunk and byte."""

    test_sg_linear_mapping = _test("sg_linear_mapping")


class UnmapConformance(ConformanceBase):
    """Unmap clears PTEs and TLB; resources return to baseline."""

    test_unmap_clears_ptes_and_tlb = _test("unmap_clears_ptes_and_tlb")
    test_resources_return_to_baseline = _test("resources_return_to_baseline")


class BadInputConformance(ConformanceBase):
    """Documented bad inputs raise their documented errors and change nothing."""

    test_bad_inputs_rejected = _test("bad_inputs_rejected")


class IOConformance(ConformanceBase):
    """MMIO width exactness and port I/O reachability."""

    test_mmio_width_exact = _test("mmio_width_exact")
    test_pio_reachable = _test("pio_reachable")


class ModelConformance(ConformanceBase):
    """Random operation sequences against a reference model (needs hypothesis)."""

    test_model_based = _test("model_based")


class BackendConformance(CoherencyConformance, AttributeConformance, PageDescriptorConformance,
                         ScatterGatherConformance, UnmapConformance, BadInputConformance, IOConformance,
                         ModelConformance):
    """The whole conformance suite: subclass it as ``Test...`` and set ``backend``."""


_missing = {r.name for r in RULES} - {n[5:] for n in dir(BackendConformance) if n.startswith("test_")}
assert not _missing, f"conformance rules without a pytest test: {sorted(_missing)}"
