"""Check, in seconds and before anything heavy loads, that the tracking store a command will log to can be used.

- `sqlite:///path`: the database's folder exists or can be created, and is writable (a folder is made in the
  nearest existing one and removed again: permission bits do not tell for root, /proc or a read-only mount);
- `http(s)://host:port`: a server answers `GET /health` within `SERVER_TIMEOUT_S`, instead of the
  minutes MLflow's own HTTP retries take against a server that is not there;
- a file store (`file:...` or a bare path): refused, MLflow 3 no longer writes one; the SQLite form is named;
- anything else (databricks, postgresql://, ...): left to MLflow.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from omegaconf import DictConfig

from medexp.config import UserError
from medexp.tracking.dblock import sqlite_path

SERVER_TIMEOUT_S = 5.0  # a healthy server on a LAN answers /health in milliseconds; 5 s allows a busy one


def check_store(tracking_cfg: DictConfig) -> None:
    """UserError (one paragraph) when `tracking.uri` cannot be logged to; nothing when tracking is off."""
    if not tracking_cfg.enabled:
        return
    uri = str(tracking_cfg.uri)
    if sqlite_path(uri) is not None:
        _check_sqlite(uri)
    elif uri.startswith(("http://", "https://")):
        _check_server(uri)
    elif uri.startswith("file:") or "://" not in uri:
        raise UserError(
            f"tracking.uri={uri} is a file store, which MLflow 3 no longer writes. Use a SQLite database in that "
            f"folder instead: tracking.uri=sqlite:///{_path_of(uri)}/mlflow.db (or tracking=none to log nothing)."
        )


def _path_of(uri: str) -> str:
    return uri.removeprefix("file://").removeprefix("file:").rstrip("/") or "mlruns"


def _check_sqlite(uri: str) -> None:
    path = sqlite_path(uri)
    if str(path) in ("", ":memory:"):
        return
    folder = path.parent
    existing = folder
    while (
        not existing.exists() and existing != existing.parent
    ):  # checked, not created: nothing is left behind
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(
            f"tracking.uri={uri}: the folder {folder} for the MLflow database cannot be created ({existing} is a "
            "file). Point tracking.uri at a writable place, e.g. tracking.uri=sqlite:///mlruns/mlflow.db, or use "
            "tracking=none."
        )
    if not os.access(existing, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(
            f"tracking.uri={uri}: {path if path.exists() else existing} is not writable by this user, so no run "
            "could be recorded. Point tracking.uri at a writable place (e.g. tracking.uri=sqlite:///mlruns/mlflow.db) "
            "or fix the permissions."
        )
    reason = _cannot_create_in(existing)  # what permissions do not show: root, /proc, a read-only mount
    if reason is not None:
        raise UserError(
            f"tracking.uri={uri}: nothing can be created in {existing} ({reason}), so the MLflow database "
            f"{path} cannot be made there. Point tracking.uri at a writable place, e.g. "
            "tracking.uri=sqlite:///mlruns/mlflow.db, or use tracking=none."
        )


def _cannot_create_in(folder: Path) -> str | None:
    """Why a folder cannot be made inside `folder` (tried, and removed again at once), or None when it can."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".medexp_store_check_", dir=folder))
    except OSError as err:
        return err.strerror or str(err)
    return None


def server_health(uri: str, timeout: float) -> int | str:
    """The HTTP status the server at `uri` answers `GET /health` with, or why nothing answered in `timeout` s."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        return str(getattr(err, "reason", err))


def _check_server(uri: str) -> None:
    reason = server_health(uri, SERVER_TIMEOUT_S)
    # any HTTP answer will do (a proxy asking for credentials, say): MLflow's own errors say the rest
    if isinstance(reason, str):
        raise UserError(
            f"tracking.uri={uri}: no MLflow server answers there within {SERVER_TIMEOUT_S:.0f} s ({reason}). Start "
            "it (mlflow server --host 127.0.0.1 --port 5000 --backend-store-uri sqlite:///mlruns/mlflow.db), fix "
            "the address, or log locally with tracking.uri=sqlite:///mlruns/mlflow.db."
        )
