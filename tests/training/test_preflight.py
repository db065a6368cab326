"""Before any data is read or model loaded, `medexp.train` checks the tracking store, the output folder and the
base model, and refuses in seconds with one paragraph."""

from __future__ import annotations

import socket
import time

import pytest

from medexp.config import UserError
from medexp.train import train
from tests.helpers import compose_config, run_cli


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _refusal(tmp_path, *overrides: str) -> str:
    start = time.monotonic()
    with pytest.raises(UserError) as err:
        train(compose_config(["experiment=smoke", *overrides], tmp_path))
    assert time.monotonic() - start < 15  # seconds, not MLflow's minutes of HTTP retries
    return str(err.value)


def test_a_tracking_server_that_is_not_listening(tmp_path):
    port = _free_port()
    message = _refusal(tmp_path, f"tracking.uri=http://127.0.0.1:{port}")
    assert f"tracking.uri=http://127.0.0.1:{port}: no MLflow server answers there within 5 s" in message
    assert "mlflow server --host" in message


def test_a_sqlite_store_whose_folder_cannot_be_created(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    message = _refusal(tmp_path, f"tracking.uri=sqlite:///{tmp_path}/a_file/mlruns/mlflow.db")
    assert "the folder" in message and "cannot be created" in message and "tracking=none" in message


@pytest.mark.parametrize("uri", ["file:///tmp/mlruns", "mlruns"])
def test_a_file_store_is_refused_with_the_sqlite_form_named(tmp_path, uri):
    message = _refusal(tmp_path, f"tracking.uri={uri}")
    assert "is a file store, which MLflow 3 no longer writes" in message and "sqlite:///" in message


def test_an_output_folder_that_cannot_be_written(tmp_path):
    from medexp.training.preflight import check_writable

    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(UserError, match=r"paths.output_dir=\S+/a_file/run: cannot write there"):
        check_writable(tmp_path / "a_file" / "run", "paths.output_dir")
    check_writable(tmp_path / "fine" / "run", "paths.output_dir")  # created, written, left empty
    assert list((tmp_path / "fine" / "run").iterdir()) == []


def test_an_uncached_hub_model_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = _refusal(tmp_path, "model.name_or_path=medexp-tests/no-such-model", "tracking=none")
    assert "'medexp-tests/no-such-model' is not in the Hugging Face cache" in message
    assert "HF_HUB_OFFLINE=1" in message


def test_cli_refuses_an_absent_server_in_seconds_without_a_traceback(tmp_path):
    start = time.monotonic()
    proc = run_cli(
        ["experiment=smoke", f"tracking.uri=http://127.0.0.1:{_free_port()}"], tmp_path, timeout=60
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no MLflow server answers there" in proc.stderr
    assert time.monotonic() - start < 30  # a fresh interpreter included
