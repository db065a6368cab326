"""GPU check of GRPO rollouts through vLLM: a few GRPO steps of experiment=grpo_smoke with
trainer.rollout_engine=vllm (TRL's colocated mode), then the same steps with transformers' generate, printing
steps per second of each. One command, under 4 minutes on an H100:

    python benchmarks/gpu/grpo_vllm.py

UNTESTED: written on a CPU-only machine without vllm; it has never run. It needs a CUDA GPU and `pip install
vllm` (a version TRL 1.16 supports). It writes only under a temporary directory. It exits non-zero when either
engine fails or no reward is logged."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

STEPS = 8  # a few steps: enough for a rate once vLLM has started


def run(engine: str, tmp: Path) -> float:
    """Steps per second of grpo_smoke's stage with the given rollout engine (the tiny model, on the GPU)."""
    import mlflow

    from medexp.train import train
    from tests.helpers import compose_config

    cfg = compose_config(
        [
            "experiment=grpo_smoke",
            f"trainer.rollout_engine={engine}",
            "trainer.precision=auto",  # bf16 on the GPU
            f"stages.grpo.trainer.max_steps={STEPS}",
            f"stages.grpo.trainer.eval_steps={STEPS}",
        ],
        tmp / engine,
    )
    start = time.perf_counter()
    result = train(cfg)
    seconds = time.perf_counter() - start
    client = mlflow.MlflowClient(str(cfg.tracking.uri))
    (child,) = client.search_runs(
        [client.get_run(result.run_id).info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'"
    )
    rewards = client.get_metric_history(child.info.run_id, "reward")
    if len(rewards) != STEPS:
        raise SystemExit(f"{engine}: {len(rewards)} reward values logged for {STEPS} steps")
    return STEPS / seconds


def main() -> None:
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check needs a GPU")
    with tempfile.TemporaryDirectory() as tmp:
        for engine in ("vllm", "transformers"):
            print(
                f"{engine}: {run(engine, Path(tmp)):.3f} steps/s (whole stage, start-up and evaluation included)"
            )


if __name__ == "__main__":
    main()
