"""GPU check: medexp's MLflow system metrics on a GPU. The smoke run trains ~30 s on the GPU with
`tracking.system_metrics_interval=2`; the check reads the run back and requires MLflow's GPU series
(system/gpu_0_utilization_percentage, system/gpu_0_memory_usage_megabytes, ...) beside the CPU ones, and records
nvidia-smi's own samples over the same time for comparison. One command, under 1.5 minutes:

    python benchmarks/gpu/system_metrics.py        # writes system_metrics.json under $OUT or benchmarks/gpu/results/

UNTESTED: written on a CPU-only machine; it has never run on a GPU. MLflow's GPU metrics need pynvml (nvidia-ml-py);
the check fails, naming the missing series, when they are absent."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, GpuMetrics, device, write_result

STEPS = 120


def main() -> None:
    import mlflow

    card = device()
    with tempfile.TemporaryDirectory() as tmp, GpuMetrics() as metrics:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        cmd = [sys.executable, "-m", "medexp.train", "experiment=smoke", f"trainer.max_steps={STEPS}"]
        cmd += [f"trainer.eval_steps={STEPS}", "eval=none", "eval.metrics=[loss]", "tracking=mlflow"]
        cmd += [
            f"tracking.uri={uri}",
            "tracking.system_metrics_interval=2",
            f"paths.output_root={tmp}/outputs",
        ]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT, timeout=80)
        seconds = time.perf_counter() - start
        client = mlflow.MlflowClient(uri)
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        keys = sorted(runs[0].data.metrics) if runs else []
    gpu_keys = [k for k in keys if k.startswith("system/gpu")]
    result = {
        "card": card,
        "wall_s": round(seconds, 1),
        "system_metric_keys": [k for k in keys if k.startswith("system/")],
        "gpu_metric_keys": gpu_keys,
        "gpu_metrics_logged": bool(gpu_keys),
        "nvidia_smi": metrics.summary,
    }
    write_result("system_metrics", result)
    if not gpu_keys:
        raise SystemExit(f"no system/gpu_* metrics in the MLflow run (it has {result['system_metric_keys']})")
    print(f"MLflow logged {len(gpu_keys)} GPU series: {', '.join(gpu_keys)}")


if __name__ == "__main__":
    main()
