"""The MLflow side of an Optuna study: one parent run per study, its running best, and its final report.

Every trial's own run is a child of it (tag `mlflow.parentRunId`, set by the trial from the study's user
attributes). A resumed study, and every parallel worker, attaches to the same parent run.
"""

from __future__ import annotations

import logging
import shlex
import time
import warnings
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig

from medexp.sweep.trial import ERROR_ATTR, OVERRIDES_ATTR, PARENT_RUN_ATTR, RUN_ID_ATTR, SURPLUS_ATTR
from medexp.tracking import clean_tags, mlflow_client

log = logging.getLogger(__name__)


def counted(trials: list, state_names: tuple[str, ...]) -> list:
    """The trials in those states that are real trials (not surplus asks of a racing worker)."""
    return [t for t in trials if t.state.name in state_names and not t.user_attrs.get(SURPLUS_ATTR)]


def reproduce_command(trial) -> str:
    """The single run that repeats a trial: its overrides, less the sweeper's bookkeeping."""
    overrides = [
        o for o in trial.user_attrs.get(OVERRIDES_ATTR, []) if not o.startswith(("optuna.", "hydra."))
    ]
    return " ".join(["python -m medexp.train", *(shlex.quote(o) for o in overrides)])


def feasible(trial) -> bool:
    """Whether a trial met every constraint of its study (always, in a study without constraints)."""
    return all(v <= 0 for v in trial.constraints.values())


def _summary(trial, metrics: list[str]) -> dict[str, Any]:
    return {
        "trial": trial.number,
        **dict(zip(metrics, trial.values, strict=True)),
        "params": dict(trial.params),
        "mlflow_run_id": trial.user_attrs.get(RUN_ID_ATTR),
        "command": reproduce_command(trial),
    }


def best_trial_summary(study, metrics: list[str]) -> dict[str, Any] | None:
    """The best trial (the best feasible one under constraints), or for a multi-objective study its Pareto front
    as {"pareto_front": [...]}; None while no trial qualifies."""
    complete = [t for t in counted(study.trials, ("COMPLETE",)) if feasible(t)]
    if not complete:
        return None
    if len(study.directions) > 1:
        return {"pareto_front": [_summary(t, metrics) for t in study.best_trials]}
    return _summary(study.best_trial, metrics)


def print_best(study, best: dict[str, Any] | None, metrics: list[str], parent) -> None:
    if best is None:
        infeasible = [t for t in counted(study.trials, ("COMPLETE",)) if not feasible(t)]
        print(
            f"medexp: none of the {len(infeasible)} completed trials met the constraints."
            if infeasible
            else "medexp: no trial of this study has completed yet."
        )
        return
    lines = []
    front = best.get("pareto_front", [best])
    if "pareto_front" in best:
        lines.append(f"Pareto front: {len(front)} trials (no other trial is better on every metric)")
    for t in front:
        values = "  ".join(f"{m}={t[m]:.6g}" for m in metrics)
        lines += [
            f"best trial: #{t['trial']}  {values}",
            "  params: " + "  ".join(f"{k}={v}" for k, v in t["params"].items()),
            f"  MLflow run: {t['mlflow_run_id']}" + (f"  (study run {parent.run_id})" if parent else ""),
            f"  reproduce: {t['command']}",
        ]
    print("\n".join(lines))


