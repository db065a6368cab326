"""One training stage: evaluate its starting point, train, evaluate the best checkpoint, save and log the
adapter. A plain run is a single stage named ""; staged runs call this once per stage, each in a child MLflow
run. A resumed run skips the stages that finished and continues the one it was in from its last checkpoint."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

log = logging.getLogger("medexp.train")


@dataclass
class Stage:
    """One training stage: a plain run is a single stage named ""."""

    name: str
    cfg: DictConfig  # the run's config with this stage's dataset and trainer settings
    data: Any  # PreparedData
    output_dir: Path
    base_eval: bool  # evaluate the untouched base model first (eval/base/*)
    trial: Any = None  # the sweep's TrialReporter, on the stage whose eval_loss it reports
    resume: bool = False  # part of a resumed run: skip it if it finished, else continue its last checkpoint
    # the safety probes' pass rate of a model (evaluation's, handed in by the command): before and after a dpo stage
    safety_check: Callable[[Any], float] | None = None


@dataclass
class StageOutcome:
    metrics: dict[str, float]
    model: Any
    steps: int
    curves: dict[str, list[tuple[int, float]]]  # train_loss and eval_loss by step, for the report


def run_stage(
    stage: Stage,
    model: Any,
    tokenizer: Any,
    precision: str,
    tracker: Any,
    position: tuple[int, int],
    tags: dict,
) -> StageOutcome:
    """Train one stage of a run (`position` = (its index from 1, the number of stages)): a named stage in a child
    MLflow run of `tracker`'s, with its metrics also logged to the parent as `stages/<name>/*`."""
    from medexp.tracking import flatten, start_run
    from medexp.training.adapter_init import trained_weights_dir
    from medexp.training.resume import load_adapter_weights, read_run_record, read_stage_record, record_run

    done = read_stage_record(stage.output_dir) if stage.resume else None
    if done is not None:  # finished before the run died: its adapter is where the next stage starts
        log.info(
            "stage %s finished before the run stopped: continuing from its adapter", stage.name or "train"
        )
        load_adapter_weights(model, trained_weights_dir(model, stage.output_dir / "adapter"))
        curves = {k: [tuple(p) for p in v] for k, v in done["curves"].items()}
        return StageOutcome(done["metrics"], model, int(done["steps"]), curves)
    if not stage.name:
        return train_stage(stage, model, tokenizer, precision, tracker)

    (i, count), name = position, stage.name
    log.info("stage %d/%d: %s", i, count, name)
    stage_tags = {**tags, "medexp.stage": name, "medexp.stage_index": str(i)}
    stage_tags["medexp.dataset"] = str(stage.cfg.dataset.path or stage.cfg.dataset.name)
    child_id = (read_run_record(stage.output_dir) or {}).get("run_id") if stage.resume else None
    with start_run(
        stage.cfg.tracking, stage_tags, f"stage_{i}_{name}", parent=tracker, resume=child_id
    ) as child:
        stage.output_dir.mkdir(parents=True, exist_ok=True)
        record_run(stage.output_dir, child.run_id, stage.cfg.tracking)
        if child_id is None:
            child.log_params(flatten(stage.cfg))
        outcome = train_stage(stage, model, tokenizer, precision, child)
    tracker.log_metrics({f"stages/{name}/{k}": v for k, v in outcome.metrics.items()}, step=i)
    return outcome


