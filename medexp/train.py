"""Train one tracked LoRA run: `python -m medexp.train [group=option ...] [key=value ...]`.

The flow, top to bottom: validate the composed config -> read and clean the data -> tokenizer -> chat-format,
length-filter and split -> open the MLflow run (params, config, data counts) -> base model + LoRA -> evaluate the untouched
model -> train -> evaluate the best checkpoint -> save and log the adapter -> return the optimized metric.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from medexp.config import UserError, validate

log = logging.getLogger("medexp.train")


@dataclass
class RunResult:
    metrics: dict[str, float]
    output_dir: Path
    adapter_dir: Path
    run_id: str | None = None
    pruned_at: int | None = None  # the step at which an Optuna trial was pruned
    model: Any = field(default=None, repr=False)  # the trained PEFT model, for callers that keep going


def _hydra_overrides() -> str | None:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return " ".join(HydraConfig.get().overrides.task)


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def train(cfg: DictConfig) -> RunResult:
    """Run the whole flow for one composed config; returns metrics incl. `cfg.optimized_metric`."""
    validate(cfg)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    from medexp.data import load_pairs, prepare_data

    raw = load_pairs(cfg.dataset)  # read + find columns + drop empty rows: bad data fails before any model

    # Heavy imports only now that the config and the data are known to be sound.
    from transformers import set_seed

    from medexp.evaluation import held_out_metrics
    from medexp.modeling import load_model, load_tokenizer, resolve_precision
    from medexp.sweeping import connect_trial
    from medexp.tracking import MetricsCallback, flatten, git_commit, start_run
    from medexp.training import build_trainer

    precision = resolve_precision(cfg.trainer.precision)
    tokenizer = load_tokenizer(cfg.model)
    data = prepare_data(raw, cfg.dataset, tokenizer, cfg.seed)
    trial = connect_trial(cfg.get("optuna"))  # the Optuna trial this run is, in a sweep; else None

    config_path = output_dir / "config.yaml"
    OmegaConf.save(cfg, config_path, resolve=True)
    commit = git_commit()
    tags = {
        "mlflow.source.git.commit": commit,
        "medexp.git_commit": commit,
        "medexp.base_model": str(cfg.model.name_or_path),
        "medexp.dataset": str(cfg.dataset.path or cfg.dataset.name),
        "medexp.dataset_fingerprint": data.fingerprint,
        "medexp.overrides": _hydra_overrides(),
        "medexp.output_dir": str(output_dir.resolve()),
    }
    if trial is not None:
        tags |= trial.run_tags()
    with start_run(cfg.tracking, tags, f"trial_{trial.number}" if trial is not None else None) as tracker:
        tracker.log_params(flatten(cfg))
        tracker.log_artifact(config_path)
        tracker.log_metrics(data.metrics())
        if trial is not None:
            trial.attach_run(tracker.run_id)

        # Seeded here, not earlier: MLflow draws generated run names from the same global RNG.
        set_seed(cfg.seed)
        model = load_model(cfg.model, cfg.lora, precision, cfg.trainer.gradient_checkpointing)
        trainer = build_trainer(
            cfg, model, tokenizer, data, output_dir, precision, [MetricsCallback(tracker)]
        )

        metrics: dict[str, float] = {}
        if cfg.eval.before_training:
            # The adapters start as a no-op (LoRA's B = 0), so this is the base model's score.
            metrics.update(held_out_metrics(trainer, cfg.eval.metrics, prefix="eval/base/"))
            trainer.evaluate()  # also puts eval_loss at step 0, so the curve starts at the base model
        if trial is not None:  # added after the base evaluation: only trained steps are reported
            trainer.add_callback(trial.callback())
        trainer.train()

        best = trainer.state.best_metric  # best eval_loss over the run; its checkpoint is now loaded
        metrics.update(held_out_metrics(trainer, cfg.eval.metrics))
        tracker.log_metrics(metrics, step=trainer.state.global_step)
        # eval_loss is already a per-step curve in the run; the returned value is its best point.
        metrics["eval_loss"] = best if best is not None else trainer.evaluate()["eval_loss"]

        adapter_dir = output_dir / "adapter"
        trainer.model.save_pretrained(adapter_dir)  # adapter weights only, as safetensors
        tokenizer.save_pretrained(adapter_dir)
        if cfg.tracking.get("log_adapter", False):
            tracker.log_artifacts(adapter_dir, "adapter")
        if trial is not None:
            trial.finish(tracker, steps=trainer.state.global_step)

    log.info("%s", "  ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))
    log.info("adapter saved to %s", adapter_dir)
    pruned_at = trial.pruned_at if trial is not None else None
    return RunResult(metrics, output_dir, adapter_dir, tracker.run_id, pruned_at, trainer.model)


@hydra.main(version_base="1.3", config_path="pkg://medexp.conf", config_name="train")
def main(cfg: DictConfig) -> float:
    try:
        result = train(cfg)
    except UserError as err:
        if _in_multirun():
            raise  # the sweeper records the trial as failed, with this message, and goes on
        print(f"medexp: error: {err}", file=sys.stderr)
        sys.exit(2)
    if result.pruned_at is not None:
        import optuna

        raise optuna.TrialPruned(f"pruned at step {result.pruned_at}")  # the sweeper tells Optuna PRUNED
    return result.metrics[cfg.optimized_metric]


def _check_sweeper_plugin(argv: list[str]) -> None:
    """Hydra 1.3 finds plugins by scanning the hydra_plugins namespace, which a default editable install hides."""
    if not any(a.startswith("hparams_search=") for a in argv):
        return
    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper

    if not any(c.__name__ == "MedexpOptunaSweeper" for c in Plugins.instance().discover(Sweeper)):
        print(
            "medexp: error: Hydra cannot see medexp's Optuna sweeper plugin, which hparams_search needs. "
            "Hydra 1.3 finds plugins by scanning the hydra_plugins package, and setuptools' default editable "
            "install hides it. Reinstall with `pip install -e '.[dev]' --config-settings editable_mode=compat`, "
            "or install without -e.",
            file=sys.stderr,
        )
        sys.exit(2)


if __name__ == "__main__":
    _check_sweeper_plugin(sys.argv[1:])
    main()
