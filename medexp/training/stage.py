"""One training stage: evaluate its starting point, train, evaluate the best checkpoint, save and log the
adapter. A plain run is a single stage named ""; staged runs call this once per stage, each in a child MLflow
run. A resumed run skips the stages that finished and continues the one it was in from its last checkpoint."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from medexp.training.methods.base import StageKind

log = logging.getLogger("medexp.train")


@dataclass
class Stage:
    """One training stage: a plain run is a single stage named ""."""

    name: str
    cfg: DictConfig  # the run's config with this stage's dataset and trainer settings
    kind: StageKind  # how it trains (medexp.training.methods): its trainer, what is evaluated around it
    data: Any  # PreparedData
    output_dir: Path
    base_eval: bool  # evaluate the untouched base model first (eval/base/*)
    trial: Any = None  # the sweep's TrialReporter, on the stage whose eval_loss it reports
    resume: bool = False  # part of a resumed run: skip it if it finished, else continue its last checkpoint
    # the safety probes' pass rate of a model (evaluation's, handed in by the command): before and after a
    # stage whose kind asks for it (dpo)
    safety_check: Callable[[Any], float] | None = None
    # held-out scores of a model (evaluation's multiple-choice accuracy, eval.mc.each_stage): logged before and
    # after the stage as <name>_before / _after; `before` = the previous stage's, already measured
    score: Callable[[Any], dict[str, float]] | None = None
    before: dict[str, float] | None = None


@dataclass
class RunResult:
    """What medexp.train.train returns."""

    metrics: dict[str, float]
    output_dir: Path
    adapter_dir: Path
    run_id: str | None = None
    pruned_at: int | None = None  # the step at which an Optuna trial was pruned
    model: Any = field(default=None, repr=False)  # the trained PEFT model, for callers that keep going


@dataclass
class StageOutcome:
    metrics: dict[str, float]
    model: Any
    steps: int
    curves: dict[str, list[tuple[int, float]]]  # train_loss and eval_loss by step, for the report
    scores: dict[str, float] | None = None  # Stage.score of the model it ends with (the next stage's before)


@dataclass
class RunContext:
    """What every stage of one run shares."""

    cfg: DictConfig  # the run's config (its stages' configs are in the plans)
    output_dir: Path
    tokenizer: Any
    precision: str
    tracker: Any
    trial: Any  # the sweep's TrialReporter, or None
    resuming: bool
    tags: dict
    # evaluation's safety probes' pass rate (cfg, model, tokenizer=...), handed in by the command, since
    # training may not import evaluation; measured around the stages whose kind asks for it
    safety_probe: Callable[..., float] | None = None
    # evaluation's held-out scorer factory (cfg, data) -> score(model, tokenizer) or None when off
    # (eval.mc.each_stage), used around every stage of a staged run on the final evaluation's questions
    stage_scorer: Callable[..., Any] | None = None


def train_stages(run: RunContext, plans: list, datas: list, model: Any) -> tuple[StageOutcome, int]:
    """Each stage (a `PlannedStage`: name, config, kind) in turn, continuing the previous one's (best) adapter;
    the last stage's outcome and the steps of all. The parent run of a staged run carries the final metrics."""
    steps, score, before = 0, None, None
    if len(plans) > 1 and run.stage_scorer is not None:  # a plain run: eval/base/* and eval/* say the same
        score = run.stage_scorer(plans[-1].cfg, datas[-1])
    for i, (plan, data) in enumerate(zip(plans, datas, strict=True)):
        last = i == len(plans) - 1
        probe = run.safety_probe
        stage = Stage(
            name=plan.name,
            cfg=plan.cfg,
            kind=plan.kind,
            data=data,
            output_dir=run.output_dir / "stages" / plan.name if plan.name else run.output_dir,
            base_eval=i == 0 and bool(run.cfg.eval.before_training),  # the untouched model, before stage 1
            trial=run.trial if last else None,  # a sweep prunes on the final stage's eval_loss only
            resume=run.resuming,
            safety_check=partial(probe, plan.cfg, tokenizer=run.tokenizer) if probe else None,
            score=partial(score, tokenizer=run.tokenizer) if score else None,
            before=before,
        )
        outcome = run_stage(
            stage, model, run.tokenizer, run.precision, run.tracker, (i + 1, len(plans)), run.tags
        )
        model, before = outcome.model, outcome.scores  # the next stage continues this one's (best) adapter
        steps += outcome.steps
    if len(plans) > 1:
        metrics = outcome.metrics
        run.tracker.log_metrics({k: v for k, v in metrics.items() if k != "eval_loss"}, step=steps)
        run.tracker.log_metrics({"eval_loss": metrics["eval_loss"]}, step=steps)
    return outcome, steps


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
    from medexp.training.resume import load_adapter_weights
    from medexp.training.run_record import read_run_record, read_stage_record, record_run

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
    log.info("stage %d/%d: %s (%s; logs %s)", i, count, name, stage.kind.name, ", ".join(stage.kind.logs))
    stage_tags = {
        **tags,
        "medexp.stage": name,
        "medexp.stage_index": str(i),
        "medexp.stage_kind": stage.kind.name,
    }
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
    adapter into the stage's output dir and log it. A resumed stage continues from its last checkpoint. What is
    evaluated around the training is the stage kind's to say (held-out perplexity, safety probes)."""
    from medexp.config.runtime import is_main_process
    from medexp.training.run_record import write_stage_record

    cfg, kind = stage.cfg, stage.kind
    main_process = is_main_process()  # under torchrun / accelerate, rank 0 alone writes files and draws bars
    trainer, checkpoint = _build(stage, model, tokenizer, precision, tracker, main_process)
    metrics: dict[str, float] = {}
    safety_check = (
        kind.safety_probes
        and cfg.eval.safety.enabled
        and stage.safety_check
        and main_process
        and not checkpoint
    )
    if safety_check:  # what a preference stage is for: the probes' pass rate before it and after
        metrics["safety_pass_rate_before"] = stage.safety_check(trainer.model)
    scored = stage.score is not None and main_process
    if scored and (stage.before is not None or not checkpoint):  # a resumed stage's was measured before
        before = stage.before if stage.before is not None else stage.score(trainer.model)
        metrics |= {f"{k}_before": v for k, v in before.items()}
    _evaluate_start(stage, trainer, checkpoint, metrics)
    _train(stage, trainer, checkpoint)

    best = trainer.state.best_metric  # best eval_loss over the stage; its checkpoint is now loaded
    kind.finish(trainer.model)
    if safety_check:
        metrics["safety_pass_rate_after"] = stage.safety_check(trainer.model)
    scores = stage.score(trainer.model) if scored else None
    metrics |= {f"{k}_after": v for k, v in (scores or {}).items()}
    if kind.perplexity:  # the held-out loss and perplexity of the best checkpoint
        from medexp.training.held_out import held_out_metrics

        metrics.update(held_out_metrics(trainer, cfg.eval.metrics))
    tracker.log_metrics(metrics, step=trainer.state.global_step)
    # eval_loss is already a per-step curve in the run; the returned value is its best point.
    metrics |= {"eval_loss": best} if best is not None else _last_evaluation(kind, trainer)

    curves = {
        name: [(h["step"], h[key]) for h in trainer.state.log_history if key in h]
        for name, key in (("train_loss", "loss"), ("eval_loss", "eval_loss"))
    }
    if main_process:
        _save(stage, trainer, tokenizer, tracker)
        write_stage_record(stage.output_dir, metrics, trainer.state.global_step, curves)  # this stage is done
    return StageOutcome(metrics, trainer.model, trainer.state.global_step, curves, scores)


