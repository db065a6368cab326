"""Benchmark: the same seeded Optuna study on the smoke setup, with a pruner and without pruning.

Reports, for each, the optimizer steps all trials consumed and the best eval_loss found. The target is a
pruned best within 2% of the unpruned best for at most 60% of its steps.

    python scripts/bench_pruning.py --trials 12                       # lora_optuna's own pruner; ~7 min
    python scripts/bench_pruning.py --pruner hyperband hydra.sweeper.pruner.hyperband.reduction_factor=2
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


def run_study(workdir: Path, trials: int, pruner: str | None, extra: list[str]) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "medexp.train",
        "--multirun",
        "hparams_search=lora_optuna",
        "experiment=smoke",
        "tracking=none",
        f"hydra.sweeper.n_trials={trials}",
        *extra,
    ]
    if pruner is not None:
        cmd.append(f"hydra.sweeper.pruner.name={pruner}")
    start = time.perf_counter()
    subprocess.run(cmd, cwd=workdir, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    study = optuna.load_study(
        study_name="lora_optuna", storage=f"sqlite:///{workdir}/multirun/lora_optuna/optuna.db"
    )
    states = [t.state.name for t in study.trials]
    return {
        "pruner": pruner or "configured",
        "trials": len(study.trials),
        "pruned": states.count("PRUNED"),
        "steps": sum(t.user_attrs.get("medexp.steps", 0) for t in study.trials),
        "best_eval_loss": study.best_value,
        "best_params": study.best_params,
        "wall_s": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--pruner", default=None, help="median | hyperband; default: lora_optuna's pruner")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="reuse the unpruned result of an earlier --out (same trials)",
    )
    parser.add_argument("overrides", nargs="*", help="extra overrides for both studies")
    args = parser.parse_args()

    results = []
    if args.baseline:  # the unpruned study is deterministic for a given seed and trial count
        results.append(json.loads(args.baseline.read_text())["results"][0])
        assert results[0]["pruner"] == "none" and results[0]["trials"] == args.trials
    runs = [("none", [])] if not args.baseline else []
    for pruner, extra in [*runs, (args.pruner, args.overrides)]:
        with tempfile.TemporaryDirectory() as tmp:
            results.append(run_study(Path(tmp), args.trials, pruner, extra))
            print(json.dumps(results[-1]), flush=True)
    unpruned, pruned = results
    step_share = pruned["steps"] / unpruned["steps"]
    gap = pruned["best_eval_loss"] / unpruned["best_eval_loss"] - 1
    summary = {
        "steps_share": round(step_share, 3),
        "best_gap": round(gap, 4),
        "target_met": step_share <= 0.60 and gap <= 0.02,
    }
    print(f"\n{'pruner':<10} {'trials':>6} {'pruned':>6} {'steps':>6} {'best eval_loss':>15} {'wall s':>7}")
    for r in results:
        print(
            f"{r['pruner']:<10} {r['trials']:>6} {r['pruned']:>6} {r['steps']:>6} "
            f"{r['best_eval_loss']:>15.4f} {r['wall_s']:>7}"
        )
    print(
        f"\nwith pruning: {step_share:.0%} of the steps, best eval_loss {gap:+.2%} vs no pruning "
        f"(target: <= 60% of the steps, within 2%): {'met' if summary['target_met'] else 'NOT met'}"
    )
    if args.out:
        args.out.write_text(json.dumps({"results": results, **summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
