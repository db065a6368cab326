"""Train one tracked LoRA run: `python -m medexp.train [group=option ...] [key=value ...]`.

The flow, top to bottom: validate the config and each stage's kind against its data -> read the data -> prepare
it as each stage's kind does -> open the MLflow run -> base model + LoRA -> per stage (a plain run is one, named
stages a child MLflow run each, continuing the previous adapter): train and evaluate as its kind says -> the eval
suites on the final model -> return the optimized metric."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from medexp.config import UserError, command, exit_with, task_overrides, validate
from medexp.config.runtime import check_launch, is_main_process
from medexp.console import announce_choices
from medexp.training.stage import RunResult  # what train() returns

if TYPE_CHECKING:
    from medexp.training.methods import PlannedStage
    from medexp.training.stage import RunContext, StageOutcome

log = logging.getLogger("medexp.train")


def train(cfg: DictConfig) -> RunResult:
    """Run the whole flow for one composed config; returns metrics incl. `cfg.optimized_metric`.

    With `resume=<run dir or run id>`, the flow is the same, on that run's saved config: finished stages are
    skipped, the current one continues from its last checkpoint, in the same directory and MLflow run."""
    plans = _checked(cfg)  # each stage with its kind (medexp.training.methods); a plain run is one stage
    found = None
    if cfg.resume:
        from medexp.training.resume import find_run

        found = find_run(cfg.resume, str(cfg.tracking.uri), task_overrides(), cfg.optuna)
        if found.finished:
            log.info("the run in %s finished already: nothing to resume", found.run_dir)
            return RunResult(found.metrics, found.run_dir, found.run_dir / "adapter", found.run_id)
        log.info("resuming the run in %s", found.run_dir)
        cfg = found.config
        plans = _checked(cfg)
    main_process = _announce()
    output_dir = Path(cfg.paths.output_dir)
    raws, mixture = _read_sources(cfg, plans, output_dir)

    # Heavy imports only now that the config and the data are known to be sound.
    from transformers import set_seed

    from medexp.evaluation.suites import safety_pass_rate, stage_scorer
    from medexp.sweep.trial import connect_trial
    from medexp.tracking import flatten, run_tags, start_run
    from medexp.tracking.summary import run_summary
    from medexp.training.model import load_model, load_tokenizer
    from medexp.training.precision import announce_precision
    from medexp.training.run_record import record_run
    from medexp.training.stage import RunContext, train_stages

    precision, tokenizer = announce_precision(cfg.trainer.precision), load_tokenizer(cfg.model)  # + why
    # each stage's rows as its kind prepares them: chat-formatted pairs, packed text, preference conversations
    datas = [
        p.kind.prepare(raw, p.cfg.dataset, tokenizer, cfg.seed, mixture)
        for raw, p in zip(raws, plans, strict=True)
    ]
    trial = connect_trial(cfg.optuna)  # the Optuna trial this run is, in a sweep; else None

    config_path = output_dir / "config.yaml"
    if main_process and found is None:
        OmegaConf.save(cfg, config_path, resolve=True)
    tags = run_tags(cfg, [(p.name, p.cfg) for p in plans], [d.fingerprint for d in datas], task_overrides())
    # + what trainer.precision resolved to here and why; a sweep's trial tags
    tags |= precision.tags() | (trial.run_tags() if trial is not None else {})
    run_name = f"trial_{trial.number}" if trial is not None else None
    resume_id = found.run_id if found is not None else None  # run.json as find_run read it
    # a store lost mid-run: what the run could not send waits in its directory (medexp.sync sends it)
    spool_dir = output_dir if main_process else None
    with start_run(cfg.tracking, tags, run_name, resume=resume_id, spool_dir=spool_dir) as tracker:
        # Lets `source=`/`resume=` find the run again from its output dir (medexp.evaluate, export, ...).
        record_run(output_dir, tracker.run_id, cfg.tracking)
        if found is None:
            tracker.log_params(flatten(cfg))
            tracker.log_artifact(config_path)
        if trial is not None:
            trial.attach_run(tracker.run_id)

        # Seeded here, not earlier: MLflow draws generated run names from the same global RNG.
        set_seed(cfg.seed)
        model = load_model(cfg.model, cfg.lora, precision.value, cfg.trainer.gradient_checkpointing)
        # evaluation's measures, handed in (training may not import it): safety probes, per-stage mc accuracy
        measures = safety_pass_rate, stage_scorer
        run = RunContext(
            cfg, output_dir, tokenizer, precision.value, tracker, trial, bool(found), tags, *measures
        )
        outcome, steps = train_stages(run, plans, datas, model)  # each continues the previous one's adapter
        metrics, adapter_dir = outcome.metrics, output_dir / "adapter"
        if not main_process:  # the other ranks stop after training (every evaluation in it is collective)
            return RunResult(metrics, output_dir, adapter_dir)
        metrics |= _finish(run, plans, datas[-1], outcome, steps)
    record_run(output_dir, tracker.run_id, cfg.tracking, finished=True, metrics=metrics)  # resume= says: done

    log.info("%s", run_summary(cfg, metrics, output_dir, adapter_dir, tracker, plans[-1].kind.progress))
    pruned_at = trial.pruned_at if trial is not None else None
    return RunResult(metrics, output_dir, adapter_dir, tracker.run_id, pruned_at, outcome.model)


def _checked(cfg: DictConfig) -> list[PlannedStage]:
    """Refuse a bad config in one paragraph before anything heavy: values, the metric it optimizes (the
    evaluation suites say which metrics a run computes), then readers and stage kinds."""
    from medexp.evaluation.metrics import check_optimized_metric
    from medexp.training.methods import check_stages

    validate(cfg)
    check_optimized_metric(cfg)
    return check_stages(cfg)


def _announce() -> bool:
    """Whether this is the main process (rank 0 alone tracks and writes), which prints the config choices line."""
    check_launch()
    if is_main_process():
        announce_choices()
        return True
    logging.getLogger("medexp").setLevel(logging.WARNING)  # one console voice per launch
    return False


def _read_sources(cfg: DictConfig, plans: list[PlannedStage], output_dir: Path) -> tuple[list, list]:
    """Each stage's rows and the mixture's, read and cheaply cleaned: bad data fails before a model is loaded."""
    from medexp.data import load_mixture, load_pairs
    from medexp.evaluation.suites import check_inputs
    from medexp.training.preflight import preflight

    check_inputs(cfg.eval)
    preflight(cfg, output_dir)  # store, output folder, offline model, module names: in seconds
    mixture = load_mixture(cfg)  # extra datasets trained with each sft stage's own, by weight
    raws = [load_pairs(p.cfg.dataset, f"stages.{p.name}.dataset" if p.name else "dataset") for p in plans]
    return raws, mixture


def _finish(
    run: RunContext, plans: list[PlannedStage], data: Any, outcome: StageOutcome, steps: int
) -> dict[str, float]:
    """The eval suites once, on the final model; the final adapter saved; the sweep trial told; all metrics."""
    from medexp.evaluation.pipeline import evaluate_and_report
    from medexp.training.adapter_init import save_adapter

    model, tracker, held_out = outcome.model, run.tracker, outcome.metrics
    adapter_dir = run.output_dir / "adapter"
    metrics = held_out | evaluate_and_report(
        plans[-1].cfg, model, run.tokenizer, data, held_out, outcome.curves, run.output_dir, tracker, steps
    )
    if len(plans) > 1 or not (adapter_dir / "adapter_config.json").exists():
        save_adapter(model, adapter_dir)
        run.tokenizer.save_pretrained(adapter_dir)
    if len(plans) > 1 and run.cfg.tracking.log_adapter:
        tracker.log_artifacts(adapter_dir, "adapter")
    if run.trial is not None:
        run.trial.finish(tracker, steps=steps, metrics=metrics)
    return metrics


@command("train")
def main(cfg: DictConfig) -> float | list[float]:
    """Train and return the optimized metric to Hydra's sweeper; a pruned trial tells Optuna so."""
    result = train(cfg)
    if result.pruned_at is not None:
        import optuna

        raise optuna.TrialPruned(f"pruned at step {result.pruned_at}")  # the sweeper tells Optuna PRUNED
    from medexp.config.metrics import optimized_metrics

    # other ranks of a data-parallel launch stop before the generation suites: nothing to return there
    values = [result.metrics.get(name, float("nan")) for name in optimized_metrics(cfg)]
    return values if len(values) > 1 else values[0]  # several: a multi-objective study


def _check_sweeper_plugin(argv: list[str]) -> None:
    """Hydra 1.3 finds plugins by scanning the hydra_plugins namespace, which a default editable install hides."""
    if not any(a.startswith("hparams_search=") for a in argv):
        return
    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper

    if not any(c.__name__ == "MedexpOptunaSweeper" for c in Plugins.instance().discover(Sweeper)):
        exit_with(
            UserError(
                "Hydra cannot see medexp's Optuna sweeper plugin, which hparams_search needs. Hydra 1.3 finds "
                "plugins by scanning the hydra_plugins package, and setuptools' default editable install hides "
                "it. Reinstall with `pip install -e '.[dev]' --config-settings editable_mode=compat`, or "
                "install without -e."
            )
        )


if __name__ == "__main__":
    _check_sweeper_plugin(sys.argv[1:])
    main()