def _build(
    stage: Stage, model: Any, tokenizer: Any, precision: str, tracker: Any, main_process: bool
) -> tuple[Any, Path | None]:
    """The stage kind's trainer with medexp's callbacks, and the checkpoint a resumed stage continues from
    (None for a fresh stage, which logs its data report first)."""
    from medexp.data import sources
    from medexp.data.report import log_data_report
    from medexp.tracking.callback import MetricsCallback
    from medexp.training.cost import BatchCounter, CostCallback
    from medexp.training.progress import TrainProgress
    from medexp.training.resume import check_checkpoint, last_checkpoint

    checkpoint = last_checkpoint(stage.output_dir / "checkpoints") if stage.resume else None
    if checkpoint is not None:
        check_checkpoint(checkpoint, stage.cfg)
        log.info("resuming %s from %s", stage.name or "training", checkpoint)
    elif main_process:
        log_data_report(tracker, stage.data, sources(stage.cfg), stage.output_dir / "data")
    callbacks = [MetricsCallback(tracker)]
    if main_process:
        callbacks.append(TrainProgress(f"train {stage.name}" if stage.name else "train"))
    trainer = stage.kind.build_trainer(
        stage.cfg, model, tokenizer, stage.data, stage.output_dir, precision, callbacks
    )
    plan = getattr(trainer, "memory_plan", None)  # what trainer.memory_budget_gb turned on (SFT trainers)
    if plan is not None and main_process and checkpoint is None:  # a resumed stage logged its plan already
        tracker.log_params(plan.params())
    trainer.data_collator = counter = BatchCounter(trainer.data_collator)  # the padding the batches carry
    trainer.add_callback(CostCallback(counter, tracker))
    return trainer, checkpoint


