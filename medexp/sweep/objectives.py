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

_FORM = re.compile(r"^\s*(?P<metric>[A-Za-z0-9_./-]+)\s*(?P<op>>=|<=)\s*(?P<bound>[-+0-9.eE]+)\s*$")

# The eval parts that compute a metric, by its name after eval/ (and after base/ or delta/): the switch that
# turns the part on, and the eval option that has it on.
_PARTS = (
    ("safety_judge_pass_rate", "eval.safety.judge.enabled", "eval=safety with a judge endpoint"),
    ("safety", "eval.safety.enabled", "eval=safety"),  # safety_pass_rate, safety/<category>
    ("ood/", "eval.ood.enabled", "eval=full"),
    ("mc/", "eval.mc.enabled", "eval=mc"),
)
_GENERATION = (
    "rouge_l",
    "rouge_1",
    "rouge_2",
    "semantic_similarity",
    "distinct_1",
    "distinct_2",
    "answer_words_mean",
    "answer_words_p50",
    "latency_p50_s",
    "latency_p95_s",
    "tokens_per_s",
    "peak_memory_mb",
)


def metric_part(metric: str, cfg: DictConfig) -> tuple[str, bool] | None:
    """(the config switch of the eval part that computes `metric`, whether it is on), or None for a name medexp
    never logs. Held-out metrics (eval_loss, eval/loss, eval/perplexity) are always computed when listed."""
    if metric == "eval_loss":
        return "eval.metrics", True
    if not metric.startswith("eval/"):
        return None
    name = metric.removeprefix("eval/")
    side = next((s for s in ("base/", "delta/") if name.startswith(s)), "")
    name = name.removeprefix(side)
    if name in ("loss", "perplexity") and side == "delta/":
        return None  # held-out loss has eval/base/ (before training) but no delta
    if side and not cfg.eval.before_training:  # the base model is evaluated only with before_training
        return "eval.before_training", False
    if name in ("loss", "perplexity"):
        return "eval.metrics", name in cfg.eval.metrics
    for prefix, switch, _ in _PARTS:
        if name.startswith(prefix):
            return switch, bool(_select(cfg, switch))
    if name in _GENERATION:
        return "eval.generation.enabled", bool(cfg.eval.generation.enabled)
    return None


def _select(cfg: DictConfig, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def missing_metric_error(metric: str, cfg: DictConfig, what: str) -> str | None:
    """Why `metric` cannot be judged in this run (one sentence naming `what` asked for it), or None."""
    part = metric_part(metric, cfg)
    if part is None:
        return (
            f"{what} names {metric!r}, which is not a metric medexp computes. Use eval_loss or an eval/<name> "
            "metric of the eval group, e.g. eval/perplexity, eval/rouge_l (generation) or eval/safety_pass_rate "
            "(eval.safety.enabled=true)."
        )
    switch, on = part
    if on:
        return None
    option = {"eval.metrics": "eval.metrics=[loss,perplexity]"}.get(switch, f"{switch}=true")
    preset = next((f" (or {opt})" for _, key, opt in _PARTS if key == switch and opt != option), "")
    return (
        f"{what} needs {metric!r}, but this run's eval group does not compute it ({switch} is off). Turn it on "
        f"with {option}{preset}, or judge the trials on another metric."
    )


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
    from medexp.config.checks import optimized_metrics

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
    try:
        parsed = parse_constraints(constraints)
    except ValueError as err:
        return f"{err}."
    for c in parsed:
        error = missing_metric_error(c.metric, cfg, f"the constraint {c.text!r}")
        if error is not None:
            return error
    return None
