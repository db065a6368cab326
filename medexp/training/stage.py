"""One training stage: evaluate its starting point, train, evaluate the best checkpoint, save and log the
adapter. A plain run is a single stage named ""; staged runs call this once per stage."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig


@dataclass
class Stage:
    """One training stage: a plain run is a single stage named ""."""

    name: str
    cfg: DictConfig  # the run's config with this stage's dataset and trainer settings
    data: Any  # PreparedData
    output_dir: Path
    base_eval: bool  # evaluate the untouched base model first (eval/base/*)
    trial: Any = None  # the sweep's TrialReporter, on the stage whose eval_loss it reports


@dataclass
class StageOutcome:
    metrics: dict[str, float]
    model: Any
    steps: int
    curves: dict[str, list[tuple[int, float]]]  # train_loss and eval_loss by step, for the report


def train_stage(stage: Stage, model: Any, tokenizer: Any, precision: str, tracker: Any) -> StageOutcome:
    """Log the stage's data report, evaluate its starting point, train, evaluate the best checkpoint, save the
    adapter into the stage's output dir and log it."""
    from medexp.data import sources
    from medexp.data.report import log_data_report
    from medexp.tracking.callback import MetricsCallback
    from medexp.training.cost import BatchCounter, CostCallback
    from medexp.training.held_out import held_out_metrics
    from medexp.training.progress import TrainProgress
    from medexp.training.trainer import build_trainer

    cfg = stage.cfg
    log_data_report(tracker, stage.data, sources(cfg), stage.output_dir / "data")
    progress = TrainProgress(f"train {stage.name}" if stage.name else "train")
    trainer = build_trainer(
        cfg, model, tokenizer, stage.data, stage.output_dir, precision, [MetricsCallback(tracker), progress]
    )
    trainer.data_collator = counter = BatchCounter(trainer.data_collator)  # the padding the batches carry
    trainer.add_callback(CostCallback(counter, tracker))
    metrics: dict[str, float] = {}
    if stage.base_eval:
        # The adapters start as a no-op (LoRA's B = 0), so this is the base model's score.
        metrics.update(held_out_metrics(trainer, cfg.eval.metrics, prefix="eval/base/"))
    if stage.base_eval or stage.name:
        trainer.evaluate()  # eval_loss at step 0: the curve starts at the base model or the previous stage
    if stage.trial is not None:  # added after the base evaluation: only trained steps are reported
        trainer.add_callback(stage.trial.callback())
    trainer.train()

    best = trainer.state.best_metric  # best eval_loss over the stage; its checkpoint is now loaded
    metrics.update(held_out_metrics(trainer, cfg.eval.metrics))
    tracker.log_metrics(metrics, step=trainer.state.global_step)
    # eval_loss is already a per-step curve in the run; the returned value is its best point.
    metrics["eval_loss"] = best if best is not None else trainer.evaluate()["eval_loss"]

    adapter_dir = stage.output_dir / "adapter"
    trainer.model.save_pretrained(adapter_dir)  # adapter weights only, as safetensors
    tokenizer.save_pretrained(adapter_dir)
    if cfg.tracking.get("log_adapter", False):
        tracker.log_artifacts(adapter_dir, "adapter")
    curves = {
        name: [(h["step"], h[key]) for h in trainer.state.log_history if key in h]
        for name, key in (("train_loss", "loss"), ("eval_loss", "eval_loss"))
    }
    return StageOutcome(metrics, trainer.model, trainer.state.global_step, curves)
