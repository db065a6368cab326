"""Stage expansion: the list of (name, full config) a run trains, in order. Whether each stage's kind fits its
data is the stage kinds' registry's to say (medexp.training.methods.check_stages)."""

from __future__ import annotations

import copy

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ValidationError

from medexp.config.errors import UserError, did_you_mean


def stage_configs(cfg: DictConfig) -> list[tuple[str, DictConfig]]:
    """The stages a run trains, in order, each as a full config: `dataset` replaced by the stage's dataset and
    `trainer` updated with the stage's `trainer` overrides. A run without `stages` is one stage named ""."""
    stages = cfg.stages
    if not stages:
        return [("", cfg)]
    out = []
    for name, stage in stages.items():
        if OmegaConf.is_missing(stage, "dataset"):
            raise UserError(
                f"Stage {name!r} has no dataset. Give each stage one with +dataset@stages.{name}.dataset=<option> "
                f"(for example +dataset@stages.{name}.dataset=pubmedqa), or in an experiment preset's defaults."
            )
        overrides = stage.trainer
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
    return out


def trained_system_prompt(cfg: DictConfig) -> str:
    """The system prompt a run trained with (its last stage's dataset's), as chat, serve, export and benchmark
    apply it."""
    return str(stage_configs(cfg)[-1][1].dataset.system_prompt).strip()
