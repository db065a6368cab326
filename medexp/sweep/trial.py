"""The trial's side of a sweep, in the training process, and the Optuna pieces the sweeper shares with it.

A trial learns which study and trial it is from the `optuna` config node (set by the sweeper as overrides),
reconnects to the study's storage from whatever process or machine runs it, reports eval_loss at every
evaluation, and stops training when the study's pruner says so.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig

from medexp.sweep.schema import PrunerName
from medexp.sweep.storage import open_storage

log = logging.getLogger(__name__)

# Study and trial user attributes medexp reads and writes.
PRUNER_ATTR = "medexp.pruner"  # study: the pruner spec, so trial processes build the same pruner
CONSTRAINTS_ATTR = "medexp.constraints"  # study: hydra.sweeper.constraints, judged by each trial at its end
PARENT_RUN_ATTR = "medexp.mlflow_parent_run_id"  # study: the MLflow run grouping all trials
RUN_ID_ATTR = "medexp.mlflow_run_id"  # trial: its child MLflow run
STEPS_ATTR = "medexp.steps"  # trial: optimizer steps it consumed
ERROR_ATTR = "medexp.error"  # trial: why it failed (absent on interrupted trials)
OVERRIDES_ATTR = "medexp.overrides"  # trial: the overrides it ran with
WORKER_ATTR = "medexp.worker"  # trial: host:pid of the sweeper process that runs it
SURPLUS_ATTR = "medexp.surplus"  # trial: asked beyond n_trials by a racing worker, never run


def make_pruner(spec: dict[str, Any]):
    """`{"name": "median" | "percentile" | "hyperband" | "none", "<name>": {its kwargs}, ...}` -> that Optuna pruner.

    `spec` is `hydra.sweeper.pruner` as plain data (schema.PrunerConf); a null option means Optuna's default.
    """
    import optuna

    name = str(spec.get("name", "none"))
    kwargs = {k: v for k, v in (spec.get(name) or {}).items() if v is not None}
    if name == "median":
        return optuna.pruners.MedianPruner(**kwargs)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(**kwargs)
    if name == "percentile":
        return optuna.pruners.PercentilePruner(**kwargs)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}; use one of {', '.join(p.value for p in PrunerName)}")


@dataclass
class TrialReporter:
    """The Optuna trial this run is, and a Trainer callback that reports to it and obeys its pruner."""

    trial: Any
    study_name: str
    parent_run_id: str | None
    constraints: list[str] = field(default_factory=list)  # the study's hydra.sweeper.constraints
    pruned_at: int | None = None

    @property
    def number(self) -> int:
        return self.trial.number

    def run_tags(self) -> dict[str, str | None]:
        """Tags that make the trial's MLflow run a child of the study's run."""
        return {
            "mlflow.parentRunId": self.parent_run_id,
            "medexp.optuna_study": self.study_name,
            "medexp.optuna_trial": str(self.number),
            "medexp.trial_state": "RUNNING",
        }

    def attach_run(self, run_id: str | None) -> None:
        self.trial.set_user_attr(RUN_ID_ATTR, run_id)

    def finish(self, tracker, steps: int, metrics: dict[str, float]) -> None:
        """Record the steps this trial consumed, its constraint values, and on its run whether it was pruned
        and met the constraints. (The run's final `medexp.trial_state` is set by the sweeper, from the state
        Optuna was told.)"""
        from medexp.sweep.objectives import parse_constraints

        self.trial.set_user_attr(STEPS_ATTR, steps)
        tags = {"pruned": str(self.pruned_at is not None).lower()}
        violations = {c.text: c.violation(metrics) for c in parse_constraints(self.constraints)}
        for text, violation in violations.items():
            self.trial.set_constraint(text, violation)  # <= 0: met; Optuna's best trial is a feasible one
        if violations:
            tags["medexp.feasible"] = str(all(v <= 0 for v in violations.values())).lower()
            broken = [text for text, v in violations.items() if v > 0]
            if broken:
                log.info("trial %d breaks the constraints: %s", self.number, "; ".join(broken))
        tracker.set_tags(tags)

    def callback(self, metric: str = "eval_loss", better: str = "minimize"):
        """Reports `metric` (the last stage kind's progress: eval_loss, or eval_reward for grpo) at each
        evaluation and stops training when the pruner says so. Only into a single-objective study whose direction
        is `better`: a pruner compares intermediate values in the study's direction, so a falling loss reported
        to a maximizing study would prune the best trials. Otherwise the trial reports nothing and runs whole."""
        from transformers import TrainerCallback

        reporter, study = self, self.trial.study
        reports = len(study.directions) == 1 and study.direction.name.lower() == better
        if not reports:
            log.info("trial %d: %s is not reported (the study %ss): no pruning", self.number, metric,
                     "/".join(d.name.lower() for d in study.directions))  # fmt: skip

        class ReportAndPrune(TrainerCallback):
            def on_evaluate(self, args, state, control, metrics=None, **kwargs):
                value = (metrics or {}).get(metric)
                if value is None or not reports:
                    return
                reporter.trial.report(float(value), step=state.global_step)
                if reporter.trial.should_prune():
                    reporter.pruned_at = state.global_step
                    log.info(
                        "trial %d pruned at step %d (%s %.4f)",
                        reporter.number,
                        state.global_step,
                        metric,
                        value,
                    )
                    control.should_training_stop = True

        return ReportAndPrune()


def connect_trial(optuna_cfg: DictConfig | None) -> TrialReporter | None:
    """The trial named by the `optuna` config node, or None for a single run."""
    if optuna_cfg is None or optuna_cfg.trial is None:
        return None
    import optuna

    storage = open_storage(str(optuna_cfg.storage))
    study_id = storage.get_study_id_from_name(str(optuna_cfg.study_name))
    attrs = storage.get_study_user_attrs(study_id)
    study = optuna.load_study(
        study_name=str(optuna_cfg.study_name), storage=storage, pruner=make_pruner(attrs.get(PRUNER_ATTR, {}))
    )
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, int(optuna_cfg.trial))
    return TrialReporter(
        trial=optuna.trial.Trial(study, trial_id),
        study_name=str(optuna_cfg.study_name),
        parent_run_id=attrs.get(PARENT_RUN_ATTR),
        constraints=list(attrs.get(CONSTRAINTS_ATTR) or []),
    )


def is_finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
