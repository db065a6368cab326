"""A user's own suites, added without editing medexp: each entry of `eval.suites` names a class (or a function
returning a suite) by `_target_`, with its arguments beside it, and Hydra instantiates it:

    eval:
      suites:
        short_answers:                       # the suite's name (progress bar, errors)
          _target_: mypackage.suites.ShortAnswers
          max_words: 40                      # passed to ShortAnswers(max_words=40)

The object follows medexp.evaluation.suites.base.Suite: `metrics(eval_cfg)` (Metric objects, or plain names
after eval/, which then have base/ and delta/ copies) and `run(ctx)`; `prepare(ctx)` is optional. Its metrics
join the metric map, so `optimized_metric` and `hydra.sweeper.constraints` may name them.
"""

from __future__ import annotations

import importlib
from typing import Any

from omegaconf import DictConfig, OmegaConf

from medexp.config import UserError
from medexp.evaluation.suites.base import EvalContext, Metric, Suite, Switch


class Plugged(Suite):
    """A user's suite object under its eval.suites name, with the interface's defaults filled in."""

    def __init__(self, name: str, suite: Any) -> None:
        self.name, self.suite = name, suite

    def switches(self, eval_cfg: DictConfig) -> tuple[Switch, ...]:
        own = getattr(self.suite, "switches", None)
        return (Switch(f"eval.suites.{self.name}", True), *(own(eval_cfg) if own else ()))

    def metrics(self, eval_cfg: DictConfig) -> list[Metric]:
        return [m if isinstance(m, Metric) else Metric(str(m)) for m in self.suite.metrics(eval_cfg)]

    def prepare(self, ctx: EvalContext) -> int:
        prepare = getattr(self.suite, "prepare", None)
        return int(prepare(ctx)) if prepare is not None else 0

    def run(self, ctx: EvalContext) -> None:
        self.suite.run(ctx)


def user_suites(eval_cfg: DictConfig) -> list[Suite]:
    """The suites of eval.suites, instantiated; an entry set to null is left out (an override turning it off)."""
    return [
        Plugged(str(name), _build(str(name), node))
        for name, node in eval_cfg.suites.items()
        if node is not None
    ]


def _build(name: str, node: Any) -> Any:
    key = f"eval.suites.{name}"
    example = f"{key}._target_=mypackage.suites.MySuite"
    if not OmegaConf.is_dict(node) or "_target_" not in node:
        raise UserError(
            f"{key}={OmegaConf.to_container(node) if OmegaConf.is_config(node) else node!r} names no suite: give "
            f"the dotted path of its class as _target_, e.g. +{example}, and its arguments beside it."
        )
    from hydra.utils import instantiate

    try:
        suite = instantiate(node, _convert_="all")
    except Exception as err:  # cannot be imported, or its constructor failed: the user's code, reported as is
        raise UserError(
            f"{key}._target_={node._target_!r} could not be instantiated: {_why(str(node._target_), err)}. Give "
            "the dotted path of a class (or a function returning a suite) importable in this Python environment, "
            f"e.g. {example}, with its constructor's arguments as {key}.<argument>=<value>."
        ) from err
    lacking = [m for m in ("metrics", "run") if not callable(getattr(suite, m, None))]
    if lacking:
        raise UserError(
            f"{key}._target_={node._target_!r} made a {type(suite).__name__}, which is not an evaluation suite: it "
            f"has no {' or '.join(lacking)} method. A suite needs metrics(eval_cfg) and run(ctx); subclass "
            "medexp.evaluation.suites.Suite."
        )
    return suite


def _why(target: str, err: BaseException) -> str:
    """What went wrong, on one line: the attribute the longest importable prefix of `target` lacks, or else the
    innermost error of the chain Hydra raised (the import or the constructor's own error)."""
    parts = target.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except Exception:  # noqa: BLE001 - not importable at this length: try a shorter prefix
            continue
        for j in range(i, len(parts)):
            if not hasattr(obj, parts[j]):
                return f"{'.'.join(parts[:j])} has no {parts[j]!r}"
            obj = getattr(obj, parts[j])
        break
    while err.__cause__ is not None:
        err = err.__cause__
    return f"{type(err).__name__}: {' '.join(str(err).split())}"
