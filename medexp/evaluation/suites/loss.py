"""Held-out loss and perplexity on the validation split: measured by the training loop with the run's trainer
(medexp.training.held_out), before training (eval/base/*) and on the best checkpoint (eval/*). This suite names
those metrics for the metric map; evaluate_model does not run it."""

from __future__ import annotations

from omegaconf import DictConfig

from medexp.config import HELD_OUT_METRICS
from medexp.evaluation.suites.base import Metric, Suite, Switch

EVAL_LOSS = (
    "eval_loss"  # the trainer's per-step held-out loss: always logged (best checkpoint, early stopping)
)


class HeldOutLoss(Suite):
    name = "loss"
    runs_after_training = False

    def metrics(self, eval_cfg: DictConfig) -> list[Metric]:
        # eval/base/<name> before training (with eval.before_training); no delta: the two are logged apart
        return [Metric(name, delta=False, needs=(_listed(eval_cfg, name),)) for name in HELD_OUT_METRICS]


def _listed(eval_cfg: DictConfig, name: str) -> Switch:
    return Switch("eval.metrics", name in eval_cfg.metrics, fix="eval.metrics=[loss,perplexity]")
