"""Does searching LoRA alpha find a better eval_loss than tying it to 2 x r? The same seeded study, twice.

    python benchmarks/alpha_search.py                 # 12 trials each, sampler seed 42, smoke setup (~15 min, CPU)
    python benchmarks/alpha_search.py --trials 20 --seeds 1 2 3

Runs `python -m medexp.train --multirun hparams_search=<preset> experiment=smoke` with
hparams_search=lora_optuna (r, alpha and learning rate searched) and lora_optuna_tied (alpha = 2 x r), pruning
off so that every trial's eval_loss is its full-length one, and reports each study's best eval_loss and params.
Writes benchmarks/alpha_search.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ("lora_optuna", "lora_optuna_tied")


def run_study(workdir: Path, preset: str, trials: int, seed: int) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "medexp.train",
        "--multirun",
        f"hparams_search={preset}",
        "experiment=smoke",
        "tracking=none",
        f"hydra.sweeper.n_trials={trials}",
        f"hydra.sweeper.sampler.seed={seed}",
        "hydra.sweeper.pruner.name=none",
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{preset} seed {seed} failed:\n{proc.stderr[-4000:]}")
    db = f"sqlite:///{workdir}/multirun/{preset}/optuna.db"
    study = optuna.load_study(study_name=preset, storage=db)
    return {
        "preset": preset,
        "seed": seed,
        "trials": len(study.trials),
        "best_eval_loss": round(study.best_value, 5),
        "best_params": study.best_params,
        "wall_s": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "alpha_search.json")
    args = parser.parse_args()
    results = []
    for seed in args.seeds:
        for preset in PRESETS:
            with tempfile.TemporaryDirectory(prefix="medexp-alpha-") as tmp:
                results.append(run_study(Path(tmp), preset, args.trials, seed))
            print(json.dumps(results[-1]), flush=True)
    lines = ["| study | seed | trials | best eval_loss | best params |", "|---|---:|---:|---:|---|"]
    for r in results:
        params = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["best_params"].items()
        )
        lines.append(
            f"| {r['preset']} | {r['seed']} | {r['trials']} | {r['best_eval_loss']:.4f} | {params} |"
        )
    print("\n" + "\n".join(lines))
    args.out.write_text(json.dumps({"results": results, "table": "\n".join(lines)}, indent=2) + "\n")


if __name__ == "__main__":
    main()
