"""Evaluation: the `eval` group's metrics on held-out data."""

from medexp.evaluation.metrics import METRICS, held_out_metrics

__all__ = ["METRICS", "held_out_metrics"]
