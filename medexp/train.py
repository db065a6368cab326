"""Train one tracked LoRA run: `python -m medexp.train [group=option ...] [key=value ...]`.

The flow, top to bottom: validate the composed config -> read and clean the data (every stage and mixture
source) -> tokenizer -> chat-format, deduplicate, length-filter, split and weight -> open the MLflow run (params,
config) -> base model + LoRA -> per stage (a plain run is one stage): data report -> evaluate the starting
model -> train -> evaluate the best checkpoint -> save and log the adapter -> return the optimized metric.
Stages each get a child MLflow run and continue from the previous stage's adapter.
"""

from __future__ import annotations

import hashlib
import json
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
    from medexp.config import stage_configs
    from medexp.data import load_mixture, load_pairs, prepare_data

    # Read + find columns + drop empty rows for every source: bad data fails before any model is loaded.
    stages = stage_configs(cfg)  # [("", cfg)] for a plain run; one config per stage otherwise
    mixture = load_mixture(cfg)  # extra datasets trained with each stage's own, by weight
    raws = [load_pairs(s.dataset, f"stages.{name}.dataset" if name else "dataset") for name, s in stages]

    # Heavy imports only now that the config and the data are known to be sound.
    from transformers import set_seed

    from medexp.modeling import load_model, load_tokenizer, resolve_precision
    from medexp.source import absolute_uri
    from medexp.sweeping import connect_trial
    from medexp.tracking import flatten, git_commit, start_run

    precision = resolve_precision(cfg.trainer.precision)
    tokenizer = load_tokenizer(cfg.model)
    datas = [
        prepare_data(raw, s.dataset, tokenizer, cfg.seed, mixture)
        for raw, (_, s) in zip(raws, stages, strict=True)
    ]
    trial = connect_trial(cfg.get("optuna"))  # the Optuna trial this run is, in a sweep; else None

    config_path = output_dir / "config.yaml"
    OmegaConf.save(cfg, config_path, resolve=True)
    commit = git_commit()
    tags = {
        "mlflow.source.git.commit": commit,
        "medexp.git_commit": commit,
        "medexp.base_model": str(cfg.model.name_or_path),
        "medexp.dataset": " -> ".join(str(s.dataset.path or s.dataset.name) for _, s in stages),
        "medexp.dataset_fingerprint": _fingerprint([d.fingerprint for d in datas]),
        "medexp.overrides": _hydra_overrides(),
        "medexp.output_dir": str(output_dir.resolve()),
    }
    if len(stages) > 1:
        tags["medexp.stages"] = " -> ".join(name for name, _ in stages)
    if trial is not None:
        tags |= trial.run_tags()
    with start_run(cfg.tracking, tags, f"trial_{trial.number}" if trial is not None else None) as tracker:
        tracker.log_params(flatten(cfg))
        tracker.log_artifact(config_path)
        # Lets `source=<this output dir or its adapter/>` find the run again (medexp.evaluate, export, ...).
        (output_dir / "run.json").write_text(
            json.dumps(
                {
                    "run_id": tracker.run_id,
                    "tracking_uri": absolute_uri(cfg.tracking.uri) if tracker.run_id else None,
                }
            )
        )
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
            )
            if not name:
                outcome = _train_stage(stage, model, tokenizer, precision, tracker)
            else:
                log.info("stage %d/%d: %s", i + 1, len(stages), name)
                stage_tags = {**tags, "medexp.stage": name, "medexp.stage_index": str(i + 1)}
                stage_tags["medexp.dataset"] = str(stage_cfg.dataset.path or stage_cfg.dataset.name)
                with start_run(cfg.tracking, stage_tags, f"stage_{i + 1}_{name}", parent=tracker) as child:
                    child.log_params(flatten(stage_cfg))
                    outcome = _train_stage(stage, model, tokenizer, precision, child)
                tracker.log_metrics({f"stages/{name}/{k}": v for k, v in outcome.metrics.items()}, step=i + 1)
            model = outcome.model  # the next stage continues from this stage's (best) adapter
            metrics = outcome.metrics
            steps += outcome.steps

        if len(stages) > 1:  # the parent run carries the final stage's metrics and the final adapter
            tracker.log_metrics({k: v for k, v in metrics.items() if k != "eval_loss"}, step=steps)
            tracker.log_metrics({"eval_loss": metrics["eval_loss"]}, step=steps)
        # Generation, multiple choice, out-of-domain and safety suites: once, on the final model.
        metrics |= evaluate_and_report(
            stages[-1][1], model, tokenizer, datas[-1], metrics, outcome.curves, output_dir, tracker, steps
        )
        adapter_dir = output_dir / "adapter"
        if len(stages) > 1 or not (adapter_dir / "adapter_config.json").exists():
            model.save_pretrained(adapter_dir)
            tokenizer.save_pretrained(adapter_dir)
        if len(stages) > 1 and cfg.tracking.get("log_adapter", False):
            tracker.log_artifacts(adapter_dir, "adapter")
        if trial is not None:
            trial.finish(tracker, steps=steps)

    log.info("%s", "  ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))
    log.info("adapter saved to %s", adapter_dir)
    pruned_at = trial.pruned_at if trial is not None else None
    return RunResult(metrics, output_dir, adapter_dir, tracker.run_id, pruned_at, model)


def _fingerprint(fingerprints: list[str]) -> str:
    """The data fingerprint of a run: its one stage's, or a digest of the stages' in order."""
    if len(fingerprints) == 1:
        return fingerprints[0]
    return hashlib.sha256(" ".join(fingerprints).encode()).hexdigest()[:16]


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


def _sources(cfg: DictConfig) -> dict[str, DictConfig]:
    return {"dataset": cfg.dataset, **{str(k): v for k, v in (cfg.get("mixture") or {}).items()}}


def evaluate_and_report(
    cfg, model, tokenizer, data, held_out: dict[str, float], curves, output_dir: Path, tracker, step: int
) -> dict[str, float]:
    """The eval group's suites on the trained model, logged with the report (which also shows the held-out
    loss and perplexity already measured); returns the suites' metrics."""
    e = cfg.eval
    if not (e.generation.enabled or e.mc.enabled or e.ood.enabled or e.safety.enabled or e.prompts_file):
        return {}
    from medexp.evaluation.report import log_evaluation, write_report
    from medexp.evaluation.runner import EvalResult, evaluate_model

    result = evaluate_model(e, model, tokenizer, data, _sources(cfg), cfg.seed)
    files = []
    if e.report:
        title = (
            f"medexp evaluation: {cfg.model.name_or_path} + LoRA on {cfg.dataset.path or cfg.dataset.name}"
        )
        shown = {k: v for k, v in held_out.items() if k.startswith("eval/")} | result.metrics
        files = write_report(
            EvalResult(shown, result.rows, result.safety), curves, output_dir / "eval", title
        )
    log_evaluation(tracker, result, files, step)
    return result.metrics


def _train_stage(stage: Stage, model: Any, tokenizer: Any, precision: str, tracker: Any) -> StageOutcome:
    """Log the stage's data report, evaluate its starting point, train, evaluate the best checkpoint, save the
    adapter into the stage's output dir and log it."""
    from medexp.data.report import log_data_report
    from medexp.evaluation import held_out_metrics
    from medexp.tracking import MetricsCallback
    from medexp.training import build_trainer

    cfg = stage.cfg
    log_data_report(tracker, stage.data, _sources(cfg), stage.output_dir / "data")
    trainer = build_trainer(
        cfg, model, tokenizer, stage.data, stage.output_dir, precision, [MetricsCallback(tracker)]
    )
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
