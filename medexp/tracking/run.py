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


def run_tags(
    cfg: DictConfig, stages: list, fingerprints: list[str], overrides: list[str]
) -> dict[str, str | None]:
    """A training run's tags: code version, base model, data (by stage) and its fingerprint, overrides, directory."""
    import hashlib

    commit = git_commit()
    # the data fingerprint of a run: its one stage's, or a digest of the stages' in order
    if len(fingerprints) == 1:
        fingerprint = fingerprints[0]
    else:
        fingerprint = hashlib.sha256(" ".join(fingerprints).encode()).hexdigest()[:16]
    tags = {
        "mlflow.source.git.commit": commit,
        "medexp.git_commit": commit,
        "medexp.base_model": str(cfg.model.name_or_path),
        "medexp.dataset": " -> ".join(str(s.dataset.path or s.dataset.name) for _, s in stages),
        "medexp.dataset_fingerprint": fingerprint,
        "medexp.overrides": " ".join(overrides) or None,
        "medexp.output_dir": str(Path(cfg.paths.output_dir).resolve()),
    }
    if len(stages) > 1:
        tags["medexp.stages"] = " -> ".join(name for name, _ in stages)
    return tags


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
    """Logs to one MLflow run. With a `spool`, a store that stops answering mid-run does not stop the run: what
    could not be sent is kept in the run directory (medexp/tracking/spool.py) and sent when the store is back."""

    def __init__(
        self,
        client: Any,
        run_id: str,
        logged: dict[str, int] | None = None,
        spool: Any = None,
        experiment_id: str | None = None,
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.spool = spool
        self.experiment_id = experiment_id
        # A resumed run: the last step of each metric its first attempt logged. The steps it trains again from its
        # checkpoint up to there are not logged twice; the first attempt's values stand.
        self.logged = logged or {}

    def send(self, op: str, **fields: Any) -> str | None:
        """One call to the store (see spool.apply), through the spool when there is one."""
        from medexp.tracking.spool import send

        return send(self.client, self.spool, {"run": self.run_id, "op": op, **fields})

    def log_params(self, params: dict[str, str]) -> None:
        self.send("log_batch", params=params)

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        batch = [[k, float(v), now, step] for k, v in metrics.items() if step > self.logged.get(k, -1)]
        if batch:
            self.send("log_batch", metrics=batch)

    def set_tags(self, tags: dict[str, str]) -> None:
        self.send("log_batch", tags=clean_tags(tags))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.send("log_artifact", path=str(path), artifact_path=artifact_path)

    def log_artifacts(self, path: str | Path, artifact_path: str) -> None:
        self.send("log_artifacts", path=str(path), artifact_path=artifact_path)

    def log_table(self, frame: Any, artifact_file: str) -> None:
        """A table readable in the MLflow UI's artifact view (and by mlflow.load_table)."""
        self.send("log_table", frame=frame, artifact_file=artifact_file)

    def log_inputs(self, datasets: list[tuple[Any, str]]) -> None:
        """Log (mlflow.data dataset, context) pairs as the run's dataset inputs, as mlflow.log_input does."""
        entities = [(ds._to_mlflow_entity(), context) for ds, context in datasets]
        fields = ("name", "digest", "source_type", "source", "schema", "profile")
        rows = [{f: getattr(e, f) for f in fields} | {"context": context} for e, context in entities]
        if rows:
            self.send("log_inputs", datasets=rows)

    def end(self, status: str, error: str | None = None) -> None:
        """The run's final status (FINISHED, FAILED with the error as a tag, KILLED)."""
        if error is not None:
            self.set_tags({"error": error})
        self.send("set_terminated", status=status, end_time=int(time.time() * 1000))


def _reopen(client: Any, run_id: str, uri: str) -> dict[str, int]:
    """Mark a run RUNNING again; return the last step each of its metrics reached."""
    from mlflow.exceptions import MlflowException

    from medexp.config import UserError

    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        raise UserError(
            f"The run to resume names MLflow run {run_id}, which the tracking store {uri} does not have "
            f"({err.message.splitlines()[0]}). Resume with the store it was tracked in (tracking.uri=...)."
        ) from None
    logged = {key: max(m.step for m in client.get_metric_history(run_id, key)) for key in run.data.metrics}
    client.update_run(run_id, status="RUNNING")
    client.set_tag(run_id, "medexp.resumed", str(int(run.data.tags.get("medexp.resumed", "0")) + 1))
    return logged


def clean_tags(tags: dict[str, str | None]) -> dict[str, str]:
    return {k: str(v)[:MAX_TAG_LENGTH] for k, v in tags.items() if v is not None}


@contextmanager
def start_run(
    tracking_cfg: DictConfig,
    tags: dict[str, str | None],
    run_name: str | None = None,
    parent: Tracker | None = None,
    resume: str | None = None,
    spool_dir: Path | None = None,
) -> Iterator[Tracker]:
    """Open an MLflow run (or a no-op tracker with tracking=none) and always close it with a final status.

    The run is named `tracking.run_name` when set, else `run_name`, else by MLflow. With `parent`, it is a
    child run of that one (named `run_name`), as a training stage is, and shares its client and spool. With
    `resume` (a run id), that existing run is reopened instead: RUNNING again, its metrics continued without
    repeating a logged step. With `spool_dir` (the run's directory), a store lost mid-run does not stop the run:
    see medexp/tracking/spool.py."""
    from medexp.config.runtime import is_main_process
    from medexp.tracking.spool import OFFLINE_RUN_PREFIX, Spool, flush, send, use_short_http_retries

    if (
        not tracking_cfg.enabled or not is_main_process()
    ):  # torchrun / accelerate: rank 0 alone talks to MLflow
        yield Tracker()
        return

    if isinstance(parent, MlflowTracker):
        client, experiment_id, spool = parent.client, parent.experiment_id, parent.spool
    else:
        spool = None
        if spool_dir is not None:
            use_short_http_retries()
            spool = Spool(spool_dir, str(tracking_cfg.uri))
        client, experiment_id = mlflow_client(tracking_cfg)
    if resume is not None:
        if spool is not None and spool.pending() and parent is None:
            spool.ids |= flush(
                spool.dir, client
            )  # the first attempt's spooled records go before the second's
        run_id, logged = resume, _reopen(client, resume, str(tracking_cfg.uri))
    else:
        if parent is not None:
            tags = {**tags, "mlflow.parentRunId": parent.run_id}
        else:
            run_name = tracking_cfg.run_name or run_name
        record = {
            "run": "",
            "op": "create_run",
            "experiment_id": experiment_id,
            "start_time": int(time.time() * 1000),
            "tags": clean_tags(tags),
            "name": run_name,
        }
        run_id, logged = str(send(client, spool, record)), {}
    log.info("MLflow run %s (experiment %r) at %s", run_id, tracking_cfg.experiment, tracking_cfg.uri)
    monitor = None
    if parent is None and not run_id.startswith(OFFLINE_RUN_PREFIX):
        monitor = _system_metrics(tracking_cfg, run_id, resume is not None)
    tracker = MlflowTracker(client, run_id, logged, spool, experiment_id)
    try:
        yield tracker
    except KeyboardInterrupt:
        tracker.end("KILLED")
        raise
    except BaseException as err:
        tracker.end("FAILED", error=f"{type(err).__name__}: {err}")
        raise
    finally:
        if monitor is not None:
            monitor.finish()
    tracker.end("FINISHED")
    if spool is not None and parent is None:
        spool.finish(client)  # the store may be back: one last try before the summary says what waits


def _system_metrics(tracking_cfg: DictConfig, run_id: str, resumed: bool) -> Any:
    """MLflow's system-metrics monitor (a thread logging system/* every interval), started; None when off or
    when psutil, which it needs, is not installed (GPU figures need nvidia-ml-py as well)."""
    interval = tracking_cfg.system_metrics_interval
    if not interval:
        return None
    try:
        import psutil  # noqa: F401
    except ImportError:
        log.info("system metrics off: MLflow's monitor needs psutil (pip install psutil)")
        return None
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    from medexp.console import quiet_logger

    quiet_logger("mlflow.system_metrics")  # "Started monitoring system metrics" at INFO, twice per run
    monitor = SystemMetricsMonitor(
        run_id, sampling_interval=float(interval), resume_logging=resumed, tracking_uri=str(tracking_cfg.uri)
    )
    monitor.start()
    return monitor
