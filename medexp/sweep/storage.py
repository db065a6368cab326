"""The study's database: opening it from the sweeper or a trial (SQLite waits for the locks parallel workers
hold; the sweeper's heartbeats queue again a trial whose worker died) and showing its URL without a password."""

from __future__ import annotations

import re
import warnings
from typing import Any

from medexp.config import UserError
from medexp.tracking.dblock import setup_lock

RETRIED_ATTR = "failed_trial"  # trial system attr (Optuna's retry callback): the trial it continues
# a trial whose worker died this many times (an OOM-kill loop, a bad node) is not retried again
MAX_RETRIES = 3


def mask_password(url: str) -> str:
    """`postgresql://user:secret@host/db` -> `postgresql://user:***@host/db`."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def retry_interrupted() -> Any:
    """Optuna's callback that queues a trial whose worker died again, with its params, user attributes (its
    MLflow run) and reported eval_losses; the sweeper runs the copy as `resume=` of the dead trial's run."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback(
            max_retry=MAX_RETRIES, inherit_intermediate_values=True
        )


def open_storage(url: str, heartbeat: bool = False) -> Any:
    """An Optuna RDB storage; SQLite waits for locks held by parallel workers instead of failing."""
    import optuna

    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    # A running trial whose sweeper stopped sending heartbeats for 10 minutes is marked as interrupted and queued
    # again to continue from its checkpoint.
    beat = (
        {"heartbeat_interval": 30, "grace_period": 600, "heartbeat_stale_trial_callback": retry_interrupted()}
        if heartbeat
        else {}
    )
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

    try:
        with warnings.catch_warnings(), setup_lock(url):  # workers started together: one creates the tables
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **beat)
    except (ArgumentError, NoSuchModuleError, OperationalError, ImportError) as err:
        first = str(err).splitlines()[0]
        raise UserError(
            f"hydra.sweeper.storage={mask_password(url)}: the study's database cannot be opened ({first}). Give a "
            "database URL Optuna can use, e.g. sqlite:///multirun/optuna.db or postgresql://user:pass@host/db "
            "(with psycopg2 installed), or null for a SQLite file in the sweep folder."
        ) from None
