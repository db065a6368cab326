"""The one place an MLflow client is built: `client_for(uri)` for an existing store, `mlflow_client(cfg)` for
the `tracking` group (store created on first use, experiment looked up or created)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from medexp.tracking.dblock import setup_lock


def absolute_uri(uri: str) -> str:
    """A sqlite:/// URI with a relative path made absolute (so it means the same from any directory)."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix) :].startswith("/"):
        return prefix + str(Path(uri[len(prefix) :]).resolve())
    return uri


def client_for(uri: str) -> Any:
    """An MlflowClient for tracking and the model registry at `uri` (the same store for both)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


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
    from medexp.console import quiet_logger

    # MLflow announces creating and migrating a new SQLite store at INFO: nothing for the user to do.
    quiet_logger("mlflow.store.db.utils")
    quiet_logger("alembic.runtime.migration")
    uri = str(tracking_cfg.uri)
    # Parallel workers: one creates (and migrates) the SQLite store and the experiment, the rest find them.
    with setup_lock(uri):
        client = client_for(uri)
        return client, _experiment_id(client, tracking_cfg, uri)
