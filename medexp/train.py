"""Train one tracked LoRA run: `python -m medexp.train [group=option ...] [key=value ...]`.

The flow, top to bottom: validate the composed config -> read and clean the data (every stage and mixture
source) -> tokenizer -> chat-format, deduplicate, length-filter, split and weight -> open the MLflow run (params,
config) -> base model + LoRA -> per stage (a plain run is one stage): data report -> evaluate the starting
model -> train -> evaluate the best checkpoint -> save and log the adapter -> return the optimized metric.
Stages each get a child MLflow run and continue from the previous stage's adapter.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from medexp.config import UserError, command, exit_with, task_overrides, validate
from medexp.config.runtime import check_launch, is_main_process
from medexp.console import announce_choices

log = logging.getLogger("medexp.train")


@dataclass
class RunResult:
    metrics: dict[str, float]
    output_dir: Path
    adapter_dir: Path
    run_id: str | None = None
    pruned_at: int | None = None  # the step at which an Optuna trial was pruned
    model: Any = field(default=None, repr=False)  # the trained PEFT model, for callers that keep going


def train(cfg: DictConfig) -> RunResult:
    """Run the whole flow for one composed config; returns metrics incl. `cfg.optimized_metric`.

    With `resume=<run dir or run id>`, the flow is the same, on that run's saved config: finished stages are
    skipped, the current one continues from its last checkpoint, in the same directory and MLflow run."""
    _validate(cfg)
    resuming = bool(cfg.resume)
    if resuming:
        from medexp.training.resume import find_run

        found = find_run(cfg.resume, str(cfg.tracking.uri), task_overrides(), cfg.get("optuna"))
        if found.finished:
            log.info("the run in %s finished already: nothing to resume", found.run_dir)
            return RunResult(found.metrics, found.run_dir, found.run_dir / "adapter", found.run_id)
        log.info("resuming the run in %s", found.run_dir)
        cfg = found.config
        _validate(cfg)
    check_launch()
    main_process = is_main_process()  # torchrun / accelerate: only rank 0 tracks, writes reports and adapters
    if main_process:
        announce_choices()  # the run's first line: which option of each config group it composed
    else:
        logging.getLogger("medexp").setLevel(logging.WARNING)  # one console voice per launch
    from medexp.config import stage_configs
    from medexp.data import load_mixture, load_pairs, prepare_data
    from medexp.evaluation.suites import check_inputs
    from medexp.training.preflight import preflight

    check_inputs(cfg.eval)
    output_dir = Path(cfg.paths.output_dir)
    preflight(cfg, output_dir)  # store, output folder, offline model, module names: in seconds

    # Read + find columns + drop empty rows for every source: bad data fails before any model is loaded.
    stages = stage_configs(cfg)  # [("", cfg)] for a plain run; one config per stage otherwise
    mixture = load_mixture(cfg)  # extra datasets trained with each stage's own, by weight
    raws = [load_pairs(s.dataset, f"stages.{name}.dataset" if name else "dataset") for name, s in stages]

    # Heavy imports only now that the config and the data are known to be sound.
    from transformers import set_seed

    from medexp.evaluation.pipeline import evaluate_and_report
    from medexp.evaluation.suites import safety_pass_rate
    from medexp.sweep.trial import connect_trial
    from medexp.tracking import flatten, run_tags, start_run
    from medexp.training.adapter_init import save_adapter
    from medexp.training.model import load_model, load_tokenizer, resolve_precision
    from medexp.training.resume import record_run
    from medexp.training.stage import Stage, run_stage

    precision = resolve_precision(cfg.trainer.precision)
    tokenizer = load_tokenizer(cfg.model)
    datas = [
        prepare_data(raw, s.dataset, tokenizer, cfg.seed, mixture)
        for raw, (_, s) in zip(raws, stages, strict=True)
    ]
    trial = connect_trial(cfg.get("optuna"))  # the Optuna trial this run is, in a sweep; else None

    config_path = output_dir / "config.yaml"
    if main_process and not resuming:
        OmegaConf.save(cfg, config_path, resolve=True)
    tags = run_tags(cfg, stages, [d.fingerprint for d in datas], task_overrides())
    if trial is not None:
        tags |= trial.run_tags()
    run_name = f"trial_{trial.number}" if trial is not None else None
    resume_id = found.run_id if resuming else None  # run.json as find_run read it
    # a store lost mid-run: what the run could not send waits in its directory (medexp.sync sends it)
    spool_dir = output_dir if main_process else None
    with start_run(cfg.tracking, tags, run_name, resume=resume_id, spool_dir=spool_dir) as tracker:
        # Lets `source=`/`resume=` find the run again from its output dir (medexp.evaluate, export, ...).
        record_run(output_dir, tracker.run_id, cfg.tracking)
        if not resuming:
            tracker.log_params(flatten(cfg))
            tracker.log_artifact(config_path)
        if trial is not None:
            trial.attach_run(tracker.run_id)

        # Seeded here, not earlier: MLflow draws generated run names from the same global RNG.
        set_seed(cfg.seed)
        model = load_model(cfg.model, cfg.lora, precision, cfg.trainer.gradient_checkpointing)
        metrics: dict[str, float] = {}
        steps = 0
        for i, ((name, stage_cfg), data) in enumerate(zip(stages, datas, strict=True)):
            last = i == len(stages) - 1
            stage = Stage(
                name=name,
                cfg=stage_cfg,
                data=data,
                output_dir=output_dir / "stages" / name if name else output_dir,
                base_eval=i == 0 and bool(cfg.eval.before_training),  # the untouched model, before stage 1
                trial=trial if last else None,  # a sweep prunes on the final stage's eval_loss only
                resume=resuming,
                safety_check=partial(safety_pass_rate, stage_cfg, tokenizer=tokenizer),  # dpo stages
            )
            outcome = run_stage(stage, model, tokenizer, precision, tracker, (i + 1, len(stages)), tags)
            model = outcome.model  # the next stage continues from this stage's (best) adapter
            metrics = outcome.metrics
            steps += outcome.steps

        if len(stages) > 1:  # the parent run carries the final stage's metrics and the final adapter
            tracker.log_metrics({k: v for k, v in metrics.items() if k != "eval_loss"}, step=steps)
            tracker.log_metrics({"eval_loss": metrics["eval_loss"]}, step=steps)
        adapter_dir = output_dir / "adapter"
        if (
            not main_process
        ):  # the other ranks' part ends with training (every evaluation in it is collective)
            return RunResult(metrics, output_dir, adapter_dir)
        # Generation, multiple choice, out-of-domain and safety suites: once, on the final model.
        metrics |= evaluate_and_report(
            stages[-1][1], model, tokenizer, datas[-1], metrics, outcome.curves, output_dir, tracker, steps
        )
        if len(stages) > 1 or not (adapter_dir / "adapter_config.json").exists():
            save_adapter(model, adapter_dir)
            tokenizer.save_pretrained(adapter_dir)
        if len(stages) > 1 and cfg.tracking.get("log_adapter", False):
            tracker.log_artifacts(adapter_dir, "adapter")
        if trial is not None:
            trial.finish(tracker, steps=steps, metrics=metrics)
    record_run(output_dir, tracker.run_id, cfg.tracking, finished=True, metrics=metrics)  # resume= says: done

    from medexp.tracking.summary import run_summary

    log.info("%s", run_summary(cfg, metrics, output_dir, adapter_dir, tracker))
    pruned_at = trial.pruned_at if trial is not None else None
    return RunResult(metrics, output_dir, adapter_dir, tracker.run_id, pruned_at, model)


def _validate(cfg: DictConfig) -> None:
    """The train command's checks, all before anything heavy: the config, then the metric it optimizes."""
    from medexp.evaluation.metrics import check_optimized_metric

    validate(cfg)
    check_optimized_metric(cfg)  # the suites say which metrics a run computes: config cannot know them


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
