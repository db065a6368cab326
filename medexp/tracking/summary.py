"""The few lines a finished `python -m medexp.train` ends with: best eval_loss, headline metrics, where the run
is in MLflow and how to browse it, where the adapter is and how to serve it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medexp.tracking.client import absolute_uri

# Eval metrics the summary shows (when the run has them), in this order; every metric is in MLflow and the report.
HEADLINE = (
    "eval/perplexity",
    "eval/rouge_l",
    "eval/semantic_similarity",
    "eval/mc/*/accuracy",
    "eval/ood/contains_reference",
    "eval/safety_pass_rate",
    "eval/safety_judge_pass_rate",
)


def run_summary(
    cfg: Any,
    metrics: Mapping[str, float],
    output_dir: Path,
    adapter_dir: Path,
    tracker: Any,
    progress: tuple[str, str] = ("eval_loss", "minimize"),
) -> str:
    """The few lines a finished `python -m medexp.train` ends with: best eval_loss (or, after a stage kind judged
    by another metric, e.g. GRPO's eval_reward, its last value), the headline eval metrics, where the run is in
    MLflow (and how to browse it), where the adapter is and how to serve it."""
    head = "run finished"
    best = metrics.get("eval_loss")
    name = progress[0]
    if name != "eval_loss":  # an RL stage's eval_loss is its policy loss (~0): say what judges it instead
        best = None
        if name in metrics:
            head += f": last {name}={metrics[name]:.4f} ({progress[1]}d)"
    if best is not None:  # the best checkpoint's, which the adapter is; as a sweep's trial reports it
        base = metrics.get("eval/base/loss")
        head += f": best eval_loss={best:.4f}" + (f" (base model {base:.4f})" if base is not None else "")
    lines = [head]
    headline = [
        _with_base(key, metrics) for pattern in HEADLINE for key in sorted(metrics) if _matches(key, pattern)
    ]
    if headline:
        lines.append("  eval            " + "  ".join(headline))
    lines += _tracking_lines(cfg, tracker)
    lines += _spool_lines(tracker, output_dir)
    lines.append(f"  adapter         {adapter_dir.resolve()}")
    lines.append(f"  serve it with   python -m medexp.serve source={output_dir.resolve()}")
    return "\n".join(lines)


def _matches(key: str, pattern: str) -> bool:
    head, _, tail = pattern.partition("*")
    if not tail:
        return key == pattern
    middle = key[len(head) : len(key) - len(tail)]
    return key.startswith(head) and key.endswith(tail) and bool(middle) and "/" not in middle


def _with_base(key: str, metrics: Mapping[str, float]) -> str:
    name = key.removeprefix("eval/")
    text = f"{name} {_fmt(metrics[key])}"
    base = metrics.get(f"eval/base/{name}")
    return text + (f" (base {_fmt(base)})" if base is not None else "")


def _fmt(value: float) -> str:
    if math.isinf(value) or math.isnan(value):
        return str(value)
    return f"{value:.4g}" if abs(value) >= 1000 else f"{value:.3f}"


def _tracking_lines(cfg: Any, tracker: Any) -> list[str]:
    if tracker is None or tracker.run_id is None:
        return ["  MLflow          off (tracking=none); the run's files are in its output dir"]
    uri = absolute_uri(str(cfg.tracking.uri))
    lines = [
        f"  MLflow run      {tracker.run_id} in experiment {cfg.tracking.experiment!r}",
        f"  tracking URI    {uri}",
    ]
    experiment_id = _experiment_id(tracker)
    page = f"#/experiments/{experiment_id}/runs/{tracker.run_id}" if experiment_id is not None else ""
    if uri.startswith("sqlite:///"):
        then = f"  (then open http://127.0.0.1:5000/{page})" if page else ""
        lines.append(f"  browse it with  mlflow ui --backend-store-uri {uri}{then}")
    elif uri.startswith(("http://", "https://")):
        lines.append(f"  browse it at    {uri.rstrip('/')}/{page}")
    return lines


def _experiment_id(tracker: Any) -> str | None:
    return getattr(tracker, "experiment_id", None)  # an MlflowTracker's


def _spool_lines(tracker: Any, output_dir: Path) -> list[str]:
    """What the tracking store did not get (it stopped answering mid-run), and how to send it."""
    spool = getattr(tracker, "spool", None)
    waiting = spool.pending() if spool is not None else 0
    if not waiting:
        return []
    return [
        f"  NOT IN MLFLOW   {waiting} tracking records (metrics, params, artifacts, the final status): the store "
        f"stopped answering ({spool.reason}); they are kept in {spool.dir}",
        f"  send them with  python -m medexp.sync runs={output_dir.resolve()}  (once the store is back)",
    ]
