"""A tracking store lost mid-run loses nothing (the spool and `python -m medexp.sync`), and runs whose process is
gone stop showing RUNNING. Against a real `mlflow server` on 127.0.0.1 that the tests kill and start again."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from medexp.tracking import spool as spool_module
from medexp.tracking.callback import MetricsCallback
from medexp.tracking.spool import OFFLINE_RUN_PREFIX, Spool, flush
from medexp.train import train
from medexp.training.sync import sync_runs
from tests.helpers import MlflowServer, compose_config


def sync(runs: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "medexp.sync", f"runs={runs}"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the module (starting one takes ~13 s here); each test that kills it starts it again."""
    server = MlflowServer(tmp_path_factory.mktemp("server")).start()
    yield server
    server.kill()


# slow (~45 s with its server): kept out of the default suite's 10-minute budget; pytest -m slow runs it
@pytest.mark.slow
def test_a_run_outlives_its_tracking_server_and_sync_sends_the_rest(tmp_path, server, monkeypatch):
    """The server dies at step 3 of 12: training goes on, the adapter is saved, the summary says what waits; once
    the server is back, `medexp.sync` sends it and the MLflow run holds every step and its final status."""
    log_on = MetricsCallback.on_log

    def kill_at_step_3(self, args, state, control, logs=None, **kwargs):
        if state.global_step >= 3 and server.proc.poll() is None:
            server.kill()
        return log_on(self, args, state, control, logs=logs, **kwargs)

    monkeypatch.setattr(MetricsCallback, "on_log", kill_at_step_3)
    steps = 12
    cfg = compose_config(
        [
            "experiment=smoke",
            "eval=none",
            f"trainer.max_steps={steps}",
            "trainer.eval_steps=6",
            "trainer.logging_steps=1",
            f"tracking.uri={server.url}",
            "tracking.experiment=lost",
            "tracking.system_metrics_interval=null",
        ],
        tmp_path,
    )
    result = train(cfg)  # no exception: the run carried on without its store
    assert (result.adapter_dir / "adapter_model.safetensors").exists()
    spooled = result.output_dir / "tracking_spool"
    records = [json.loads(line) for line in (spooled / "records.jsonl").read_text().splitlines()]
    ops = [r["op"] for r in records]
    assert ops[-1] == "set_terminated" and records[-1]["status"] == "FINISHED"
    assert "log_artifacts" in ops or "log_artifact" in ops  # the adapter, copied into the spool
    run_record = json.loads((result.output_dir / "run.json").read_text())
    assert run_record["finished"] is True

    server.start()  # the same store, back
    client = MlflowClient(server.url)
    assert client.get_run(result.run_id).info.status == "RUNNING"  # the server never heard the end
    done = sync(result.output_dir, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "spooled tracking records" in done.stdout and "FINISHED" in done.stdout
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    losses = client.get_metric_history(result.run_id, "train_loss")
    assert sorted(m.step for m in losses) == list(range(1, steps + 1))  # every step once, before and after
    assert sorted(m.step for m in client.get_metric_history(result.run_id, "eval_loss")) == [6, 12]
    assert list(server.artifacts.rglob("adapter/adapter_model.safetensors"))
    assert not spooled.exists() and (result.output_dir / "tracking_spool.sent").exists()
    (again,) = sync_runs(result.output_dir, mark_stale=True)  # nothing left: a second sync changes nothing
    assert again.what.startswith("up to date") and not again.failed


@pytest.mark.slow  # ~20 s for a server restart; the suite is at its time budget
def test_the_spool_goes_back_online_when_the_server_returns(tmp_path, server, monkeypatch):
    monkeypatch.setattr(spool_module, "RETRY_S", 0.0)
    spool_module.use_short_http_retries()
    client = MlflowClient(server.url)
    run_id = client.create_run(client.create_experiment("blip")).info.run_id
    spool = Spool(tmp_path / "run", server.url)
    metric = {"run": run_id, "op": "log_batch"}
    spool.send(client, metric | {"metrics": [["m", 1.0, 0, 1]]})
    server.kill()
    spool.send(client, metric | {"metrics": [["m", 2.0, 0, 2]]})
    assert spool.offline_since is not None and spool.pending() == 1
    server.start()
    spool.send(
        client, metric | {"metrics": [["m", 3.0, 0, 3]]}
    )  # probes, sends the waiting record, then this
    assert spool.offline_since is None and spool.pending() == 0
    assert [m.value for m in client.get_metric_history(run_id, "m")] == [1.0, 2.0, 3.0]


def test_a_run_created_while_offline_gets_its_real_id_on_sending(tmp_path):
    """A stage that began while the store was away: its records name a placeholder run, which the flush creates,
    and the run.json files that named the placeholder name the real run afterwards."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.create_experiment("offline")
    run_dir = tmp_path / "run"
    spool = Spool(run_dir, uri)
    placeholder = spool._keep(
        {
            "run": "",
            "op": "create_run",
            "experiment_id": experiment,
            "start_time": 0,
            "tags": {"t": "1"},
            "name": "s1",
        }
    )
    assert placeholder.startswith(OFFLINE_RUN_PREFIX)
    (run_dir / "stages" / "s1").mkdir(parents=True)
    (run_dir / "stages" / "s1" / "run.json").write_text(json.dumps({"run_id": placeholder}))
    (run_dir / "note.txt").write_text("kept")
    spool._keep(
        {"run": placeholder, "op": "log_artifact", "path": str(run_dir / "note.txt"), "artifact_path": None}
    )
    spool._keep({"run": placeholder, "op": "set_terminated", "status": "FINISHED", "end_time": 5})
    ids = flush(spool.dir, client)
    (run,) = client.search_runs([experiment])
    assert ids == {placeholder: run.info.run_id}
    assert run.info.status == "FINISHED" and run.info.run_name == "s1" and run.data.tags["t"] == "1"
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["note.txt"]
    assert json.loads((run_dir / "stages" / "s1" / "run.json").read_text())["run_id"] == run.info.run_id


def test_sync_marks_runs_whose_process_is_gone_and_leaves_live_ones(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.create_experiment("housekeeping")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "medexp.train"])
    host = socket.gethostname()
    runs = {}
    try:
        for name, pid in (("killed", int(dead.stdout)), ("live", live.pid), ("elsewhere", os.getpid())):
            run_id = client.create_run(experiment).info.run_id  # RUNNING, as a kill -9 leaves it
            run_dir = tmp_path / "outputs" / name
            run_dir.mkdir(parents=True)
            where = host if name != "elsewhere" else "another-machine"
            record = {"run_id": run_id, "tracking_uri": uri, "pid": pid, "host": where}
            (run_dir / "run.json").write_text(json.dumps(record))
            runs[name] = run_id
        started = time.monotonic()
        done = sync(tmp_path / "outputs", tmp_path)
        assert done.returncode == 0, done.stderr
        assert time.monotonic() - started < 60
    finally:
        live.kill()
    status = {name: client.get_run(run_id).info.status for name, run_id in runs.items()}
    assert status == {"killed": "KILLED", "live": "RUNNING", "elsewhere": "RUNNING"}
    assert "gone" in client.get_run(runs["killed"]).data.tags["medexp.ended"]
    lines = {line.split(":")[0].rsplit("/", 1)[-1]: line for line in done.stdout.splitlines()}
    assert "marked KILLED" in lines["killed"] and "resume=" in lines["killed"]
    assert "still running" in lines["live"] and "another-machine" in lines["elsewhere"]
    assert not (tmp_path / ".hydra").exists() and not (tmp_path / "outputs" / "sync").exists()


def test_sync_says_when_the_store_is_still_away(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    record = {"run_id": "abc", "tracking_uri": "http://127.0.0.1:9", "pid": 1, "host": "another-machine"}
    (run_dir / "run.json").write_text(json.dumps(record))
    Spool(run_dir, record["tracking_uri"])._keep(
        {"run": "abc", "op": "log_batch", "metrics": [["m", 1.0, 0, 1]]}
    )
    done = sync(run_dir, tmp_path)
    assert done.returncode == 1
    assert "does not answer" in done.stdout and "nothing was lost" in done.stderr
    assert "Traceback" not in done.stderr
    assert Spool(run_dir, record["tracking_uri"]).pending() == 1
