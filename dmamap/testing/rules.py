"""The conformance rules, as plain functions over a :class:`Target`.

Nothing here needs pytest: :mod:`dmamap.testing.suite` turns every rule into a
named pytest test, :mod:`dmamap.testing.runner` runs them directly (``dmamap
conformance BACKEND``).  The rules live one module per area in
:mod:`dmamap.testing.areas`, built from the public helpers of
:mod:`dmamap.testing.checks`; this module gathers them (importing it
registers them all) with the registry of :mod:`dmamap.testing.rule`.

Every rule builds its own small machine, so rules are independent and a
broken rule cannot poison the next one.
"""

from __future__ import annotations

from dmamap.testing.areas import AREAS
from dmamap.testing.areas.bad_inputs import BAD_INPUT_CASES
from dmamap.testing.rule import RULES, Check, Rule, rule, rule_by_name, run_rule
from dmamap.testing.target import (
    STRATEGY_VARIANTS,
    Capabilities,
    ConformanceFailure,
    RuleSkipped,
    Target,
    resolve_backend,
)

__all__ = [
    "ConformanceFailure", "RuleSkipped", "Capabilities", "Target", "Rule", "RULES", "STRATEGY_VARIANTS",
    "BAD_INPUT_CASES", "AREAS", "Check", "rule", "run_rule", "rule_by_name", "resolve_backend",
]
