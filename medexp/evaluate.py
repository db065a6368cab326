"""Evaluate a finished run again, without training:

    python -m medexp.evaluate source=<run id | output or adapter dir | models:/name/version> [eval=full ...]

The flow: resolve the source (adapter + the run's config) -> rebuild the run's data split -> base model +
adapter -> held-out loss and perplexity (adapted and base) -> the eval group's suites -> report -> log into
the source's MLflow run (when it has one) and write everything under this command's output directory.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from medexp.config import UserError, run_or_exit

log = logging.getLogger("medexp.evaluate")


def evaluate(cfg: DictConfig) -> dict[str, float]:
    from medexp.config import missing_keys, stage_configs, validate
    from medexp.source import FORMS, absolute_uri, resolve

    if missing_keys(cfg):
        raise UserError(f"source is required. {FORMS}")

    output_dir = Path(cfg.paths.output_dir)
    trained = resolve(str(cfg.source), absolute_uri(str(cfg.tracking.uri)), output_dir / "source")
    run_cfg = trained.config
    with open_dict(run_cfg):
        run_cfg.eval = cfg.eval  # this command's eval group, on the run's model, data and prompts
    validate(run_cfg)
    stage_cfg = stage_configs(run_cfg)[-1][1]  # a staged run is evaluated on its last stage's data

    from medexp.data import load_mixture, load_pairs, prepare_data

    raw = load_pairs(stage_cfg.dataset)
    mixture = load_mixture(run_cfg)

    from medexp.evaluation import held_out_metrics
    from medexp.evaluation.generation import as_base
    from medexp.modeling import resolve_precision
    from medexp.source import load_trained
    from medexp.tracking import MlflowTracker, Tracker
    from medexp.train import evaluate_and_report
    from medexp.training import build_trainer

    precision = resolve_precision(cfg.precision)
    model, tokenizer = load_trained(trained, precision)
    data = prepare_data(raw, stage_cfg.dataset, tokenizer, run_cfg.seed, mixture)

    tracker: Tracker = Tracker()
    curves: dict[str, list[tuple[int, float]]] = {}
    step = 0
    if trained.run_id is not None and trained.tracking_uri is not None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(trained.tracking_uri)
        tracker = MlflowTracker(client, trained.run_id)
        for name in ("train_loss", "eval_loss"):
            curves[name] = [(m.step, m.value) for m in client.get_metric_history(trained.run_id, name)]
        step = max((s for s, _ in curves["eval_loss"]), default=0)
        tracker.set_tags({"medexp.evaluated_with": " ".join(_overrides()) or "eval=default"})

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


def _overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


@hydra.main(version_base="1.3", config_path="pkg://medexp.conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    run_or_exit(evaluate, cfg)


if __name__ == "__main__":
    main()
