"""MLflow tracking: the run lifecycle (`start_run`, `Tracker`), one client helper (`mlflow_client`), the
Trainer callback (`medexp.tracking.callback`, imported where training needs it: it pulls in transformers)."""

from medexp.tracking.client import absolute_uri, mlflow_client
from medexp.tracking.run import MlflowTracker, Tracker, clean_tags, flatten, git_commit, run_tags, start_run

__all__ = [
    "MlflowTracker",
    "Tracker",
    "absolute_uri",
    "clean_tags",
    "flatten",
    "git_commit",
    "mlflow_client",
    "run_tags",
    "start_run",
]
