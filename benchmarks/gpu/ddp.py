"""GPU check: 2-process data parallel (DDP over NCCL) when two GPUs are present, skipped otherwise. The smoke run
(the embedded tiny model) trains 40 steps at an effective batch of 32 once on one GPU and once under
`torchrun --nproc_per_node 2`; it reports both wall times, the speed-up and both eval_losses (data parallel at the same
effective batch ends near the same loss). One command, under 2 minutes:

    python benchmarks/gpu/ddp.py        # writes ddp.json under $OUT or benchmarks/gpu/results/

UNTESTED: written on a CPU-only machine; it has never run on GPUs. With fewer than two GPUs it writes
{"skipped": ...} and exits 0. Exits non-zero when a run fails."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, GpuMetrics, device, write_result

STEPS = 40
OVERRIDES = [
    "experiment=smoke",
    f"trainer.max_steps={STEPS}",
    f"trainer.eval_steps={STEPS}",
    "trainer.effective_batch_size=32",  # the same optimizer step on 1 and 2 GPUs
    "trainer.batch_size=16",
    "eval=none",
    "eval.metrics=[loss]",
]


def launch(processes: int, folder: Path) -> dict:
    """One smoke run on `processes` GPUs; its wall time and final eval_loss (read from the run's metrics)."""
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    cmd = [sys.executable, *(launcher if processes > 1 else []), "-m", "medexp.train", *OVERRIDES]
    cmd += [f"paths.output_root={folder / 'outputs'}", f"tracking.uri=sqlite:///{folder / 'mlflow.db'}"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, timeout=110)
    seconds = time.perf_counter() - start
    import mlflow

    runs = mlflow.MlflowClient(f"sqlite:///{folder / 'mlflow.db'}").search_runs(
        [
            e.experiment_id
            for e in mlflow.MlflowClient(f"sqlite:///{folder / 'mlflow.db'}").search_experiments()
        ]
    )
    return {
        "processes": processes,
        "wall_s": round(seconds, 1),
        "mlflow_runs": len(runs),  # rank 0 alone tracks: one run either way
        "eval_loss": runs[0].data.metrics.get("eval_loss") if runs else None,
    }


def main() -> None:
    card = device()
    if card["count"] < 2:
        write_result("ddp", {"skipped": f"{card['count']} GPU(s) present; DDP needs two", "card": card})
        return
    with tempfile.TemporaryDirectory() as tmp, GpuMetrics() as metrics:
        one = launch(1, Path(tmp) / "one")
        two = launch(2, Path(tmp) / "two")
    result = {
        "card": card,
        "one_gpu": one,
        "two_gpus": two,
        "speedup": round(one["wall_s"] / two["wall_s"], 3),
        "gpu_metrics": metrics.summary,
    }
    print(json.dumps(result, indent=2))
    if two["mlflow_runs"] != 1:
        raise SystemExit(f"2-process run logged {two['mlflow_runs']} MLflow runs; rank 0 alone should track")
    write_result("ddp", result)


if __name__ == "__main__":
    main()
