"""What a study optimizes: its metrics (one, or several for a multi-objective study with `directions`), and
`hydra.sweeper.constraints` such as `eval/safety_pass_rate >= 0.9`; which metrics the eval group computes.

A constraint is a metric the trial's own evaluation computes, compared with a bound. At the end of each trial its
value goes to Optuna as `trial.set_constraint(text, bound - value)` (`value - bound` for `<=`): Optuna counts a
trial feasible when every such number is <= 0, TPE learns to avoid the infeasible region, and `study.best_trial`
is the best *feasible* trial. A trial whose evaluation did not produce the metric counts as infeasible (+inf).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from omegaconf import DictConfig

from medexp.evaluation.metrics import missing_metric_error

_FORM = re.compile(r"^\s*(?P<metric>[A-Za-z0-9_./-]+)\s*(?P<op>>=|<=)\s*(?P<bound>[-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class Constraint:
    text: str  # as the user wrote it, normalised: "eval/safety_pass_rate >= 0.9"
    metric: str
    op: str
    bound: float

    def violation(self, metrics: dict[str, float]) -> float:
        """<= 0 when the trial meets the constraint; +inf when its evaluation did not produce the metric."""
        value = metrics.get(self.metric)
        if value is None or not math.isfinite(float(value)):
            return math.inf
        return self.bound - float(value) if self.op == ">=" else float(value) - self.bound


def parse_constraints(texts: list[str] | None) -> list[Constraint]:
    """`["eval/safety_pass_rate >= 0.9", ...]` -> Constraints; ValueError naming the bad one."""
    out = []
    for text in texts or []:
        m = _FORM.match(str(text))
        bound = None
        if m is not None:
            try:
                bound = float(m["bound"])
            except ValueError:
                bound = None
        if m is None or bound is None or not math.isfinite(bound):
            raise ValueError(
                f"hydra.sweeper.constraints has {text!r}, which is not `<metric> >= <number>` or "
                "`<metric> <= <number>`; for example 'eval/safety_pass_rate >= 0.9'"
            )
        out.append(Constraint(f"{m['metric']} {m['op']} {bound:g}", m["metric"], m["op"], bound))
    return out


def objectives_error(
    cfg: DictConfig, directions: list[str] | None, constraints: list[str] | None, pruner: str
) -> str | None:
    """What is wrong with what a study optimizes (its metrics, directions and constraints), or None."""
    from medexp.config.metrics import optimized_metrics

    metrics = optimized_metrics(cfg)
    if directions is None and len(metrics) > 1:
        return (
            f"optimized_metric lists {len(metrics)} metrics {metrics}, which makes a multi-objective study: give "
            "one direction for each, e.g. hydra.sweeper.directions=[minimize,maximize], or name one metric."
        )
    if directions is not None:
        if len(directions) != len(metrics):
            return (
                f"hydra.sweeper.directions={directions} has {len(directions)} directions for the {len(metrics)} "
                f"metrics of optimized_metric={metrics}: give one direction per metric, e.g. "
                "optimized_metric=[eval_loss,eval/safety_pass_rate] hydra.sweeper.directions=[minimize,maximize]."
            )
        if pruner != "none":
            return (
                f"hydra.sweeper.pruner.name={pruner}: a multi-objective study cannot prune (Optuna's pruners "
                "compare one reported value). Add hydra.sweeper.pruner.name=none."
            )
    for name in metrics:  # refused now, not in every trial
        error = missing_metric_error(name, cfg, f"optimized_metric={name}")
        if error is not None:
            return error
    try:
        parsed = parse_constraints(constraints)
    except ValueError as err:
        return f"{err}."
    for c in parsed:
        error = missing_metric_error(c.metric, cfg, f"the constraint {c.text!r}")
        if error is not None:
            return error
    return None
