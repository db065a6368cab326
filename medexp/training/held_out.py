"""Held-out loss and perplexity on the validation split, computed with the run's trainer."""

from __future__ import annotations

import math
from collections.abc import Iterable


def perplexity(loss: float) -> float:
    """exp(mean token cross-entropy); inf where that overflows a float."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def held_out_metrics(trainer, names: Iterable[str], prefix: str = "eval/") -> dict[str, float]:
    """Answer-token loss of the trainer's current model on its validation split, and `names` derived from it.

    Runs on `trainer.eval_dataset`, the split as TRL prepared it (labels masked to the answer tokens), so the
    loss is the same quantity as the per-step `eval_loss`. `trainer.predict` fires no log callback, so these
    values do not interleave with the `eval_loss` curve.
    """
    loss = trainer.predict(trainer.eval_dataset).metrics["test_loss"]
    values = {"loss": loss, "perplexity": perplexity(loss)}
    return {f"{prefix}{name}": values[name] for name in names}
