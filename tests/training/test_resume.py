"""`resume=`: a smoke run killed with SIGKILL after its first checkpoint continues to the same result, in the same
MLflow run; finished runs, foreign directories and half-written checkpoints are handled plainly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medexp.config import UserError
from medexp.training.resume import check_checkpoint, find_run, last_checkpoint
from tests.helpers import compose_config, run_cli


def _checkpoint(root: Path, step: int, complete: bool = True) -> Path:
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "adapter_model.safetensors").write_bytes(b"weights")
    if complete:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return path


def test_last_checkpoint_is_the_newest_complete_one(tmp_path):
    assert last_checkpoint(tmp_path / "none") is None
    _checkpoint(tmp_path, 10)
    twenty = _checkpoint(tmp_path, 20)
    _checkpoint(tmp_path, 30, complete=False)  # killed while saving: no trainer_state.json yet
    torn = _checkpoint(tmp_path, 40, complete=False)
    (torn / "trainer_state.json").write_text('{"global_st')  # killed while writing the state itself
    assert last_checkpoint(tmp_path) == twenty


def test_a_checkpoint_of_another_model_or_lora_shape_is_refused(tmp_path, make_cfg):
    cfg = make_cfg("experiment=smoke")
    ckpt = _checkpoint(tmp_path, 10)
    adapter = {"base_model_name_or_path": str(cfg.model.name_or_path), "r": 8, "lora_alpha": cfg.lora.alpha}
    (ckpt / "adapter_config.json").write_text(json.dumps(adapter))
    check_checkpoint(ckpt, cfg)  # its own: accepted
    (ckpt / "adapter_config.json").write_text(
        json.dumps({**adapter, "r": 16, "base_model_name_or_path": "x/y"})
    )
    with pytest.raises(UserError, match=r"r 16 \(the run's config says 8\).*base_model_name_or_path|x/y"):
        check_checkpoint(ckpt, cfg)


@pytest.mark.parametrize(
    ("address", "overrides", "message"),
    [
        ("/no/such/run", [], "neither an existing directory nor an MLflow run id"),
        ("{tmp}", [], "is not a medexp training run's output directory"),
        ("{tmp}", ["resume={tmp}", "lora.r=16"], "lora.r=16 would not apply"),
        ("0123456789abcdef0123456789abcdef", [], "0123456789abcdef0123456789abcdef"),
    ],
)
def test_resume_of_something_that_is_not_a_run_is_refused(tmp_path, address, overrides, message):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    fill = {"tmp": str(tmp_path)}
    with pytest.raises(UserError, match=message.format(**fill)):
        find_run(address.format(**fill), uri, [o.format(**fill) for o in overrides])


def test_cli_resume_of_a_missing_run_exits_2_without_traceback(tmp_path):
    proc = run_cli(["resume=/no/such/run"], tmp_path, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "resume='/no/such/run'" in proc.stderr


def _mlflow_runs(cwd: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{cwd}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("medexp-smoke")
    return client, client.search_runs([experiment.experiment_id])


@pytest.mark.slow  # ~75 s: a CLI run killed, then resumed; test_stages resumes a staged run in the default suite
def test_kill_9_after_the_first_checkpoint_then_resume(tmp_path, cli_smoke):
    """The README's smoke run, killed with SIGKILL once checkpoint-10 is on disk, resumed by its directory: it ends
    at step 40 in the same MLflow run (FINISHED, no step logged twice) with the uninterrupted run's eval_loss."""
    code = "import runpy, sys\nsys.argv = ['medexp.train', 'experiment=smoke']\n"
    code += "runpy.run_module('medexp.train', run_name='__main__', alter_sys=True)"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 240
    while not list(tmp_path.glob("outputs/*/*/checkpoints/checkpoint-10/trainer_state.json")):
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 240 s"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    (run_dir,) = [p.parent for p in tmp_path.glob("outputs/*/*/run.json")]
    assert not (run_dir / "adapter").exists()
    assert not json.loads((run_dir / "run.json").read_text()).get("finished")
    client, (killed,) = _mlflow_runs(tmp_path)
    assert killed.info.status == "RUNNING"  # kill -9: nobody could close it

    resumed = run_cli([f"resume={run_dir}"], tmp_path, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    output = resumed.stdout + resumed.stderr
    assert "resuming training from" in output and "checkpoint-10" in output

    _, (run,) = _mlflow_runs(tmp_path)  # the same run, not a second one
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert sorted(steps) == list(range(5, 41, 5))  # every step once: none lost, none twice
    evals = [m.step for m in client.get_metric_history(run.info.run_id, "eval_loss")]
    assert sorted(evals) == sorted(set(evals)) and max(evals) == 40
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    record = json.loads((run_dir / "run.json").read_text())
    assert record["finished"] is True

    # The uninterrupted run of the same config and seed (the shared CLI smoke run) reached the same eval_loss.
    _, smoke_dir = cli_smoke
    (reference,) = [json.loads(p.read_text()) for p in smoke_dir.glob("outputs/*/*/run.json")]
    assert record["metrics"]["eval_loss"] == pytest.approx(reference["metrics"]["eval_loss"], rel=0.01)

    # A run that finished: resume says so and does nothing (exit 0).
    again = run_cli([f"resume={run.info.run_id}"], tmp_path, timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "finished already: nothing to resume" in again.stdout + again.stderr
    _, runs = _mlflow_runs(tmp_path)
    assert len(runs) == 1


def test_resume_of_a_finished_run_in_process(tmp_path, cli_smoke):
    from medexp.train import train

    _, smoke_dir = cli_smoke
    (run_dir,) = [p.parent for p in smoke_dir.glob("outputs/*/*/run.json")]
    result = train(compose_config([f"resume={run_dir}"], tmp_path))
    assert result.output_dir == run_dir.resolve() and result.metrics["eval_loss"] > 0


def test_sigterm_saves_a_checkpoint_ends_killed_and_resumes(tmp_path, monkeypatch):
    """SIGTERM during training (sent at step 5, between two checkpoints): the step finishes, checkpoint-5 is
    saved, the MLflow run ends KILLED; resume= continues it from step 5 to FINISHED in the same run."""
    import signal

    from mlflow.tracking import MlflowClient

    from medexp.config import Stopped
    from medexp.train import train
    from medexp.training import stopping

    step_end = stopping.GracefulStop.on_step_end

    def sigterm_at_step_5(self, args, state, control, **kwargs):
        if state.global_step == 5 and self.received is None:
            os.kill(os.getpid(), signal.SIGTERM)  # handled right here, in the main thread
        return step_end(self, args, state, control, **kwargs)

    monkeypatch.setattr(stopping.GracefulStop, "on_step_end", sigterm_at_step_5)
    short = [
        "experiment=smoke",
        "trainer.max_steps=8",
        "trainer.eval_steps=4",
        "eval.generation.enabled=false",
    ]
    cfg = compose_config(short, tmp_path)
    with pytest.raises(Stopped, match=r"SIGTERM at step 5: checkpoint saved in"):
        train(cfg)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are gone with the training
    run_dir = Path(cfg.paths.output_dir)
    assert last_checkpoint(run_dir / "checkpoints").name == "checkpoint-5"
    client = MlflowClient(cfg.tracking.uri)
    (run,) = client.search_runs([client.get_experiment_by_name("medexp-smoke").experiment_id])
    assert run.info.status == "KILLED"

    monkeypatch.undo()
    result = train(compose_config([f"resume={run_dir}"], tmp_path))
    run = client.get_run(run.info.run_id)
    assert result.run_id == run.info.run_id and run.info.status == "FINISHED"
    evals = sorted(m.step for m in client.get_metric_history(run.info.run_id, "eval_loss"))
    assert evals == sorted(set(evals)) and evals[-1] == 8


def test_a_stopped_command_says_how_to_resume_and_exits_128_plus_the_signal(capsys):
    from omegaconf import OmegaConf

    from medexp.config import Stopped
    from medexp.config.command import _stopped

    cfg = OmegaConf.create({"resume": None, "paths": {"output_dir": "/runs/a"}})
    with pytest.raises(SystemExit) as exit_:
        _stopped(Stopped("SIGTERM at step 5: checkpoint saved in /runs/a/checkpoints", 15), cfg)
    assert exit_.value.code == 143
    err = capsys.readouterr().err
    assert err.strip() == (
        "medexp: stopped: SIGTERM at step 5: checkpoint saved in /runs/a/checkpoints. "
        "Continue it with: python -m medexp.train resume=/runs/a"
    )
    with pytest.raises(SystemExit) as exit_:  # Ctrl-C before training: no checkpoint, nothing to resume
        _stopped(KeyboardInterrupt(), cfg)
    assert exit_.value.code == 130 and capsys.readouterr().err.strip() == "medexp: stopped: interrupted."
