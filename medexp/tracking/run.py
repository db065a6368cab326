"""MLflow run lifecycle and the Trainer callback that streams metrics into the run.

A run is opened with `start_run(...)`, which always closes it: FINISHED on success, FAILED (with the error
as the `error` tag) on an exception, KILLED on Ctrl-C. Everything goes through an explicit `MlflowClient`
and run id, never MLflow's global active run, so runs of a sweep cannot leak into each other.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from medexp.config import leaves
from medexp.tracking.client import mlflow_client

log = logging.getLogger(__name__)

MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
MAX_TAG_LENGTH = 5000


def flatten(cfg: DictConfig) -> dict[str, str]:
    """The resolved config as dotted keys (`lora.r`, `trainer.learning_rate`, ...) -> string values."""
    return {key: str(value)[:MAX_PARAM_LENGTH] for key, value in leaves(cfg, resolve=True)}


def git_commit(cwd: str | Path = ".") -> str | None:
    """HEAD of the git repository the run was launched from, or None outside a repository."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


class Tracker:
    """What a run logs to. This base class logs nothing: it is the `tracking=none` tracker."""

    run_id: str | None = None

    def log_params(self, params: dict[str, str]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...
    def log_artifacts(self, path: str | Path, artifact_path: str) -> None: ...
    def log_inputs(self, datasets: list[tuple[Any, str]]) -> None: ...
    def log_table(self, frame: Any, artifact_file: str) -> None: ...


class MlflowTracker(Tracker):
    def __init__(self, client: Any, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in params.items()])

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        batch = [RunTag(k, v) for k, v in clean_tags(tags).items()]
        self.client.log_batch(self.run_id, tags=batch)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, path: str | Path, artifact_path: str) -> None:
        self.client.log_artifacts(self.run_id, str(path), artifact_path)

    def log_table(self, frame: Any, artifact_file: str) -> None:
        """A table readable in the MLflow UI's artifact view (and by mlflow.load_table)."""
        self.client.log_table(self.run_id, data=frame, artifact_file=artifact_file)

    def log_inputs(self, datasets: list[tuple[Any, str]]) -> None:
        """Log (mlflow.data dataset, context) pairs as the run's dataset inputs, as mlflow.log_input does."""
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        inputs = [
            DatasetInput(ds._to_mlflow_entity(), [InputTag(MLFLOW_DATASET_CONTEXT, context)])
            for ds, context in datasets
        ]
        if inputs:
            self.client.log_inputs(self.run_id, datasets=inputs)


def clean_tags(tags: dict[str, str | None]) -> dict[str, str]:
    return {k: str(v)[:MAX_TAG_LENGTH] for k, v in tags.items() if v is not None}


@contextmanager
def start_run(
    tracking_cfg: DictConfig,
    tags: dict[str, str | None],
    run_name: str | None = None,
    parent: Tracker | None = None,
) -> Iterator[Tracker]:
    """Open an MLflow run (or a no-op tracker with tracking=none) and always close it with a final status.

    The run is named `tracking.run_name` when set, else `run_name`, else by MLflow. With `parent`, it is a
    child run of that one (named `run_name`), as a training stage is."""
    if not tracking_cfg.enabled:
        yield Tracker()
        return

    client, experiment_id = mlflow_client(tracking_cfg)
    if parent is not None:
        tags = {**tags, "mlflow.parentRunId": parent.run_id}
    else:
        run_name = tracking_cfg.run_name or run_name
    run = client.create_run(experiment_id, run_name=run_name, tags=clean_tags(tags))
    run_id = run.info.run_id
    log.info("MLflow run %s (experiment %r) at %s", run_id, tracking_cfg.experiment, tracking_cfg.uri)
    try:
        yield MlflowTracker(client, run_id)
    except KeyboardInterrupt:
        client.set_terminated(run_id, "KILLED")
        raise
    except BaseException as err:
        client.set_tag(run_id, "error", f"{type(err).__name__}: {err}"[:MAX_TAG_LENGTH])
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
