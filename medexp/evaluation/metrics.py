"""Which metrics a run logs, and what turns each on: the map built from the evaluation suites' own declarations
(medexp.evaluation.suites), so the names live in one place.

Used to refuse, before any training, an `optimized_metric` or a sweep constraint on a metric the composed eval
group would not produce (`check_optimized_metric`, `missing_metric_error`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from omegaconf import DictConfig, OmegaConf

from medexp.config import UserError
from medexp.evaluation.suites.base import Suite, Switch, flag
from medexp.evaluation.suites.loss import EVAL_LOSS
from medexp.evaluation.suites.registry import all_suites


class Entry(NamedTuple):
    needs: tuple[Switch, ...]  # the config values that must all be on for the metric to be logged
    certain: bool  # False: logged only when the data holds such items
    never: Callable[[DictConfig], str | None] | None = None  # why the run's data never holds them, or None


def metric_map(eval_cfg: DictConfig, suites: list[Suite] | None = None) -> dict[str, Entry]:
    """Every metric name the suites of this eval group can log (on or off), with what it needs."""
    before = flag(eval_cfg, "before_training")  # the base model is evaluated only with before_training
    out = {EVAL_LOSS: Entry((), True)}
    for suite in all_suites(eval_cfg) if suites is None else suites:
        own = suite.switches(eval_cfg)
        for m in suite.metrics(eval_cfg):
            needs = (*own, *m.needs)
            out[f"eval/{m.name}"] = Entry(needs, m.certain, m.never)
            if m.base:
                out[f"eval/base/{m.name}"] = Entry((before, *needs), m.certain, m.never)
            if m.delta:
                out[f"eval/delta/{m.name}"] = Entry((before, *needs), m.certain, m.never)
    return out


def logged_metrics(eval_cfg: DictConfig) -> dict[str, bool]:
    """The metrics this eval group logs: name -> whether always (False: only when the data has such items)."""
    return {name: e.certain for name, e in metric_map(eval_cfg).items() if all(s.on for s in e.needs)}


def _first_off(metric: str, cfg: DictConfig) -> tuple[Entry | None, Switch | None]:
    entry = metric_map(cfg.eval).get(metric)
    return entry, next((s for s in entry.needs if not s.on), None) if entry is not None else None


def metric_part(metric: str, cfg: DictConfig) -> tuple[str, bool] | None:
    """(the config switch that turns `metric` on, whether it is on), or None for a name medexp never logs.
    Held-out metrics (eval_loss, eval/loss, eval/perplexity) are always computed when listed."""
    entry, off = _first_off(metric, cfg)
    if entry is None:
        return None
    if off is not None:
        return off.key, False
    return (entry.needs[-1].key if entry.needs else "eval.metrics"), True


def missing_metric_error(metric: str, cfg: DictConfig, what: str) -> str | None:
    """Why `metric` cannot be judged in this run (one sentence naming `what` asked for it), or None."""
    entry, off = _first_off(metric, cfg)
    if entry is None:
        return (
            f"{what} names {metric!r}, which is not a metric medexp computes at the end of a run (a stage's "
            "per-step curves, such as a GRPO stage's rewards/*, are not judged). Use eval_loss or an eval/<name> "
            "metric of the eval group, e.g. eval/perplexity, eval/rouge_l (generation), eval/safety_pass_rate "
            "(eval.safety.enabled=true) or eval/mc/<set>/accuracy (eval.mc.enabled=true)."
        )
    if off is None:
        why = entry.never(cfg) if entry.never is not None else None
        return f"{what} needs {metric!r}, which this run never logs: {why}" if why else None
    preset = f" (or {off.preset})" if off.preset else ""
    return (
        f"{what} needs {metric!r}, but this run's eval group does not compute it ({off.key} is off). Turn it on "
        f"with {off.turn_on}{preset}, or judge the trials on another metric."
    )


def check_optimized_metric(cfg: DictConfig) -> None:
    """UserError unless `optimized_metric` is a metric name (or a list of them) this run's eval group computes.
    Run by the train command right after `validate(cfg)`, before anything heavy."""
    value = cfg.optimized_metric
    names = list(value) if OmegaConf.is_list(value) or isinstance(value, list) else [value]
    if not names or not all(isinstance(v, str) for v in names):
        raise UserError(
            f"optimized_metric={value!r} must be a metric name such as eval_loss, or a list of names for a "
            "multi-objective sweep, e.g. optimized_metric=[eval_loss,eval/safety_pass_rate]."
        )
    for name in names:
        error = missing_metric_error(name, cfg, f"optimized_metric={name}")
        if error is not None:
            raise UserError(error)