def train_stage(stage: Stage, model: Any, tokenizer: Any, precision: str, tracker: Any) -> StageOutcome:
    """Log the stage's data report, evaluate its starting point, train, evaluate the best checkpoint, save the
    adapter into the stage's output dir and log it. A resumed stage continues from its last checkpoint."""
    from medexp.config.runtime import is_main_process
    from medexp.config.stages import stage_kind
    from medexp.data import sources
    from medexp.data.report import log_data_report
    from medexp.tracking.callback import MetricsCallback
    from medexp.training.adapter_init import save_adapter
    from medexp.training.cost import BatchCounter, CostCallback
    from medexp.training.held_out import held_out_metrics
    from medexp.training.preference import build_dpo_trainer, drop_reference
    from medexp.training.progress import TrainProgress
    from medexp.training.resume import check_checkpoint, last_checkpoint, write_stage_record
    from medexp.training.stopping import GracefulStop
    from medexp.training.trainer import build_trainer

    cfg = stage.cfg
    main_process = is_main_process()  # under torchrun / accelerate, rank 0 alone writes files and draws bars
    checkpoint = last_checkpoint(stage.output_dir / "checkpoints") if stage.resume else None
    if checkpoint is not None:
        check_checkpoint(checkpoint, cfg)
        log.info("resuming %s from %s", stage.name or "training", checkpoint)
    elif main_process:
        log_data_report(tracker, stage.data, sources(cfg), stage.output_dir / "data")
    callbacks = [MetricsCallback(tracker)]
    if main_process:
        callbacks.append(TrainProgress(f"train {stage.name}" if stage.name else "train"))
    preference = stage_kind(cfg) == "dpo"  # DPO: no perplexity, the reference copy, safety before and after
    build = build_dpo_trainer if preference else build_trainer
    trainer = build(cfg, model, tokenizer, stage.data, stage.output_dir, precision, callbacks)
    trainer.data_collator = counter = BatchCounter(trainer.data_collator)  # the padding the batches carry
    trainer.add_callback(CostCallback(counter, tracker))
    metrics: dict[str, float] = {}
    safety_check = (
        preference and cfg.eval.safety.enabled and stage.safety_check and main_process and not checkpoint
    )
    if safety_check:  # what the preference stage is for: the probes' pass rate before it and after
        metrics["safety_pass_rate_before"] = stage.safety_check(trainer.model)
    if (
        stage.base_eval and not preference
    ):  # still B = 0 when resuming: the checkpoint's adapter is loaded by train() below
        # The adapters start as a no-op (LoRA's B = 0), so this is the base model's score.
        metrics.update(held_out_metrics(trainer, cfg.eval.metrics, prefix="eval/base/"))
    if (stage.base_eval or stage.name) and checkpoint is None:
        trainer.evaluate()  # eval_loss at step 0: the curve starts at the base model or the previous stage
    if stage.trial is not None:  # added after the base evaluation: only trained steps are reported
        trainer.add_callback(stage.trial.callback())
    # Ctrl-C / SIGTERM: finish the step, save a checkpoint, end KILLED with how to resume
    stop = GracefulStop()
    trainer.add_callback(stop)
    with stop:
        # From a checkpoint: its adapter, optimizer, scheduler, RNG state and data position (seen batches skipped).
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
    stop.raise_if_stopped(trainer.state.global_step, str(stage.output_dir / "checkpoints"))

    best = trainer.state.best_metric  # best eval_loss over the stage; its checkpoint is now loaded
    if preference:
        drop_reference(trainer.model)
        if safety_check:
            metrics["safety_pass_rate_after"] = stage.safety_check(trainer.model)
    else:  # the answer-token loss and perplexity (a DPO loss has no perplexity; eval_rewards/* are logged)
        metrics.update(held_out_metrics(trainer, cfg.eval.metrics))
    tracker.log_metrics(metrics, step=trainer.state.global_step)
    # eval_loss is already a per-step curve in the run; the returned value is its best point.
    metrics["eval_loss"] = best if best is not None else trainer.evaluate()["eval_loss"]

    curves = {
        name: [(h["step"], h[key]) for h in trainer.state.log_history if key in h]
        for name, key in (("train_loss", "loss"), ("eval_loss", "eval_loss"))
    }
    if main_process:
        adapter_dir = stage.output_dir / "adapter"
        save_adapter(trainer.model, adapter_dir)  # adapter weights only, as safetensors
        tokenizer.save_pretrained(adapter_dir)
        if cfg.tracking.get("log_adapter", False):
            tracker.log_artifacts(adapter_dir, "adapter")
        write_stage_record(stage.output_dir, metrics, trainer.state.global_step, curves)  # this stage is done
    return StageOutcome(metrics, trainer.model, trainer.state.global_step, curves)
