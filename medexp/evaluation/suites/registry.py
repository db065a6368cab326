"""The suites an evaluation runs, in order: medexp's own, then the user's (eval.suites)."""

from __future__ import annotations

from omegaconf import DictConfig

from medexp.evaluation.suites.base import Suite
from medexp.evaluation.suites.generation import HeldOutGeneration
from medexp.evaluation.suites.judge import QualityJudge
from medexp.evaluation.suites.loss import HeldOutLoss
from medexp.evaluation.suites.multiple_choice import MultipleChoice
from medexp.evaluation.suites.ood import OutOfDomain
from medexp.evaluation.suites.prompts_file import PromptsFile, load_prompts_file
from medexp.evaluation.suites.safety import SafetyProbes
from medexp.evaluation.suites.user import user_suites

# The judge grades the generation suite's answers, so it comes after it.
BUILTIN: tuple[type[Suite], ...] = (
    HeldOutLoss,
    HeldOutGeneration,
    QualityJudge,
    MultipleChoice,
    OutOfDomain,
    SafetyProbes,
    PromptsFile,
)


def all_suites(eval_cfg: DictConfig) -> list[Suite]:
    """Every suite this eval group knows, on or off: the metric map names what each would log."""
    return [cls() for cls in BUILTIN] + user_suites(eval_cfg)


def after_training(eval_cfg: DictConfig) -> list[Suite]:
    """The suites evaluate_model runs for this eval group: those turned on, less the training loop's own."""
    return [s for s in all_suites(eval_cfg) if s.runs_after_training and s.enabled(eval_cfg)]


def check_inputs(eval_cfg: DictConfig) -> None:
    """Read the eval group's own files and build the user's suites now, so a bad line or a `_target_` that
    cannot be imported stops a run before training rather than after."""
    if eval_cfg.prompts_file is not None:
        load_prompts_file(eval_cfg.prompts_file)
    user_suites(eval_cfg)
