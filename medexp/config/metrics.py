"""Which metrics a run computes: the eval part (and its config switch) behind each metric name medexp logs.

Used to refuse, before any training, an `optimized_metric` or a sweep constraint on a metric the composed eval
group would not produce.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from medexp.config.errors import UserError

# The eval parts that compute a metric, by its name after eval/ (and after base/ or delta/): the switch that
# turns the part on, and the eval option that has it on.
_PARTS = (
    ("safety_judge_pass_rate", "eval.safety.judge.enabled", "eval=safety with a judge endpoint"),
    ("safety", "eval.safety.enabled", "eval=safety"),  # safety_pass_rate, safety/<category>
    ("judge/", "eval.generation.judge.enabled", "eval=default with a judge endpoint"),
    ("ood/", "eval.ood.enabled", "eval=full"),
    ("mc/", "eval.mc.enabled", "eval=mc"),
)
_GENERATION = (
    "bleu",
    "exact_match",
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
            return switch, bool(OmegaConf.select(cfg, switch))
    if name in _GENERATION:
        return "eval.generation.enabled", bool(cfg.eval.generation.enabled)
    if name == "bertscore_f1":
        return "eval.generation.bertscore", bool(
            cfg.eval.generation.enabled and cfg.eval.generation.bertscore
        )
    return None


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


def _listed(value: Any) -> list[Any]:
    return list(value) if OmegaConf.is_list(value) or isinstance(value, list) else [value]


def optimized_metrics(cfg: DictConfig) -> list[str]:
    """`optimized_metric` as a list: one name for a plain run or study, several for a multi-objective study."""
    return [str(v) for v in _listed(cfg.optimized_metric)]


def validate_optimized_metric(cfg: DictConfig) -> None:
    """UserError unless `optimized_metric` is a metric name (or a list of them) this run's eval group computes."""
    value = cfg.optimized_metric
    names = _listed(value)
    if not names or not all(isinstance(v, str) for v in names):
        raise UserError(
            f"optimized_metric={value!r} must be a metric name such as eval_loss, or a list of names for a "
            "multi-objective sweep, e.g. optimized_metric=[eval_loss,eval/safety_pass_rate]."
        )
    for name in names:
        error = missing_metric_error(name, cfg, f"optimized_metric={name}")
        if error is not None:
            raise UserError(error)
