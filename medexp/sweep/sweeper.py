"""medexp's Optuna sweeper: asks Optuna for trials, launches them as Hydra jobs, tells Optuna how they ended.

Each job gets `optuna.storage/study_name/trial` overrides, so the trial reports eval_loss to the study and
is pruned from wherever it runs. `n_trials` is the study's total: a resumed or parallel sweep runs only
what is left. A failing trial is recorded FAIL and the sweep goes on, up to `max_failure_rate`.

Its options are `medexp.sweep.schema.MedexpOptunaSweeperConf`. Hydra instantiates it through the subclass in
hydra_plugins/medexp_optuna_sweeper/plugin.py: Hydra 1.3 accepts plugin classes only from `hydra_plugins`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.errors import HydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from medexp.config import UserError, exit_with
from medexp.config.rules import check_tree
from medexp.sweep.search_space import quote_value, search_space
from medexp.sweep.storage import mask_password, open_storage
from medexp.sweep.workers import Heartbeat, continue_interrupted, job_share, mark_interrupted, worker_id

log = logging.getLogger(__name__)

BUDGET_STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING")


def _plain(value: Any) -> Any:
    """An Enum option (schema.Direction, ...) as its plain string, for Optuna, MLflow and the study's attributes."""
    return value.value if isinstance(value, Enum) else value


def _plain_dict(node: Any) -> dict[str, Any]:
    """A config node (DictConfig, dataclass, dict or None) as plain data: Enums become their names (= values)."""
    if node is None:
        return {}
    config = node if OmegaConf.is_config(node) else OmegaConf.create(node)
    return OmegaConf.to_container(config, resolve=True, enum_to_str=True)


