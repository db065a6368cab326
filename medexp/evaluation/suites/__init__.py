"""Evaluation suites, one module each: held-out loss (measured in training), generation on held-out questions,
the LLM quality judge, multiple choice, out-of-domain prompts, safety probes, a user's prompts file, and a user's
own suites (eval.suites, through Hydra's `_target_`). Each follows medexp.evaluation.suites.base.Suite."""

from medexp.evaluation.suites.base import EvalContext, Metric, Suite, Switch
from medexp.evaluation.suites.multiple_choice import stage_scorer
from medexp.evaluation.suites.registry import after_training, all_suites, check_inputs
from medexp.evaluation.suites.safety import safety_pass_rate

__all__ = [
    "EvalContext",
    "Metric",
    "Suite",
    "Switch",
    "after_training",
    "all_suites",
    "check_inputs",
    "safety_pass_rate",
    "stage_scorer",
]
