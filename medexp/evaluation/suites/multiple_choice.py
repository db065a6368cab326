"""Multiple-choice accuracy by option log-likelihood (medexp.evaluation.multiple_choice): the run's own
validation questions that are multiple choice or yes/no/maybe, and each set of eval.mc.sets (a dataset option),
at most eval.mc.limit questions per set."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from medexp.evaluation.suites.base import EvalContext, Metric, Suite, Switch, flag

log = logging.getLogger(__name__)


class MultipleChoice(Suite):
    name = "mc"

    def switches(self, eval_cfg: DictConfig) -> tuple[Switch, ...]:
        return (flag(eval_cfg, "mc.enabled", preset="eval=mc"),)

    def metrics(self, eval_cfg: DictConfig) -> list[Metric]:
        own = flag(eval_cfg, "mc.validation")
        # the run's own questions count only when its validation split holds multiple-choice ones
        out = _per_set("validation", needs=(own,), certain=False, never=_no_own_questions)
        for name in eval_cfg.mc.sets or {}:
            out += _per_set(str(name))
        return out

    def prepare(self, ctx: EvalContext) -> int:
        self.sets = question_sets(ctx)
        return sum(len(items) for _, items in self.sets.values()) * ctx.models

    def run(self, ctx: EvalContext) -> None:
        from medexp.evaluation.generation import as_base
        from medexp.evaluation.multiple_choice import accuracy

        if not self.sets:
            log.warning("eval.mc: no multiple-choice or yes/no/maybe questions to score; add eval.mc.sets")
        for name, (system, items) in self.sets.items():
            ctx.progress.suite(f"mc/{name}")
            adapted = accuracy(ctx.model, ctx.tokenizer, system, ctx.progress.over(items))
            base = None
            if ctx.compare:
                with as_base(ctx.model):
                    base = accuracy(ctx.model, ctx.tokenizer, system, ctx.progress.over(items))
                del base["questions"]  # the same count for both; no base/delta copy
            ctx.result.add(adapted, base, prefix=f"mc/{name}/")


def _per_set(name: str, needs: tuple = (), certain: bool = True, never: Any = None) -> list[Metric]:
    return [
        Metric(f"mc/{name}/accuracy", needs=needs, certain=certain, never=never),
        Metric(f"mc/{name}/accuracy_norm", needs=needs, certain=certain, never=never),
        Metric(f"mc/{name}/questions", base=False, delta=False, needs=needs, certain=certain, never=never),
    ]


def _no_own_questions(cfg: DictConfig) -> str | None:
    """Why the run's own validation questions (its last stage's data and mixture) can hold no multiple-choice or
    yes/no/maybe question, or None when they can: a sweep judging every trial on them would find them all missing."""
    from medexp.config import stage_configs
    from medexp.data.readers import READERS

    if OmegaConf.select(cfg, "stages") is None and OmegaConf.select(cfg, "dataset") is None:
        return None  # an eval group alone: nothing to judge the data by
    stage_cfg = stage_configs(cfg)[-1][1]
    data = [stage_cfg.dataset, *(stage_cfg.mixture or {}).values()]
    if any(
        str(d.kind) not in READERS or READERS[str(d.kind)].lettered_options or d.decision_field for d in data
    ):
        return None  # an unknown kind is the data check's to refuse
    d = stage_cfg.dataset
    return (
        f"the held-out questions are the last stage's data ({d.path or d.name}, dataset.kind={d.kind}), which "
        "holds no multiple-choice or yes/no/maybe question. Name a set of its own instead, e.g. "
        "+dataset@eval.mc.sets.medmcqa=medmcqa and eval/mc/medmcqa/accuracy, or give the last stage "
        "multiple-choice data (dataset.kind=multiple_choice, or a decision_field)."
    )


def question_sets(ctx: EvalContext) -> dict[str, tuple[str, list]]:
    """name -> (system prompt, items): the run's own multiple-choice validation questions and eval.mc.sets."""
    from medexp.data.loading import load_pairs
    from medexp.evaluation.multiple_choice import choice_item

    mc = ctx.eval_cfg.mc
    sets: dict[str, tuple[str, list]] = {}
    if mc.validation:
        items = []
        for (q, a), source in zip(ctx.data.validation_pairs, ctx.data.validation_sources, strict=True):
            item = choice_item(q, a, ctx.sources[source])
            if item is not None:
                items.append(item)
        if items:
            sets["validation"] = (ctx.system_prompt, items[: mc.limit])
    for name, set_cfg in (mc.sets or {}).items():
        pairs = load_pairs(set_cfg, f"eval.mc.sets.{name}").pairs
        random.Random(ctx.seed).shuffle(pairs)
        items = [it for q, a in pairs if (it := choice_item(q, a, set_cfg)) is not None][: mc.limit]
        sets[str(name)] = (str(set_cfg.system_prompt).strip(), items)
    return sets


def stage_scorer(cfg: DictConfig, data: Any) -> Callable[[Any, Any], dict[str, float]] | None:
    """What a staged run scores before its first stage and after each (eval.mc.each_stage): the accuracy of
    (model, tokenizer) on the questions the final evaluation scores (`data`, the last stage's prepared data, and
    eval.mc.sets, read once here), as `mc/<set>/accuracy` and `accuracy_norm`; None when it is off."""
    from medexp.data import sources

    mc = cfg.eval.mc
    if not (mc.enabled and mc.each_stage):
        return None
    sets = question_sets(EvalContext(cfg.eval, None, None, data, sources(cfg), int(cfg.seed), progress=None))

    def score(model: Any, tokenizer: Any) -> dict[str, float]:
        from medexp.evaluation.multiple_choice import accuracy

        scores: dict[str, float] = {}
        for name, (system, items) in sets.items():
            found = accuracy(model, tokenizer, system, items)
            scores |= {f"mc/{name}/{k}": v for k, v in found.items() if k != "questions"}
        return scores

    return score
