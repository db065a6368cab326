"""medexp's Optuna sweeper: asks Optuna for trials, launches them as Hydra jobs, tells Optuna how they ended.

Each job gets `optuna.storage/study_name/trial` overrides, so the trial reports eval_loss to the study and
is pruned from wherever it runs. `n_trials` is the study's total: a resumed or parallel sweep runs only
what is left. A failing trial is recorded FAIL and the sweep goes on, up to `max_failure_rate`.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

BUDGET_STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING")


def search_space(arguments: Sequence[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Hydra override grammar -> (Optuna distributions, fixed overrides), as Hydra's Optuna sweeper does.

    choice(a, b) -> categorical; interval(lo, hi) -> float (Hydra parses its bounds as floats); tag(log, ...)
    -> log scale; range(start, stop, step) -> stepped ints or floats, stop excluded as in Hydra's grammar.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Transformer
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    space: dict[str, Any] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(list(arguments)):
        key = override.get_key_element()
        if not override.is_sweep_override():
            fixed[key] = override.get_value_element_as_str()
            continue
        value = override.value()
        if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
            space[key] = CategoricalDistribution(
                list(override.sweep_iterator(transformer=Transformer.encode))
            )
        elif override.is_range_sweep():
            ints = all(isinstance(x, int) for x in (value.start, value.stop, value.step))
            kind = IntDistribution if ints else FloatDistribution
            # the largest value the range reaches below stop
            high = value.start + ((value.stop - value.start - 1e-12) // value.step) * value.step
            space[key] = kind(value.start, int(high) if ints else high, step=value.step)
        elif override.is_interval_sweep():
            ints = isinstance(value.start, int) and isinstance(value.end, int)
            kind = IntDistribution if ints else FloatDistribution
            space[key] = kind(value.start, value.end, log="log" in value.tags)
        else:
            raise ValueError(f"{override.input_line} is not a sweep Optuna can sample")
    for key in fixed:  # a command-line value fixes a parameter of the configured space
        space.pop(key, None)
    return space, fixed


def _quote(value: Any) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(worker: str) -> bool:
    """False only when the worker ran on this host and its process is gone."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