def _evaluate_start(stage: Stage, trainer: Any, checkpoint: Path | None, metrics: dict[str, float]) -> None:
    """The starting point's held-out metrics (eval/base/*, before stage 1, for kinds with a perplexity) and its
    eval_loss at step 0, so the curve starts at the base model or the previous stage."""
    if stage.base_eval and stage.kind.perplexity:
        from medexp.training.held_out import held_out_metrics

        # The adapters start as a no-op (LoRA's B = 0), so this is the base model's score; still B = 0 when
        # resuming: the checkpoint's adapter is loaded by train() afterwards.
        metrics.update(held_out_metrics(trainer, stage.cfg.eval.metrics, prefix="eval/base/"))
    if (stage.base_eval or stage.name) and checkpoint is None:
        trainer.evaluate()


def _train(stage: Stage, trainer: Any, checkpoint: Path | None) -> None:
    """trainer.train(), from the checkpoint when resuming; Ctrl-C / SIGTERM finish the step, save a checkpoint
    and end KILLED with how to resume."""
    from medexp.training.stopping import GracefulStop

    if stage.trial is not None:  # added after the base evaluation: only trained steps are reported
        trainer.add_callback(stage.trial.callback(*stage.kind.progress))
    stop = GracefulStop()
    trainer.add_callback(stop)
    with stop:
        # From a checkpoint: its adapter, optimizer, scheduler, RNG state and data position (seen batches skipped).
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
    stop.raise_if_stopped(trainer.state.global_step, str(stage.output_dir / "checkpoints"))


def _last_evaluation(kind: Any, trainer: Any) -> dict[str, float]:
    """A kind that keeps its last policy (GRPO: no best checkpoint): eval_loss and its progress metric (GRPO's
    eval_reward) at the last step, reused when the last step evaluated (its rollouts cost minutes on a CPU)."""
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    last = evals[-1] if evals and evals[-1]["step"] == trainer.state.global_step else trainer.evaluate()
    names = {"eval_loss", kind.progress[0]}
    return {name: float(last[name]) for name in names if last.get(name) is not None}  # None: no reward scored


def _save(stage: Stage, trainer: Any, tokenizer: Any, tracker: Any) -> None:
    """The stage's adapter (weights only, as safetensors) and tokenizer, logged when tracking.log_adapter."""
    from medexp.training.adapter_init import save_adapter

    adapter_dir = stage.output_dir / "adapter"
    save_adapter(trainer.model, adapter_dir)
    tokenizer.save_pretrained(adapter_dir)
    if stage.cfg.tracking.log_adapter:
        tracker.log_artifacts(adapter_dir, "adapter")
