"""Data-parallel training through the existing launchers: a real 2-process CPU run under torchrun (gloo), and the
launch errors that must come before any process loads a model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import config_error, run_cli

PROBE = Path(__file__).with_name("ddp_probe.py")


LAUNCHERS = {
    "torchrun": ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
    # --multi_gpu is accelerate's torchrun path (`--cpu` alone would start one process); without GPUs the run
    # goes on CPU data parallel (gloo)
    "accelerate": [
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
    ],
}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_two_process_cpu_data_parallel_smoke_run(tmp_path, launcher):
    """2 processes on gloo: one run directory, one MLflow run with each step logged once, one adapter, and the
    two ranks trained on different rows (one epoch = 10 steps of 2 x 16 rows)."""
    from mlflow.tracking import MlflowClient

    env = {**os.environ, "MEDEXP_PROBE_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    args = [
        "experiment=smoke",
        "trainer.max_steps=10",
        "trainer.eval_steps=5",
        "eval.generation.num_questions=4",
    ]
    proc = subprocess.run(
        [sys.executable, *LAUNCHERS[launcher], str(PROBE), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr

    (run_dir,) = [p for p in tmp_path.glob("outputs/*/*") if p.is_dir()]  # both ranks wrote to one directory
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    adapters = [p for p in tmp_path.glob("outputs/**/adapter_config.json") if "checkpoints" not in p.parts]
    assert adapters == [run_dir / "adapter" / "adapter_config.json"]

    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("medexp-smoke").experiment_id])
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert sorted(steps) == [5, 10]  # logged by rank 0 alone: each step once
    assert run.data.metrics["train/effective_batch_size"] == 32  # 16 per process x 2 processes

    # The first 10 batches of 16 rows on each rank (accelerate's loader may build one more ahead of need)
    ranks = [(tmp_path / f"rank{r}.txt").read_text().split()[:160] for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 160
    assert not set(ranks[0]) & set(ranks[1])  # different examples on each rank


def test_effective_batch_size_must_divide_over_the_processes(tmp_path, monkeypatch):
    assert config_error(["experiment=smoke", "trainer.effective_batch_size=32"], tmp_path) == ""
    monkeypatch.setenv("WORLD_SIZE", "3")
    message = config_error(["experiment=smoke", "trainer.effective_batch_size=32"], tmp_path)
    assert (
        "trainer.effective_batch_size=32 is not a multiple of trainer.batch_size=16 x 3 processes = 48"
        in message
    )
    assert "e.g. 48" in message


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.effective_batch_size=0", "trainer.effective_batch_size must be positive, got 0"),
        ("trainer.effective_batch_size=-32", "trainer.effective_batch_size must be positive, got -32"),
        ("trainer.effective_batch_size=many", "Wrong value for trainer.effective_batch_size"),
        ("tracking.system_metrics_interval=0", "tracking.system_metrics_interval must be positive, got 0"),
        ("tracking.system_metrics_interval=-5", "tracking.system_metrics_interval must be positive, got -5"),
    ],
)
def test_bad_values_of_the_new_options_are_named(tmp_path, override, message):
    assert message in config_error(["experiment=smoke", override], tmp_path)


def test_effective_batch_size_sets_the_accumulation(make_cfg, monkeypatch):
    from medexp.config.runtime import gradient_accumulation

    cfg = make_cfg("experiment=smoke", "trainer.batch_size=4", "trainer.effective_batch_size=32")
    assert gradient_accumulation(cfg.trainer) == 8
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert gradient_accumulation(cfg.trainer) == 2


def test_a_multi_node_launch_needs_one_shared_run_directory(tmp_path):
    env = {"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}
    prelude = "import os; os.environ.update(" + repr(env) + ")"
    proc = run_cli(["experiment=smoke"], tmp_path, timeout=60, prelude=prelude)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "spans several nodes" in proc.stderr and "hydra.run.dir=" in proc.stderr
