"""Serialize the set-up of a local SQLite database across processes (parallel sweep workers).

MLflow and Optuna both create and migrate their schema on first use; two processes doing that at once on
one SQLite file collide or leave it half-migrated. A lock file beside the database makes one go first.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def sqlite_path(uri: str) -> Path | None:
    """The file behind a `sqlite:///...` URI, or None for any other database."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


@contextmanager
def setup_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock on `<db>.lock` while a SQLite database is opened; a no-op for servers."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