class MedexpOptunaSweeper(Sweeper):
    def __init__(
        self,
        study_name: str,
        storage: str | None,
        direction: Any,
        directions: Any,
        constraints: Any,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        sampler: Any,
        pruner: Any,
        params: Any,
    ) -> None:
        # The arguments are the fields of schema.MedexpOptunaSweeperConf, as Hydra instantiates them (Enum
        # options arrive as Enum members, nested nodes as DictConfigs); kept here as plain strings and dicts.
        self.study_name = study_name
        self.storage = storage
        self.direction = _plain(direction)
        self.directions = None if directions is None else [_plain(d) for d in directions]
        self.constraints = [str(c) for c in constraints or []]
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.max_failure_rate = max_failure_rate
        self.sampler = sampler
        self.pruner = _plain_dict(pruner)
        params = OmegaConf.to_container(params) if OmegaConf.is_config(params) else dict(params or {})
        self.params = {k: v for k, v in params.items() if v is not None}  # null: a preset's key dropped

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )
        self.sweep_dir = Path(str(config.hydra.sweep.dir))

    # --- the study ---------------------------------------------------------------------------------------
    def _open_study(self):
        import optuna

        from medexp.sweep.trial import CONSTRAINTS_ATTR, PRUNER_ATTR, make_pruner

        if not self.storage:  # the default: a SQLite file in the sweep folder
            self.sweep_dir.mkdir(parents=True, exist_ok=True)
        url = self.storage or f"sqlite:///{self.sweep_dir.resolve()}/optuna.db"
        storage = self.storage_backend = open_storage(url, heartbeat=True)
        common = {"study_name": self.study_name, "storage": storage, "pruner": make_pruner(self.pruner)}
        try:
            # a multi-objective study takes `directions`: a list, one per name of optimized_metric
            goal = {"directions": self.directions} if self.directions else {"direction": self.direction}
            study = optuna.create_study(sampler=self.sampler, **goal, **common)
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            # Joining a study (a parallel worker, or a resume): a sampler seeded like the creator's would
            # propose the very trials the creator proposes, so this worker draws its own random stream.
            self.sampler.reseed_rng()
            study = optuna.load_study(sampler=self.sampler, **common)
            created = False
        study.set_user_attr(PRUNER_ATTR, self.pruner)  # what the trial processes build their pruner from
        study.set_user_attr(CONSTRAINTS_ATTR, self.constraints)  # what they judge themselves on at the end
        return study, url, created

    @staticmethod
    def _budget_used(trials: Sequence[Any]) -> int:
        """Trials that count toward n_trials: finished ones, failures with an error, and running ones."""
        from medexp.sweep.trial import ERROR_ATTR, SURPLUS_ATTR

        return sum(
            1
            for t in trials
            if t.state.name in BUDGET_STATES
            and not t.user_attrs.get(SURPLUS_ATTR)
            and (t.state.name != "FAIL" or ERROR_ATTR in t.user_attrs)
        )

    # --- the sweep ---------------------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> Any:
        from medexp.config.metrics import optimized_metrics
        from medexp.sweep.objectives import objectives_error
        from medexp.sweep.report import StudyRun, best_trial_summary, print_best

        try:
            space, fixed = search_space([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
            # own options first (the ranges schema.MedexpOptunaSweeperConf declares), then what the trials are
            # judged on against the composed eval group
            check_tree(self.config.hydra.sweeper, "hydra.sweeper", self.config)
            error = objectives_error(self.config, self.directions, self.constraints, self.pruner["name"])
        except UserError as err:
            error = str(err)
        except (ValueError, HydraException) as err:
            error = f"the search space cannot be sampled: {err}. Use choice(...), interval(...), range(...) or tag(log, interval(...))."
        if error is not None:
            exit_with(error)

        try:
            study, url, created = self._open_study()
        except UserError as err:
            exit_with(err)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        mark_interrupted(study, self.storage_backend)
        left = self.n_trials - self._budget_used(study.trials)
        if 0 < left < self.n_jobs:  # a resumed study; a new one was checked against n_trials above
            exit_with(
                f"hydra.sweeper.n_jobs={self.n_jobs} is more than the {left} trials study {self.study_name!r} has "
                f"left (n_trials={self.n_trials}, {self.n_trials - left} done or running): the surplus jobs would "
                f"have nothing to run. Set hydra.sweeper.n_jobs={left} or fewer, or raise hydra.sweeper.n_trials."
            )
        metrics = optimized_metrics(self.config)
        describe = {
            "study_name": self.study_name,
            "storage": mask_password(url),
            "direction": self.directions or self.direction,
            "constraints": self.constraints or None,
            "n_trials": self.n_trials,
            "sampler": type(self.sampler).__name__,
            "sampler.config": OmegaConf.to_yaml(self.config.hydra.sweeper.sampler).strip(),
            "pruner": self.pruner,
            **{f"search.{k}": repr(v) for k, v in space.items()},
        }
        parent = StudyRun.attach(self.config.tracking, study, describe)
        log.info(
            "study %r (%s) in %s: %d of %d trials done or running",
            self.study_name,
            "new" if created else "resumed",
            mask_password(url),
            self._budget_used(study.trials),
            self.n_trials,
        )

        stopped = self._run_trials(study, url, space, fixed, parent)

        best = best_trial_summary(study, metrics)
        if parent is not None:
            parent.finish(study, self.sweep_dir, metrics, failed=stopped is not None)
        print_best(study, best, metrics, parent)
        if stopped is not None:
            exit_with(stopped, status=3)  # the sweep ran and failed too often: not a config mistake
        return best

    def _run_trials(self, study, url: str, space, fixed, parent) -> str | None:
        """Run batches until the study's budget is used; the reason if too many trials failed, else None."""
        import optuna

        from medexp.sweep.trial import ERROR_ATTR, OVERRIDES_ATTR, SURPLUS_ATTR, WORKER_ATTR

        max_failures = self.max_failure_rate * self.n_trials
        while True:
            left = self.n_trials - self._budget_used(study.trials)
            if left <= 0:
                return None
            trials = []
            for _ in range(min(self.n_jobs, left)):
                with warnings.catch_warnings():  # heartbeats are sent by Heartbeat, not Study.optimize
                    warnings.filterwarnings("ignore", message="Heartbeat of storage")
                    trial = study.ask(space)
                # Trial numbers are handed out atomically: count what precedes this one to stay exact when
                # several workers share the study.
                earlier = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number]
                if self._budget_used(earlier) >= self.n_trials:
                    trial.set_user_attr(SURPLUS_ATTR, True)
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    break
                trials.append(trial)
            if not trials:
                return None

            batch = []
            for slot, trial in enumerate(trials):
                overrides = continue_interrupted(self.storage_backend, trial, self.sweep_dir, fixed)
                if overrides is None:
                    overrides = [f"{k}={v}" for k, v in fixed.items()]
                    overrides += [f"{k}={v}" for k, v in trial.params.items()]
                overrides += [
                    f"optuna.storage={quote_value(url)}",
                    f"optuna.study_name={quote_value(study.study_name)}",
                    f"optuna.trial={trial.number}",
                    f"hydra.sweep.subdir=trial_{trial.number}",
                    *job_share(self.launcher, len(trials), slot),  # threads (and a GPU) per parallel job
                ]
                trial.set_user_attr(OVERRIDES_ATTR, overrides)
                trial.set_user_attr(WORKER_ATTR, worker_id())
                batch.append(overrides)

            with Heartbeat(self.storage_backend, [t._trial_id for t in trials]):
                returns = self.launcher.launch(batch, initial_job_idx=trials[0].number)

            for trial, ret in zip(trials, returns, strict=True):
                self._tell(study, trial, ret)
                if parent is not None:
                    parent.trial_done(study, self.storage_backend.get_trial(trial._trial_id))

            failed = [t for t in study.trials if t.state.name == "FAIL" and ERROR_ATTR in t.user_attrs]
            if len(failed) > max_failures:
                return (
                    f"the sweep stopped: {len(failed)} trials failed, more than max_failure_rate="
                    f"{self.max_failure_rate} of n_trials={self.n_trials}. The last error: "
                    f"{failed[-1].user_attrs[ERROR_ATTR]}. Each trial's log is in "
                    f"{self.sweep_dir}/trial_<n>/; fix the cause or raise hydra.sweeper.max_failure_rate."
                )

    def _tell(self, study, trial, ret) -> None:
        import optuna
        from hydra.core.utils import JobStatus

        from medexp.sweep.trial import ERROR_ATTR, is_finite

        returned = ret._return_value  # JobReturn.return_value would raise a failed job's exception
        values = returned if isinstance(returned, list | tuple) else [returned]  # several: multi-objective
        if ret.status == JobStatus.COMPLETED and all(is_finite(v) for v in values):
            study.tell(trial, [float(v) for v in values] if len(values) > 1 else float(values[0]))
            log.info("trial %d: %s", trial.number, ret.return_value)
            return
        if ret.status == JobStatus.COMPLETED:
            error = f"the run returned {ret.return_value!r}, not a finite {self.config.optimized_metric}"
        else:
            # The captured exception, read directly: JobReturn.return_value would print "Error executing job"
            # even for a pruned trial.
            err = ret._return_value
            if isinstance(err, optuna.TrialPruned):
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                log.info("trial %d: %s", trial.number, err)
                return
            error = (
                f"{type(err).__name__}: {str(err).rstrip('.')}"  # any failure: recorded, the sweep goes on
            )
        trial.set_user_attr(ERROR_ATTR, error[:2000])
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        log.warning("trial %d failed: %s", trial.number, error)
