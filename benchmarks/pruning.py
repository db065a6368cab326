"""Pruning benchmark: which Optuna pruner saves the most training for the same best eval_loss.

    python benchmarks/pruning.py record      # train every grid config once, keep its eval_loss curve (~1 h, CPU)
    python benchmarks/pruning.py replay      # run seeded studies with each pruner over the recorded curves (s)

Record: each configuration of the grid below (LoRA rank x learning rate; alpha = 2 x r) is trained once with
medexp's own training (`medexp.train.train`, the smoke setup: embedded tiny model and sample data), for STEPS
optimizer steps with an evaluation every EVAL_STEPS (20 evaluations), early stopping off, and its eval_loss
curve is written to benchmarks/pruning_curves.json. Training is seeded and deterministic on a CPU, so a trial
of a real sweep with those params reports exactly that curve.

Replay: for each pruner and sampler seed, an Optuna study (TPE, lora_optuna's settings, N_TRIALS trials over
the grid) runs its trials against the recorded curves: a trial reports eval_loss at each evaluation step, as
medexp's ReportAndPrune callback does, and stops when the pruner says so. A trial's value is the best eval_loss
of the curve up to where it stopped (medexp returns the best checkpoint's). Reported per pruner: the steps all
trials consumed as a share of the unpruned study's with the same seed, and the best eval_loss against the
unpruned study's, as the mean and spread over the seeds. Target: a pruner within 2% of the unpruned best with at
most 60% of its steps, on average over the seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CURVES = ROOT / "benchmarks" / "pruning_curves.json"
RESULT = ROOT / "benchmarks" / "pruning.json"

STEPS = 200  # long enough that a pruner has room to act: 20 evaluations
EVAL_STEPS = 10
RANKS = (4, 8, 16, 32, 64)  # lora_optuna's choices
# lora_optuna's range, 1e-5 .. 1e-3 log-uniform, on a grid: the low end barely trains the tiny model in 200 steps
# (bad trials for a pruner to find), the high end is close to the smoke preset's own 3e-3
LEARNING_RATES = (1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3)
N_TRIALS = 20  # a sweep's usual budget
SEEDS = (0, 1, 2)
TARGET_STEPS, TARGET_GAP = 0.60, 0.02


def config_key(r: int, lr: float) -> str:
    return f"r={r},lr={lr:g}"


# --------------------------------------------------------------------------------------------------------------
# record


def record(args: argparse.Namespace) -> None:
    from medexp.config.compose import compose_run_config
    from medexp.train import train

    curves: dict[str, Any] = json.loads(CURVES.read_text())["curves"] if CURVES.exists() else {}
    grid = [(r, lr) for r in RANKS for lr in LEARNING_RATES]
    for i, (r, lr) in enumerate(grid, 1):
        key = config_key(r, lr)
        if key in curves:
            continue
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="medexp-pruning-") as tmp:
            cfg = compose_run_config(
                [
                    "experiment=smoke",
                    f"lora.r={r}",
                    f"lora.alpha={2 * r}",
                    f"trainer.learning_rate={lr}",
                    f"trainer.max_steps={STEPS}",
                    f"trainer.eval_steps={EVAL_STEPS}",
                    "trainer.early_stopping_patience=null",  # the whole curve: pruning, not early stopping
                    "eval=none",
                    "eval.before_training=false",
                    "tracking=none",
                ],
                Path(tmp),
            )
            result = train(cfg)
            stage = json.loads((result.output_dir / "stage.json").read_text())
        curve = {int(step): float(loss) for step, loss in stage["curves"]["eval_loss"] if step > 0}
        curves[key] = {"r": r, "lr": lr, "eval_loss": curve, "seconds": round(time.perf_counter() - start, 1)}
        CURVES.write_text(json.dumps({"steps": STEPS, "eval_steps": EVAL_STEPS, "curves": curves}, indent=1))
        print(
            f"[{i}/{len(grid)}] {key}: best {min(curve.values()):.4f} ({curves[key]['seconds']} s)",
            flush=True,
        )


# --------------------------------------------------------------------------------------------------------------
# replay


def pruners() -> dict[str, tuple[str, Any]]:
    """name -> (settings as the README table shows them, a factory of a fresh pruner)."""
    from optuna.pruners import HyperbandPruner, MedianPruner, NopPruner, PatientPruner, PercentilePruner

    e = EVAL_STEPS
    return {
        "none": ("", NopPruner),
        "median": ("n_startup_trials=3", lambda: MedianPruner(n_startup_trials=3)),
        "median warm-up": (
            f"n_startup_trials=3, n_warmup_steps={5 * e}",
            lambda: MedianPruner(n_startup_trials=3, n_warmup_steps=5 * e),
        ),
        "percentile 25": (
            f"percentile=25, n_startup_trials=3, n_warmup_steps={3 * e}",
            lambda: PercentilePruner(25.0, n_startup_trials=3, n_warmup_steps=3 * e),
        ),
        "percentile 25, no warm-up": (
            "percentile=25, n_startup_trials=3, n_warmup_steps=0 (from the first evaluation)",
            lambda: PercentilePruner(25.0, n_startup_trials=3, n_warmup_steps=0),
        ),
        "percentile 33": (
            f"percentile=33, n_startup_trials=3, n_warmup_steps={3 * e}",
            lambda: PercentilePruner(33.0, n_startup_trials=3, n_warmup_steps=3 * e),
        ),
        "patient median": (
            "PatientPruner(median, patience=2 evaluations)",
            lambda: PatientPruner(MedianPruner(n_startup_trials=3), patience=2 * e),
        ),
        "hyperband": (
            f"min_resource={e} (1 evaluation), reduction_factor=3",
            lambda: HyperbandPruner(min_resource=e, max_resource=STEPS, reduction_factor=3),
        ),
        "hyperband 2": (
            f"min_resource={2 * e}, reduction_factor=2",
            lambda: HyperbandPruner(min_resource=2 * e, max_resource=STEPS, reduction_factor=2),
        ),
        "hyperband steps": (
            "min_resource=1 (steps), reduction_factor=3: the previous default",
            lambda: HyperbandPruner(min_resource=1, reduction_factor=3),
        ),
    }


def run_study(curves: dict, pruner, seed: int) -> dict[str, Any]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=5, constant_liar=True)
    study = optuna.create_study(direction="minimize", sampler=sampler, pruner=pruner)
    used = 0

    def objective(trial: optuna.Trial) -> float:
        nonlocal used
        r = trial.suggest_categorical("lora.r", list(RANKS))
        lr = trial.suggest_categorical("trainer.learning_rate", list(LEARNING_RATES))
        curve = curves[config_key(r, lr)]["eval_loss"]
        best = math.inf
        for step in sorted(curve, key=int):
            value = curve[step]
            best = min(best, value)
            trial.report(value, int(step))
            if trial.should_prune():
                used += int(step)
                raise optuna.TrialPruned()
        used += STEPS
        return best

    study.optimize(objective, n_trials=N_TRIALS)
    pruned = sum(t.state.name == "PRUNED" for t in study.trials)
    return {"steps": used, "best": study.best_value, "pruned": pruned, "best_params": study.best_params}


def replay(args: argparse.Namespace) -> None:
    if not CURVES.exists():
        sys.exit(f"{CURVES} is missing: run `python benchmarks/pruning.py record` first")
    data = json.loads(CURVES.read_text())
    curves = data["curves"]
    missing = [config_key(r, lr) for r in RANKS for lr in LEARNING_RATES if config_key(r, lr) not in curves]
    if missing:
        sys.exit(f"{len(missing)} grid configs have no curve yet ({missing[0]}, ...): finish `record` first")
    runs = {
        name: [run_study(curves, factory(), seed) for seed in SEEDS]
        for name, (_, factory) in pruners().items()
    }
    base = runs["none"]
    rows = []
    for name, (settings, _) in pruners().items():
        shares = [r["steps"] / b["steps"] for r, b in zip(runs[name], base, strict=True)]
        gaps = [r["best"] / b["best"] - 1 for r, b in zip(runs[name], base, strict=True)]
        share, gap = statistics.fmean(shares), statistics.fmean(gaps)
        rows.append(
            {
                "pruner": name,
                "settings": settings,
                "steps_share_mean": round(share, 3),
                "steps_share_range": [round(min(shares), 3), round(max(shares), 3)],
                "best_gap_mean": round(gap, 4),
                "best_gap_range": [round(min(gaps), 4), round(max(gaps), 4)],
                "pruned_mean": round(statistics.fmean(r["pruned"] for r in runs[name]), 1),
                "target_met": share <= TARGET_STEPS and gap <= TARGET_GAP,
                "runs": runs[name],
            }
        )
    lines = [
        "| pruner | settings | trials pruned (mean of 20) | steps, mean (range) | share of none's steps, mean (range) "
        "| best eval_loss, mean (range) | vs none, mean (range) | target |",
        "|---|---|---:|---|---|---|---|---|",
    ]
    for row in rows:
        lo, hi = row["steps_share_range"]
        glo, ghi = row["best_gap_range"]
        steps = [r["steps"] for r in row["runs"]]
        bests = [r["best"] for r in row["runs"]]
        lines.append(
            f"| {row['pruner']} | {row['settings']} | {row['pruned_mean']} | {statistics.fmean(steps):.0f} "
            f"({min(steps)}-{max(steps)}) | {row['steps_share_mean']:.0%} ({lo:.0%}-{hi:.0%}) | "
            f"{statistics.fmean(bests):.4f} ({min(bests):.4f}-{max(bests):.4f}) | {row['best_gap_mean']:+.2%} "
            f"({glo:+.2%} to {ghi:+.2%}) | {'met' if row['target_met'] else '-'} |"
        )
    table = "\n".join(lines)
    print(table)
    RESULT.write_text(
        json.dumps(
            {
                "grid": {
                    "ranks": RANKS,
                    "learning_rates": LEARNING_RATES,
                    "steps": STEPS,
                    "eval_steps": EVAL_STEPS,
                },
                "seeds": SEEDS,
                "n_trials": N_TRIALS,
                "target": {"steps_share": TARGET_STEPS, "best_gap": TARGET_GAP},
                "rows": rows,
                "table": table,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"\nwritten to {RESULT}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("phase", choices=["record", "replay"])
    args = parser.parse_args()
    record(args) if args.phase == "record" else replay(args)


if __name__ == "__main__":
    main()