class StudyRun:
    """The parent MLflow run of a study."""

    def __init__(self, client: Any, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    @classmethod
    def attach(cls, tracking_cfg: DictConfig, study, params: dict[str, str]) -> StudyRun | None:
        """The study's parent run: found in the study's user attributes, or made by the first worker."""
        if not tracking_cfg.enabled:
            return None
        client, experiment_id = mlflow_client(tracking_cfg)
        run_id = study.user_attrs.get(PARENT_RUN_ATTR)
        if run_id is None:
            tags = {"medexp.role": "study", "medexp.optuna_study": study.study_name}
            mine = client.create_run(
                experiment_id, run_name=study.study_name, tags=clean_tags(tags)
            ).info.run_id
            study.set_user_attr(PARENT_RUN_ATTR, mine)
            time.sleep(1)  # two workers starting a new study together: the last writer's run wins for both
            run_id = study.user_attrs.get(PARENT_RUN_ATTR)  # read from the storage on each access
            if run_id != mine:
                client.delete_run(mine)
            else:
                from mlflow.entities import Param

                client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
                log.info("MLflow parent run %s for study %r", run_id, study.study_name)
                return cls(client, run_id)
        client.update_run(run_id, status="RUNNING")
        log.info("attached to MLflow parent run %s of study %r", run_id, study.study_name)
        return cls(client, run_id)

    def trial_done(self, study, trial) -> None:
        """Running counts and best value after each trial; the trial's own run gets its final state."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        trials = study.trials  # one read of the storage for all the counts
        metrics = [
            Metric(f"trials/{name.lower()}", len(counted(trials, (name,))), now, trial.number)
            for name in ("COMPLETE", "PRUNED", "FAIL")
        ]
        complete = counted(trials, ("COMPLETE",))
        if len(study.directions) == 1 and any(feasible(t) for t in complete):
            metrics.append(Metric("best_value", study.best_value, now, trial.number))
        if trial.constraints:
            metrics.append(
                Metric("trials/infeasible", len([t for t in complete if not feasible(t)]), now, trial.number)
            )
        self.client.log_batch(self.run_id, metrics=metrics)
        child = trial.user_attrs.get(RUN_ID_ATTR)
        if child is not None:
            self.client.set_tag(child, "medexp.trial_state", trial.state.name)
            if ERROR_ATTR in trial.user_attrs:
                self.client.set_tag(child, "error", trial.user_attrs[ERROR_ATTR][:5000])
            if trial.constraints:
                self.client.set_tag(child, "medexp.feasible", str(feasible(trial)).lower())

    def finish(self, study, sweep_dir: Path, metrics: list[str], failed: bool = False) -> None:
        """Trials table, best params, Optuna's plots; then the run's final status."""
        out = sweep_dir / "report"
        out.mkdir(parents=True, exist_ok=True)
        table = study.trials_dataframe()
        if any(t.constraints for t in study.trials):  # which trials broke a constraint, in the table itself
            table["feasible"] = [feasible(t) if t.constraints else None for t in study.trials]
        table.to_csv(out / "trials.csv", index=False)
        best = best_trial_summary(study, metrics)
        if best is not None:
            (out / "best_params.yaml").write_text(yaml.safe_dump(best, sort_keys=False))
        for name, path in _plots(study, out, metrics).items():
            if path is not None:
                self.client.log_artifact(self.run_id, str(path), "plots")
            else:
                log.info("plot %s skipped: not enough finished trials yet", name)
        for name in ("trials.csv", "best_params.yaml"):
            if (out / name).exists():
                self.client.log_artifact(self.run_id, str(out / name))
        self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")


def _plots(study, out: Path, metrics: list[str]) -> dict[str, Path | None]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    made: dict[str, Path | None] = {}
    if len(study.directions) > 1:  # one plot per objective would need a target; the front shows them all
        first = {
            "target": lambda t: t.values[0],
            "target_name": metrics[0],
        }  # parallel coordinates: one value
        plots = [
            ("pareto_front", lambda s: ovm.plot_pareto_front(s, target_names=metrics)),
            ("parallel_coordinate", lambda s: ovm.plot_parallel_coordinate(s, **first)),
        ]
    else:
        plots = [
            ("optimization_history", ovm.plot_optimization_history),
            ("param_importances", ovm.plot_param_importances),
            ("intermediate_values", ovm.plot_intermediate_values),
            ("parallel_coordinate", ovm.plot_parallel_coordinate),  # each trial's params against its value
        ]
    for name, plot in plots:
        path = out / f"{name}.png"
        try:
            with warnings.catch_warnings():  # experimental API; importances warn below ~5 trials
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                warnings.simplefilter("ignore", UserWarning)
                ax = plot(study)
            figure = (ax[0] if hasattr(ax, "__len__") else ax).figure
            figure.savefig(path, dpi=100, bbox_inches="tight")
            plt.close(figure)
            made[name] = path
        except (ValueError, RuntimeError, ZeroDivisionError):  # e.g. importances need 2+ complete trials
            made[name] = None
    return made
