"""The conformance suite as pytest base classes (needs pytest).

Subclass in your own tests and name the backend; every rule becomes a test
named ``test_<rule>`` (parametrized by strategy / case where it has variants)::

    from dmamap.testing import BackendConformance

    class TestRiscvConformance(BackendConformance):
        backend = "riscv"            # a registered name, a Backend, or a Backend subclass
        # port_io = False            # optional capability claims; None = detect

Capabilities the backend does not claim are skipped with the reason, never
failed.  The per-area classes (:class:`CoherencyConformance`, ...) can be
used on their own; :class:`BackendConformance` combines them all.  A per-area
class names its rule groups (``Rule.group``) as a class keyword, and gets one
test per rule registered under them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest

from dmamap.backends import Backend
from dmamap.testing.rules import RULES, Rule, RuleSkipped, Target, run_rule

__all__ = [
    "ConformanceBase", "CoherencyConformance", "AttributeConformance", "PageDescriptorConformance",
    "ScatterGatherConformance", "UnmapConformance", "BadInputConformance", "IOConformance", "KernelSideConformance",
    "ModelConformance", "StreamingConformance", "RemoteAccessConformance", "BackendConformance",
]


def _test(rule: Rule) -> Callable[..., None]:
    """The pytest test method of ``rule``."""

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


class ConformanceBase:
    """Fixtures and knobs shared by every conformance class."""

    #: The backend under test: registry name, Backend instance or subclass.  Required.
    backend: ClassVar[str | Backend | type[Backend] | None] = None
    #: Capability claims; None detects (see dmamap.testing.target.Capabilities).
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
    def __init_subclass__(cls, groups: tuple[str, ...] = (), **kwargs: Any) -> None:
        """``class XConformance(ConformanceBase, groups=(...))`` defines a test per rule of those groups."""
        super().__init_subclass__(**kwargs)
        for r in RULES:
            if r.group in groups:
                setattr(cls, f"test_{r.name}", _test(r))

    @pytest.fixture(scope="class")
    @classmethod
    def conformance_target(cls, request: pytest.FixtureRequest) -> Iterator[Target]:
        """The backend under test with its capabilities (one per test class)."""
        test_cls = request.cls or cls
        if test_cls.backend is None:
            raise pytest.UsageError(f"{test_cls.__name__} must set `backend` to the backend under test")
        with Target(test_cls.backend, ram=test_cls.ram, page_descriptors=test_cls.page_descriptors,
                    port_io=test_cls.port_io, large_pages=test_cls.large_pages,
                    scatter_gather=test_cls.scatter_gather, strategies=test_cls.strategies,
                    model_examples=test_cls.model_examples, model_steps=test_cls.model_steps) as target:
            yield target


class CoherencyConformance(ConformanceBase, groups=("coherency",)):
    """Coherent mappings, plain and scatter-gather, both DMA directions, every strategy."""


class AttributeConformance(ConformanceBase, groups=("attributes",)):
    """User PTE attributes decoded from raw page tables, against the kernel alias; large pages."""


class PageDescriptorConformance(ConformanceBase, groups=("page descriptors",)):
    """Page descriptors for RAM only; dma_coherent_to_page."""


class ScatterGatherConformance(ConformanceBase, groups=("scatter-gather",)):
    """Every page of a scatter-gather mapping lands on the right chunk and byte."""


class UnmapConformance(ConformanceBase, groups=("unmap", "resources")):
    """Unmap clears PTEs and TLB; resources return to baseline."""


class BadInputConformance(ConformanceBase, groups=("bad inputs",)):
    """Documented bad inputs raise their documented errors and change nothing."""


class IOConformance(ConformanceBase, groups=("I/O",)):
    """MMIO width exactness and port I/O reachability."""


class KernelSideConformance(ConformanceBase, groups=("kernel side",)):
    """ioremap and the readl/writel family; dma_mmap_wc attributes."""


class ModelConformance(ConformanceBase, groups=("model",)):
    """Random operation sequences against a reference model (needs hypothesis)."""


class StreamingConformance(ConformanceBase, groups=("streaming",)):
    """Streaming DMA: data per direction with the syncs, scatter lists, ownership rules."""


class RemoteAccessConformance(ConformanceBase, groups=("remote access",)):
    """access_process_vm (ptrace) into the helpers' mappings, as get_user_pages and ->access allow."""


class BackendConformance(CoherencyConformance, AttributeConformance, PageDescriptorConformance,
                         ScatterGatherConformance, UnmapConformance, BadInputConformance, IOConformance,
                         KernelSideConformance, ModelConformance, StreamingConformance, RemoteAccessConformance):
    """The whole conformance suite: subclass it as ``Test...`` and set ``backend``."""


_missing = {r.name for r in RULES} - {n[5:] for n in dir(BackendConformance) if n.startswith("test_")}
assert not _missing, f"conformance rules without a pytest test: {sorted(_missing)}"
