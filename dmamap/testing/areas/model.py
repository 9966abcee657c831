"""Area: model-based.  Random sequences of alloc / map / access / DMA / unmap /
free agree with a bytes-per-buffer reference model.  The state machine lives
in :mod:`dmamap.testing.stateful` and needs hypothesis; without it this rule
is skipped with the reason."""

from __future__ import annotations

from dmamap.testing.rule import rule
from dmamap.testing.target import RuleSkipped, Target


@rule("model_based", "model",
      "random sequences of alloc / map / access / DMA / unmap / free agree with a bytes-per-buffer "
      "reference model (hypothesis state machine)")
def model_based(t: Target, variant: str) -> None:
    try:
        from dmamap.testing.stateful import run_model
    except ImportError as exc:
        raise RuleSkipped(f"the model-based rule needs hypothesis ({exc}); pip install 'dmamap[test]'") from None
    run_model(t, max_examples=t.model_examples, steps=t.model_steps, shrink=t.model_shrink)