class MedexpOptunaSweeper(Sweeper):
    def __init__(
        self,
        study_name: str,
        storage: str | None,
        direction: str,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        sampler: Any,
        pruner: Any,
        params: Any,
    ) -> None:
        self.study_name = study_name
        self.storage = storage
        self.direction = direction
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.max_failure_rate = max_failure_rate
        self.sampler = sampler
        self.pruner = (
            OmegaConf.to_container(pruner, resolve=True)
            if OmegaConf.is_config(pruner)
            else dict(pruner or {})
        )
        self.params = OmegaConf.to_container(params) if OmegaConf.is_config(params) else dict(params or {})

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

        from medexp.sweeping import PRUNER_ATTR, make_pruner, open_storage

        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        url = self.storage or f"sqlite:///{self.sweep_dir.resolve()}/optuna.db"
        storage = self.storage_backend = open_storage(url, heartbeat=True)
        common = {"study_name": self.study_name, "storage": storage, "pruner": make_pruner(self.pruner)}
        try:
            study = optuna.create_study(sampler=self.sampler, direction=self.direction, **common)
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            # Joining a study (a parallel worker, or a resume): a sampler seeded like the creator's would
            # propose the very trials the creator proposes, so this worker draws its own random stream.
            self.sampler.reseed_rng()
            study = optuna.load_study(sampler=self.sampler, **common)
            created = False
        study.set_user_attr(PRUNER_ATTR, self.pruner)  # what the trial processes build their pruner from
        return study, url, created

    def _mark_interrupted(self, study) -> None:
        """Running trials whose sweeper died (this host: its pid is gone; elsewhere: no heartbeat) stop counting."""
        import optuna

        from medexp.sweeping import WORKER_ATTR

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            worker = trial.user_attrs.get(WORKER_ATTR)
            if worker is not None and not _alive(worker):
                self.storage_backend.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
                log.info(
                    "trial %d was interrupted (its sweeper %s is gone); it will be run again",
                    trial.number,
                    worker,
                )

    @staticmethod
    def _budget_used(trials: Sequence[Any]) -> int:
        """Trials that count toward n_trials: finished ones, failures with an error, and running ones."""
        from medexp.sweeping import ERROR_ATTR, SURPLUS_ATTR

        return sum(
            1
            for t in trials
            if t.state.name in BUDGET_STATES
            and not t.user_attrs.get(SURPLUS_ATTR)
            and (t.state.name != "FAIL" or ERROR_ATTR in t.user_attrs)
        )

    # --- the sweep ---------------------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> Any:
        from medexp.study_report import StudyRun, best_trial_summary, mask_password
        from medexp.sweeping import PRUNERS

        if self.pruner.get("name") not in PRUNERS:
            print(
                f"medexp: error: hydra.sweeper.pruner.name={self.pruner.get('name')!r} is not a pruner medexp "
                f"knows. Use one of {', '.join(PRUNERS)}, e.g. hydra.sweeper.pruner.name=hyperband.",
                file=sys.stderr,
            )
            sys.exit(2)

        space, fixed = search_space([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        study, url, created = self._open_study()
        self._mark_interrupted(study)
        metric = str(self.config.get("optimized_metric", "value"))
        describe = {
            "study_name": self.study_name,
            "storage": mask_password(url),
            "direction": self.direction,
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

        best = best_trial_summary(study, metric)
        if parent is not None:
            parent.finish(study, self.sweep_dir, metric, failed=stopped is not None)
        self._print_best(best, metric, parent)
        if stopped is not None:
            print(f"medexp: error: {stopped}", file=sys.stderr)
            sys.exit(3)
        return best

    def _run_trials(self, study, url: str, space, fixed, parent) -> str | None:
        """Run batches until the study's budget is used; the reason if too many trials failed, else None."""
        import optuna

        from medexp.sweeping import ERROR_ATTR, OVERRIDES_ATTR, SURPLUS_ATTR, WORKER_ATTR

        max_failures = self.max_failure_rate * self.n_trials
        while True:
            left = self.n_trials - self._budget_used(study.trials)
            if left <= 0:
                return None
            trials = []
            for _ in range(min(self.n_jobs, left)):
                with warnings.catch_warnings():  # heartbeats are sent by _Heartbeat, not Study.optimize
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
            for trial in trials:
                overrides = [f"{k}={v}" for k, v in fixed.items()]
                overrides += [f"{k}={v}" for k, v in trial.params.items()]
                overrides += [
                    f"optuna.storage={_quote(url)}",
                    f"optuna.study_name={_quote(study.study_name)}",
                    f"optuna.trial={trial.number}",
                    f"hydra.sweep.subdir=trial_{trial.number}",
                ]
                trial.set_user_attr(OVERRIDES_ATTR, overrides)
                trial.set_user_attr(WORKER_ATTR, _worker())
                batch.append(overrides)

            with _Heartbeat(self.storage_backend, [t._trial_id for t in trials]):
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

        from medexp.sweeping import ERROR_ATTR, is_finite

        if ret.status == JobStatus.COMPLETED and is_finite(ret.return_value):
            study.tell(trial, float(ret.return_value))
            log.info("trial %d: %s", trial.number, ret.return_value)
            return
        if ret.status == JobStatus.COMPLETED:
            error = (
                f"the run returned {ret.return_value!r}, not a finite {self.config.get('optimized_metric')}"
            )
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

    @staticmethod
    def _print_best(best: dict[str, Any] | None, metric: str, parent) -> None:
        if best is None:
            print("medexp: no trial of this study has completed yet.")
            return
        lines = [
            f"best trial: #{best['trial']}  {metric}={best[metric]:.6g}",
            "  params: " + "  ".join(f"{k}={v}" for k, v in best["params"].items()),
            f"  MLflow run: {best['mlflow_run_id']}" + (f"  (study run {parent.run_id})" if parent else ""),
            f"  reproduce: {best['command']}",
        ]
        print("\n".join(lines))


class _Heartbeat:
    """Keeps recording heartbeats for running trials, so other workers can tell a live sweeper from a dead one."""

    def __init__(self, storage, trial_ids: list[int]) -> None:
        self.storage, self.trial_ids = storage, trial_ids
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self.stop.is_set():
            for trial_id in self.trial_ids:
                self.storage.record_heartbeat(trial_id)
            self.stop.wait(self.storage.get_heartbeat_interval() or 30)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        return False
