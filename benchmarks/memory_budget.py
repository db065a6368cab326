"""trainer.memory_budget_gb at SmolLM2-135M's real depth: peak RSS and speed with the budget and without it.

    nice -n 5 python benchmarks/memory_budget.py                 # the recorded run (needs >= 14 GB available)
    nice -n 5 python benchmarks/memory_budget.py --variants budget,plain,full,budget,plain --steps 2

Each variant is `python -m medexp.train` in a fresh process (so one variant's peak RSS cannot hide another's) on the
same rows, read back from its MLflow run: peak RSS (`train/peak_memory_mb`, the process's ru_maxrss), the
non-padding tokens per second of the optimizer steps after the first (`throughput_tokens_per_s`, logged every
step), what the budget planned (`memory_budget/*` params: the estimate, the levers), the precision and the final
eval_loss, with the load average before and after. A variant named twice runs twice (interleave them on a shared
machine: A, B, A, B); the speed ratio is the median's.

  budget    batch 8, trainer.memory_budget_gb=8: the issue's target (< 8 GB peak RSS)
  plain     the same 8 sequences per optimizer step without the budget's levers: batch 2 x 4 accumulation steps,
            trainer.memory_budget_gb=100 (a budget nothing reaches: the estimate is logged, nothing turned on).
            Batch 8 in one pass needs ~22 GB under bf16 autocast (the estimate; the issue measured 17.3 GB at
            batch 4 in fp32), more than this shared 24 GB machine can give one job: this is the largest unbudgeted
            batch that fits beside other jobs (batch 4 x 2 is estimated at ~12 GB).
  full      batch 8 in one pass with every layer checkpointed (trainer.gradient_checkpointing=true) and
            trainer.memory_budget_gb=8: the plan before the cheapest-fit search (checkpointing, then head tiles)
  tiny_*    calibration: the embedded tiny model at batch 32 of the sample's rows, without and with activation
            checkpointing (trainer.gradient_checkpointing), a budget nothing reaches: the estimate against the peak.

Model: /work/models/smollm2-135m-instruct when present (SmolLM2-135M-Instruct), else SmolLM-135M's shape with
random weights (30 layers, hidden 576, 9 heads, 3 kv heads, intermediate 1536, vocab 49152) and the tiny model's
tokenizer. Data: rows with MedQuAD's length mix (benchmarks/throughput.py's generator), dataset.max_tokens=1024,
length-grouped batches (trainer=cpu: precision auto, bf16 autocast on a CPU with AVX512-BF16 or AMX), so the first
batch holds the longest rows. The levers' costs and the autocast share of the estimate: benchmarks/memory_levers.py.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL = Path("/work/models/smollm2-135m-instruct")
DEFAULT_OUT = ROOT / "benchmarks" / "memory_budget.json"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
TARGETS = {"peak_rss_gb": 8.0, "speed_ratio": 0.75}


def _throughput_module():
    spec = importlib.util.spec_from_file_location("throughput", ROOT / "benchmarks" / "throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _random_model(work: Path) -> Path:
    """SmolLM-135M's shape with random weights and the tiny model's tokenizer (throughput.py's --variant setup)."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--variant", "setup", "--layers", "30"]
    cmd += ["--workdir", str(work), "--result", str(work / "setup.json")]
    subprocess.run(cmd, check=True, env={**os.environ, **OFFLINE}, cwd=ROOT, capture_output=True)
    return work / "model"


def variants(model: Path, rows: Path, steps: int, plain_batch: int = 2) -> dict[str, list[str]]:
    common = ["trainer=cpu", "eval=none", "eval.before_training=false", "trainer.logging_steps=1"]
    common += [f"trainer.max_steps={steps}", f"trainer.eval_steps={steps}", "trainer.warmup_ratio=0"]
    real = [f"model.name_or_path={model}", "dataset=file", f"dataset.path={rows}", "dataset.max_tokens=1024"]
    real += ["dataset.near_dup.threshold=null", "dataset.val_fraction=0.01", "trainer.eval_batch_size=8"]
    tiny = ["experiment=smoke", "trainer.batch_size=32", "trainer.eval_batch_size=8"]
    return {
        "budget": [
            *common,
            *real,
            "trainer.batch_size=8",
            "trainer.gradient_accumulation_steps=1",
            "trainer.memory_budget_gb=8",
        ],
        "plain": [
            *common,
            *real,
            f"trainer.batch_size={plain_batch}",
            f"trainer.gradient_accumulation_steps={8 // plain_batch}",
            "trainer.memory_budget_gb=100",
        ],
        "full": [
            *common,
            *real,
            "trainer.batch_size=8",
            "trainer.gradient_accumulation_steps=1",
            "trainer.memory_budget_gb=8",
            "trainer.gradient_checkpointing=true",
        ],
        "tiny_plain": [*common, *tiny, "trainer.memory_budget_gb=100"],
        "tiny_checkpointed": [
            *common,
            *tiny,
            "trainer.memory_budget_gb=100",
            "trainer.gradient_checkpointing=true",
        ],
    }


def _cpu_seconds(usage) -> float:
    return usage.ru_utime + usage.ru_stime


def run_variant(name: str, overrides: list[str], work: Path) -> dict:
    from medexp.config.compose import compose_run_config

    out = work / f"{name}-{len(list(work.glob(name + '-*')))}"
    overrides = [*overrides, f"paths.output_root={out / 'outputs'}", f"paths.mlruns_dir={out / 'mlruns'}"]
    uri = str(compose_run_config(overrides, out).tracking.uri)
    start, load = time.perf_counter(), os.getloadavg()[0]
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        ["nice", "-n", "5", sys.executable, "-m", "medexp.train", *overrides],
        cwd=work,
        env={**os.environ, **OFFLINE, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise SystemExit(f"variant {name} failed (exit {proc.returncode})")
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run = client.search_runs([e.experiment_id for e in client.search_experiments()])[0]
    rates = client.get_metric_history(run.info.run_id, "throughput_tokens_per_s")
    later = [m.value for m in sorted(rates, key=lambda m: m.step) if m.step > 1]
    params = {k: v for k, v in run.data.params.items() if k.startswith("memory_budget/")}
    peak = run.data.metrics["train/peak_memory_mb"] / 1024
    line = next(
        (ln for ln in proc.stderr.splitlines() + proc.stdout.splitlines() if "memory budget" in ln), ""
    )
    return {
        "variant": name,
        "overrides": overrides[:-2],
        "peak_rss_gb": round(peak, 2),
        "planned_gb": float(params.get("memory_budget/planned_gb", "nan")),
        "estimate_without_levers_gb": float(params.get("memory_budget/estimate_gb", "nan")),
        "estimate_error": round(float(params.get("memory_budget/planned_gb", "nan")) / peak - 1, 3),
        "levers": params.get("memory_budget/actions"),
        "tokens_per_s_after_step_1": round(sum(later) / len(later), 1) if later else None,
        "tokens_per_s_whole_run": round(run.data.metrics["train/tokens_per_s"], 1),
        "eval_loss": run.data.metrics.get("eval_loss"),
        "precision": run.data.tags.get("medexp.precision"),
        "checkpointed_layers": params.get("memory_budget/checkpointed_layers"),
        "estimated_slowdown": float(params.get("memory_budget/estimated_slowdown", "nan")),
        "load_average_1min": [round(load, 2), round(os.getloadavg()[0], 2)],  # before, after
        # the whole process's CPU seconds (loading and evaluation included): other jobs' load does not count
        "cpu_s": round(_cpu_seconds(resource.getrusage(resource.RUSAGE_CHILDREN)) - _cpu_seconds(cpu), 1),
        "console_line": line.split("] ", 1)[-1].strip(),
        "wall_s": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per variant")
    parser.add_argument("--variants", default="budget,plain,tiny_plain,tiny_checkpointed")
    parser.add_argument("--rows", type=int, default=1600, help="generated MedQuAD-mix rows")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--plain-batch", type=int, default=2, choices=(1, 2, 4, 8), help="plain's sequences per pass"
    )
    parser.add_argument("--force", action="store_true", help="run with less than 14 GB available")
    parser.add_argument(
        "--reuse", type=Path, help="an earlier report: its variants not run now join this one"
    )
    args = parser.parse_args()
    import psutil

    available = psutil.virtual_memory().available / 2**30
    if available < 14 and not args.force:
        raise SystemExit(f"{available:.1f} GB available: the unbudgeted variant needs ~10 GB; wait for 14 GB")
    results = []
    with tempfile.TemporaryDirectory(prefix="medexp-memory-budget-") as tmp:
        work = Path(tmp)
        rows = work / "medquad_mix.jsonl"
        _throughput_module().write_rows(rows, args.rows, 42)
        model = REAL if (REAL / "config.json").is_file() else _random_model(work)
        table = variants(model, rows, args.steps, args.plain_batch)
        for name in args.variants.split(","):
            r = run_variant(name, table[name], work)
            results.append(r)
            print(json.dumps(r), flush=True)
    if args.reuse is not None:  # e.g. variants run one at a time, as memory on a shared machine allowed
        ran = {r["variant"] for r in results}
        earlier = json.loads(args.reuse.read_text())["results"]
        results = [
            *(dict(r, reused_from=args.reuse.name) for r in earlier if r["variant"] not in ran),
            *results,
        ]
    by: dict[str, list[dict]] = {}
    for r in results:
        by.setdefault(r["variant"], []).append(r)
    report = {
        "model": str(model) if model == REAL else "SmolLM-135M shape, random weights",
        "machine": {"cores": os.cpu_count(), "available_gb_at_start": round(available, 1)},
        "steps": args.steps,
        "plain_batch": args.plain_batch,
        "results": results,
        "targets": TARGETS,
    }

    def rate(name: str) -> float:
        return statistics.median(r["tokens_per_s_after_step_1"] for r in by[name])

    for name in ("budget", "full"):
        if {name, "plain"} <= by.keys():
            report[f"speed_ratio_{name}"] = round(rate(name) / rate("plain"), 3)
    if {"budget", "plain"} <= by.keys():
        peak = max(r["peak_rss_gb"] for r in by["budget"])
        report["target_met"] = (
            peak < TARGETS["peak_rss_gb"] and report["speed_ratio_budget"] >= TARGETS["speed_ratio"]
        )
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "results"}, indent=2))


if __name__ == "__main__":
    main()
