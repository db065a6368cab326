"""The MLflow run lifecycle on a real SQLite store, and remote tracking through a real `mlflow server`."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from medexp.tracking import flatten, start_run
from medexp.train import train
from tests.helpers import MlflowServer, compose_config


def tracking_cfg(tmp_path: Path, **extra):
    return OmegaConf.create(
        {
            "enabled": True,
            "uri": f"sqlite:///{tmp_path}/mlruns/mlflow.db",
            "artifact_location": str(tmp_path / "mlruns" / "artifacts"),
            "experiment": "lifecycle",
            "run_name": None,
            "system_metrics_interval": None,
            **extra,
        }
    )


def only_run(uri: str, experiment: str):
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return run


def test_flatten_resolves_and_dots_keys():
    cfg = OmegaConf.create({"a": {"b": 1, "c": [1, 2]}, "d": "${a.b}", "e": None})
    assert flatten(cfg) == {"a.b": "1", "a.c": "[1, 2]", "d": "1", "e": "None"}


def test_run_finishes(tmp_path):
    cfg = tracking_cfg(tmp_path)
    with start_run(cfg, {"medexp.base_model": "x", "skipped": None}) as tracker:
        tracker.log_metrics({"train_loss": 1.5}, step=3)
    run = only_run(cfg.uri, "lifecycle")
    assert run.info.status == "FINISHED"
    assert run.data.tags["medexp.base_model"] == "x" and "skipped" not in run.data.tags
    assert run.data.metrics == {"train_loss": 1.5}
    assert run.info.artifact_uri.startswith((tmp_path / "mlruns" / "artifacts").as_uri())


def test_exception_marks_failed_with_error_tag(tmp_path):
    cfg = tracking_cfg(tmp_path)
    with pytest.raises(RuntimeError), start_run(cfg, {}):
        raise RuntimeError("loss is NaN at step 12")
    run = only_run(cfg.uri, "lifecycle")
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == "RuntimeError: loss is NaN at step 12"


def test_ctrl_c_marks_killed(tmp_path):
    cfg = tracking_cfg(tmp_path)
    with pytest.raises(KeyboardInterrupt), start_run(cfg, {}):
        raise KeyboardInterrupt
    assert only_run(cfg.uri, "lifecycle").info.status == "KILLED"


def test_tracking_none_logs_nothing(tmp_path):
    with start_run(OmegaConf.create({"enabled": False}), {"a": "b"}) as tracker:
        tracker.log_metrics({"x": 1.0})
        assert tracker.run_id is None
    assert not (tmp_path / "mlruns").exists()


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on 127.0.0.1 with its own SQLite store and proxied artifact storage."""
    server = MlflowServer(tmp_path / "server").start()
    yield server.url, server.artifacts
    server.kill()


@pytest.mark.slow  # ~50 s; tests/tracking/test_sync.py trains against a real server (and kills it) in the default suite
def test_smoke_run_against_a_tracking_server(tmp_path, mlflow_server):
    url, artifacts = mlflow_server
    cfg = compose_config(
        [
            "experiment=smoke",
            "eval=none",
            "trainer.max_steps=10",
            "trainer.eval_steps=5",
            f"tracking.uri={url}",
            "tracking.experiment=remote",
        ],
        tmp_path,
    )
    result = train(cfg)
    run = only_run(url, "remote")
    assert run.info.status == "FINISHED" and run.info.run_id == result.run_id
    assert run.data.params["lora.r"] == "8"
    assert "eval_loss" in run.data.metrics
    # artifacts went through the server into its own store, not into a local mlruns/
    assert list(artifacts.rglob("adapter/adapter_model.safetensors"))
    assert list(artifacts.rglob("config.yaml"))
    assert not (tmp_path / "mlruns").exists()


def test_a_sqlite_store_whose_folder_cannot_be_made_is_refused_before_anything_runs(tmp_path):
    """Permission bits say yes for root (and for /proc); the preflight tries, and leaves nothing behind."""
    from medexp.config import UserError
    from medexp.tracking.preflight import check_store

    with pytest.raises(
        UserError, match=r"tracking.uri=sqlite:////proc/nope/x.db: nothing can be created in /proc"
    ):
        check_store(tracking_cfg(tmp_path, uri="sqlite:////proc/nope/x.db"))
    check_store(tracking_cfg(tmp_path, uri=f"sqlite:///{tmp_path}/a/b/mlflow.db"))  # creatable: fine
    assert list(tmp_path.iterdir()) == []  # checked, not created
