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

from omegaconf import DictConfig, OmegaConf
from transformers import TrainerCallback

from medexp.dblock import setup_lock

log = logging.getLogger(__name__)

MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
MAX_TAG_LENGTH = 5000


def flatten(cfg: DictConfig) -> dict[str, str]:
    """The resolved config as dotted keys (`lora.r`, `trainer.learning_rate`, ...) -> string values."""
    out: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            out[prefix[:-1]] = str(node)[:MAX_PARAM_LENGTH]

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


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


def _is_local_store(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def _experiment_id(client: Any, tracking_cfg: DictConfig, uri: str) -> str:
    experiment = client.get_experiment_by_name(str(tracking_cfg.experiment))
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if tracking_cfg.artifact_location and _is_local_store(uri):
        location = Path(str(tracking_cfg.artifact_location)).resolve().as_uri()
    return client.create_experiment(str(tracking_cfg.experiment), artifact_location=location)


def mlflow_client(tracking_cfg: DictConfig) -> tuple[Any, str]:
    """A client for `tracking.uri` (its SQLite folder created) and the id of `tracking.experiment`."""
    from mlflow.tracking import MlflowClient

    uri = str(tracking_cfg.uri)
    # Parallel workers: one creates (and migrates) the SQLite store and the experiment, the rest find them.
    with setup_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        return client, _experiment_id(client, tracking_cfg, uri)


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


class MetricsCallback(TrainerCallback):
    """Streams the Trainer's logs into a Tracker under stable names.

    `loss` becomes `train_loss`; `learning_rate`, `grad_norm` and every `eval_*` keep their names; between two
    training logs, `throughput_tokens_per_s` is the non-padding tokens seen divided by the wall time. The
    end-of-training summary is logged with a `train/` prefix (`train/runtime`, `train/mean_loss`, ...).
    """

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self._last: tuple[float, int] | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._last = (time.perf_counter(), state.num_input_tokens_seen)

    def on_log(self, args, state, control, logs=None, **kwargs):
        numeric = {
            k: v for k, v in (logs or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        if "train_loss" in numeric:  # the summary logged once at the end of train()
            metrics = {
                "train/mean_loss" if k == "train_loss" else "train/" + k.removeprefix("train_"): v
                for k, v in numeric.items()
            }
        elif "loss" in numeric:  # a training step; train_* keys there are cumulative speed figures, left out
            metrics = {
                "train_loss" if k == "loss" else k: v
                for k, v in numeric.items()
                if not k.startswith("train_")
            }
            now, tokens = time.perf_counter(), state.num_input_tokens_seen
            if self._last is not None and now > self._last[0] and tokens > self._last[1]:
                metrics["throughput_tokens_per_s"] = (tokens - self._last[1]) / (now - self._last[0])
            self._last = (now, tokens)
        else:  # an evaluation: eval_loss and TRL's eval_* extras
            metrics = numeric
        if metrics:
            self.tracker.log_metrics(metrics, state.global_step)
