"""The evaluation pipeline that `python -m medexp.train` runs after training and `python -m medexp.evaluate`
runs on a finished run: the eval group's suites on the trained model, the report, and the MLflow logging."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("medexp.evaluate")


def evaluate_and_report(
    cfg, model, tokenizer, data, held_out: dict[str, float], curves, output_dir: Path, tracker, step: int
) -> dict[str, float]:
    """The eval group's suites on the trained model, logged with the report (which also shows the held-out
    loss and perplexity already measured); returns the suites' metrics."""
    from medexp.evaluation.suites.registry import after_training

    e = cfg.eval
    suites = after_training(e)
    if not suites:
        return {}
    from medexp.data import sources
    from medexp.evaluation.report import log_evaluation, write_report
    from medexp.evaluation.result import EvalResult
    from medexp.evaluation.runner import evaluate_model

    result = evaluate_model(e, model, tokenizer, data, sources(cfg), cfg.seed, suites)
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


def evaluate_source(cfg: DictConfig) -> dict[str, float]:
    """Evaluate a finished run again (`python -m medexp.evaluate`): the run's own config (base model, data split,
    system prompt) with this command's `eval` group, logged into that run when it has one."""
    from medexp.config import stage_configs, task_overrides, validate
    from medexp.data import check_sources
    from medexp.evaluation.metrics import check_optimized_metric
    from medexp.evaluation.suites.registry import check_inputs
    from medexp.training.source import resolve_source

    output_dir = Path(cfg.paths.output_dir)
    trained = resolve_source(cfg, output_dir / "source")
    run_cfg = trained.config
    run_cfg.eval = cfg.eval  # this command's eval group, on the run's model, data and prompts
    validate(run_cfg)
    check_optimized_metric(run_cfg)  # the run's optimized_metric, against this command's eval group
    check_sources(
        run_cfg
    )  # eval.mc.sets too: each kind names a reader that reads its file, before the model loads
    check_inputs(run_cfg.eval)
    stage_cfg = stage_configs(run_cfg)[-1][1]  # a staged run is evaluated on its last stage's data

    from medexp.data import load_mixture, load_pairs, prepare_data

    raw = load_pairs(stage_cfg.dataset)
    mixture = load_mixture(run_cfg)

    from medexp.evaluation.generation import as_base
    from medexp.tracking import MlflowTracker, Tracker
    from medexp.training.held_out import held_out_metrics
    from medexp.training.precision import evaluation_precision
    from medexp.training.source import load_trained
    from medexp.training.trainer import build_trainer

    # auto evaluates as the run trained, so the held-out loss compares with the training's eval_loss
    precision = evaluation_precision(cfg.precision, str(stage_cfg.trainer.precision)).value
    model, tokenizer = load_trained(trained, precision)
    data = prepare_data(raw, stage_cfg.dataset, tokenizer, run_cfg.seed, mixture)

    tracker: Tracker = Tracker()
    curves: dict[str, list[tuple[int, float]]] = {}
    step = 0
    if trained.run_id is not None and trained.tracking_uri is not None:
        from medexp.tracking.client import client_for

        client = client_for(trained.tracking_uri)
        tracker = MlflowTracker(client, trained.run_id)
        for name in ("train_loss", "eval_loss"):
            curves[name] = [(m.step, m.value) for m in client.get_metric_history(trained.run_id, name)]
        step = max((s for s, _ in curves["eval_loss"]), default=0)
        tracker.set_tags({"medexp.evaluated_with": " ".join(task_overrides()) or "eval=default"})

    trainer = build_trainer(stage_cfg, model, tokenizer, data, output_dir, precision, [])
    metrics = held_out_metrics(trainer, run_cfg.eval.metrics)
    if run_cfg.eval.before_training:
        with as_base(model):
            metrics |= held_out_metrics(trainer, run_cfg.eval.metrics, prefix="eval/base/")
    tracker.log_metrics(metrics, step=step)
    metrics |= evaluate_and_report(
        run_cfg, model, tokenizer, data, metrics, curves, output_dir, tracker, step
    )
    OmegaConf.save(run_cfg, output_dir / "config.yaml", resolve=True)
    log.info("%s", "  ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))
    log.info(
        "report in %s%s", output_dir / "eval", f", logged to run {trained.run_id}" if trained.run_id else ""
    )
    return metrics
