"""Conformance suite for dmamap backends.

A port (a RISC-V SoC, a machine with an IOMMU, ...) proves its backend right
by running the same rules the in-tree x86, arm and sram backends pass:

* with pytest -- subclass :class:`BackendConformance` (``dmamap.testing.suite``)
  and set ``backend``;
* without pytest -- :func:`run_conformance` or ``dmamap conformance BACKEND``.

The rules live one module per area in :mod:`dmamap.testing.areas` (plain
functions, gathered by :mod:`dmamap.testing.rules`), built from the public
check helpers of :mod:`dmamap.testing.checks`; the target and its
capabilities are in :mod:`dmamap.testing.target`, the independent page-table
walker in :mod:`dmamap.testing.pagetable`, the hypothesis model in
:mod:`dmamap.testing.stateful`.  See docs/backends.md.
"""

from __future__ import annotations

from typing import Any

from dmamap.testing.pagetable import RawEntry, walk
from dmamap.testing.rules import (
    RULES,
    Capabilities,
    ConformanceFailure,
    Rule,
    RuleSkipped,
    Target,
    run_rule,
)
from dmamap.testing.runner import Report, Result, run_conformance

_SUITE = {
    "ConformanceBase", "BackendConformance", "CoherencyConformance", "AttributeConformance",
    "PageDescriptorConformance", "ScatterGatherConformance", "UnmapConformance", "BadInputConformance",
    "IOConformance", "KernelSideConformance", "ModelConformance", "StreamingConformance", "RemoteAccessConformance",
}
_STATEFUL = {"DmaModel", "model_for", "run_model"}

__all__ = [
    "RULES", "Capabilities", "ConformanceFailure", "Rule", "RuleSkipped", "Target", "run_rule", "RawEntry", "walk",
    "Report", "Result", "run_conformance", *sorted(_SUITE), *sorted(_STATEFUL),
]


def __getattr__(name: str) -> Any:
    """The pytest classes and the hypothesis model load on first use, so that
    ``dmamap.testing`` itself (and ``dmamap conformance``) needs neither."""
    if name in _SUITE:
        try:
            from dmamap.testing import suite
        except ImportError as exc:
            raise ImportError(f"dmamap.testing.{name} needs pytest ({exc}); install it with "
                              f"pip install 'dmamap[test]', or run the suite without pytest: "
                              f"dmamap conformance BACKEND") from exc
        return getattr(suite, name)
    if name in _STATEFUL:
        try:
            from dmamap.testing import stateful
        except ImportError as exc:
            raise ImportError(f"dmamap.testing.{name} needs hypothesis ({exc}); install it with "
                              f"pip install 'dmamap[test]'") from exc
        return getattr(stateful, name)
    raise AttributeError(f"module 'dmamap.testing' has no attribute {name!r}")
