"""The stage kinds by name, and the checks that a run's stages and their data agree: each stage's kind (its
`stages.<name>.kind`, else its data's default kind) takes its data, a mixture holds only data that mixes into
supervised stages, and each kind's own `check`. Called right after `validate`; cheap, nothing heavy imported."""

from __future__ import annotations

from typing import NamedTuple

from omegaconf import DictConfig

from medexp.config.errors import UserError, did_you_mean
from medexp.config.stages import stage_configs
from medexp.data.readers import Reader, check_sources, reader_for
from medexp.training.methods.base import StageKind
from medexp.training.methods.dpo import DPO
from medexp.training.methods.grpo import GRPO
from medexp.training.methods.kto import KTO
from medexp.training.methods.orpo import ORPO
from medexp.training.methods.pretrain import Pretrain
from medexp.training.methods.sft import SFT
from medexp.training.methods.simpo import SimPO

# The kinds medexp ships; adding one is its module and an entry here (or `register` from your own code).
KINDS: dict[str, StageKind] = {
    kind.name: kind for kind in (SFT(), Pretrain(), DPO(), KTO(), ORPO(), SimPO(), GRPO())
}


class PlannedStage(NamedTuple):
    name: str  # "" for a plain run's one stage
    cfg: DictConfig  # the run's config with this stage's dataset and trainer settings
    kind: StageKind


def register(kind: StageKind) -> StageKind:
    """Make `stages.<name>.kind=<kind.name>` train with `kind` (replacing a kind of that name)."""
    KINDS[kind.name] = kind
    return kind


def get_kind(name: str, key: str = "kind") -> StageKind:
    """The kind registered as `name`; one paragraph naming the known kinds otherwise."""
    kind = KINDS.get(str(name))
    if kind is None:
        known = list(KINDS)
        raise UserError(
            f"{key}={name} is not a stage kind.{did_you_mean(str(name), known)} Known: {', '.join(known)}. "
            "Set it to one of them, drop it to take the kind from the stage's data, or register a kind of your "
            "own (medexp.training.methods.register)."
        )
    return kind


def default_kind(reader: Reader, key: str) -> StageKind:
    """The kind a stage on the reader's data trains with when its `kind` is not set: the first registered
    whose `default_for` holds the reader's record type."""
    for kind in KINDS.values():
        if reader.record in kind.default_for:
            return kind
    raise UserError(
        f"No stage kind trains {key}.kind={reader.kind} ({reader.record.__name__} records) by default. Name "
        f"one for the stage with stages.<name>.kind=<kind> (known: {', '.join(KINDS)})."
    )


def check_stages(cfg: DictConfig) -> list[PlannedStage]:
    """The run's stages with their kinds, once every source's reader, every stage's kind and data, the mixture
    and each kind's own rules are known to agree; UserError (one paragraph) on the first that does not."""
    check_sources(cfg)
    plans = []
    for name, stage_cfg in stage_configs(cfg):
        declared = cfg.stages[name].kind if name else None
        reader = reader_for(stage_cfg.dataset.kind)  # known: check_sources refused unknown kinds
        if declared is None:
            kind = default_kind(reader, f"stages.{name}.dataset" if name else "dataset")
        else:
            kind = get_kind(declared, f"stages.{name}.kind")
        if reader.record not in kind.records:
            raise UserError(
                f"stages.{name}.kind={kind.name} needs {kind.describe_needs()}, but its dataset has kind "
                f"{reader.kind}. Give the stage matching data (e.g. +dataset@stages.{name}.dataset=pretrain_sample "
                f"for pretraining), or drop stages.{name}.kind to take the kind from the data."
            )
        plans.append(PlannedStage(name, stage_cfg, kind))
    _check_mixture(cfg)
    for i, plan in enumerate(plans):
        plan.kind.check(plan.name, plan.cfg, last=i == len(plans) - 1)
    return plans


def _check_mixture(cfg: DictConfig) -> None:
    """A mixture is mixed into supervised stages as question-answer pairs: other data trains in its own stage."""
    for name, node in cfg.mixture.items():
        reader = reader_for(node.kind, f"mixture.{name}")
        if not reader.mixable:
            hint = default_kind(reader, f"mixture.{name}").own_stage_hint()
            raise UserError(
                f"mixture.{name} is {reader.describe} (kind {reader.kind}), but a mixture is mixed into "
                f"supervised stages as question-answer pairs. {hint}"
            )
