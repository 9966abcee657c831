"""The rule registry: :class:`Rule`, the :func:`rule` decorator the area
modules register with, lookup and running, and :class:`Check` (a failure
helper bound to one rule).

A rule either returns (pass), raises :class:`RuleSkipped` (a capability the
backend does not claim), or raises :class:`ConformanceFailure`, whose message
starts ``[rule] at 0x...:``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

from dmamap.errors import DmamapError
from dmamap.testing.target import ConformanceFailure, RuleSkipped, Target

__all__ = ["Rule", "RULES", "RuleFunc", "rule", "rule_by_name", "run_rule", "Check"]

RuleFunc = Callable[[Target, str], None]


@dataclass(frozen=True)
class Rule:
    """One named conformance rule: its area group, summary, variants and function."""

    name: str
    group: str
    summary: str
    variants: tuple[str, ...]
    func: RuleFunc = field(repr=False)
    needs: str | None = None

    def run(self, target: Target, variant: str = "") -> None:
        run_rule(self, target, variant)


#: Every rule, in suite order (the order the area modules are imported in, see dmamap.testing.areas).
RULES: list[Rule] = []


def rule(name: str, group: str, summary: str, variants: tuple[str, ...] = ("",), needs: str | None = None
         ) -> Callable[[RuleFunc], RuleFunc]:
    """Register the decorated function as rule ``name``."""
    def deco(fn: RuleFunc) -> RuleFunc:
        if any(r.name == name for r in RULES):
            raise ValueError(f"conformance rule {name!r} registered twice")
        RULES.append(Rule(name, group, summary, variants, fn, needs))
        return fn
    return deco


def rule_by_name(name: str) -> Rule:
    for r in RULES:
        if r.name == name:
            return r
    raise KeyError(f"no conformance rule {name!r}; rules: {', '.join(r.name for r in RULES)}")


def run_rule(rule: Rule | str, target: Target, variant: str = "") -> None:
    """Run one rule variant: returns on pass, raises RuleSkipped or ConformanceFailure."""
    r = rule_by_name(rule) if isinstance(rule, str) else rule
    if r.variants != ("",) and variant not in r.variants:
        raise KeyError(f"rule {r.name!r} has no variant {variant!r}; variants: {', '.join(r.variants)}")
    if r.needs:
        target.need(r.needs)
    try:
        r.func(target, variant)
    except (ConformanceFailure, RuleSkipped):
        raise
    except DmamapError as exc:
        raise ConformanceFailure(r.name, exc.addr, f"unexpected {type(exc).__name__}: {exc}") from exc
    except Exception as exc:   # noqa: BLE001 - a backend bug is a failure of the rule, not of the suite
        raise ConformanceFailure(r.name, 0, f"unexpected {type(exc).__name__}: {exc}") from exc


class Check:
    """Failure helper bound to one rule (and variant): ``fail`` raises
    ConformanceFailure naming both."""

    def __init__(self, rule: str, variant: str = "") -> None:
        self.rule = rule
        self.variant = variant

    def fail(self, addr: int, message: str) -> NoReturn:
        where = f" ({self.variant})" if self.variant else ""
        raise ConformanceFailure(self.rule, addr, message + where)
