"""Stage expansion: the list of (name, full config) a run trains, in order."""

from __future__ import annotations

import copy

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ValidationError

from medexp.config.errors import UserError, did_you_mean


def stage_configs(cfg: DictConfig) -> list[tuple[str, DictConfig]]:
    """The stages a run trains, in order, each as a full config: `dataset` replaced by the stage's dataset and
    `trainer` updated with the stage's `trainer` overrides. A run without `stages` is one stage named ""."""
    stages = cfg.get("stages") or {}
    if not stages:
        _check_kinds(cfg, [("", cfg, None)])
        return [("", cfg)]
    out = []
    kinds = []
    for name, stage in stages.items():
        if OmegaConf.is_missing(stage, "dataset"):
            raise UserError(
                f"Stage {name!r} has no dataset. Give each stage one with +dataset@stages.{name}.dataset=<option> "
                f"(for example +dataset@stages.{name}.dataset=pubmedqa), or in an experiment preset's defaults."
            )
        overrides = stage.get("trainer") or {}
        known = list(cfg.trainer)
        for key in overrides:
            if key not in known:
                raise UserError(
                    f"stages.{name}.trainer.{key} is not a trainer setting.{did_you_mean(str(key), known)} "
                    f"Known: {', '.join(known)}."
                )
        stage_cfg = copy.deepcopy(cfg)
        stage_cfg.dataset = stage.dataset
        try:
            stage_cfg.trainer = OmegaConf.merge(cfg.trainer, overrides)
        except ValidationError as err:
            raise UserError(
                f"stages.{name}.trainer: {str(err).splitlines()[0]} (key {err.full_key}). Give a value of "
                "the trainer setting's type."
            ) from None
        stage_cfg.stages = {}
        out.append((str(name), stage_cfg))
        kinds.append((str(name), stage_cfg, stage.get("kind")))
    _check_kinds(cfg, kinds)
    return out


def stage_kind(stage_cfg: DictConfig) -> str:
    """pretrain for plain text (dataset.kind=text), dpo for preference data, else sft."""
    return {"text": "pretrain", "preference": "dpo"}.get(str(stage_cfg.dataset.kind), "sft")


def _check_kinds(cfg: DictConfig, stages: list[tuple[str, DictConfig, str | None]]) -> None:
    """A stage's kind matches its data; text is neither mixed in nor the data of the generation suite."""
    for name, stage_cfg, kind in stages:
        data_kind = str(stage_cfg.dataset.kind)
        if kind is not None and str(kind) != stage_kind(stage_cfg):
            wanted = {
                "pretrain": "dataset.kind=text",
                "dpo": "dataset.kind=preference (prompt, chosen, rejected)",
            }.get(str(kind), "question-answer data (qa, multiple_choice)")
            raise UserError(
                f"stages.{name}.kind={kind} needs {wanted}, but its dataset has kind {data_kind}. Give the stage "
                f"matching data (e.g. +dataset@stages.{name}.dataset=pretrain_sample for pretraining), or drop "
                f"stages.{name}.kind to take the kind from the data."
            )
    for mix_name, node in (cfg.get("mixture") or {}).items():
        if str(node.kind) == "preference":
            raise UserError(
                f"mixture.{mix_name} is preference data (kind preference), but a mixture is mixed into "
                "supervised stages as question-answer pairs. Tune on it in a stage of its own: "
                f"+dataset@stages.<name>.dataset=<its option> with stages.<name>.kind=dpo (experiment=sft_then_dpo)."
            )
        if str(node.kind) == "text":
            raise UserError(
                f"mixture.{mix_name} is plain text (kind text), but a mixture is mixed into supervised stages as "
                "question-answer pairs. Pretrain on it in a stage of its own: "
                f"+dataset@stages.<name>.dataset=<its option> with stages.<name>.kind=pretrain."
            )
    name, last, _ = stages[-1]
    if stage_kind(last) == "pretrain" and last.eval.generation.enabled:
        where = f"stage {name!r}" if name else "the run"
        raise UserError(
            f"The last stage of {where} pretrains on plain text, so there are no held-out questions for "
            "eval.generation to answer. Follow it with a supervised stage (experiment=cpt_then_sft), or turn "
            "generation off (eval.generation.enabled=false, or eval=none); held-out loss and perplexity on the "
            "text are still measured."
        )
