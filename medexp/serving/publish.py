"""Exporting a trained model (`python -m medexp.export`): the adapter, optionally one merged checkpoint, a model card; optionally register it
in the MLflow Model Registry and push it to the Hugging Face Hub.

    python -m medexp.export source=<run id | run dir | models:/name/version> output_dir=exports/medquad-lora \\
        [merge=true] [format=gguf gguf.quant=q8_0 | format=gguf_lora] [register=true registered_name=medquad-lora]
        [push_to_hub=true hub_repo=user/medquad-lora]

The flow: resolve the source -> copy the adapter -> (merge: base + adapter -> one safetensors checkpoint with
tokenizer and generation config) -> (format=gguf|gguf_lora: GGUF + Ollama Modelfile, medexp.serving.gguf) ->
model card README.md from the run's config and metrics, with vLLM's serve command or what vLLM refuses
(medexp.serving.vllm_check) -> (register: a model version of the run's adapter) -> (push: upload the folder).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from medexp.config import UserError

log = logging.getLogger("medexp.export")


def run_metrics(trained: Any) -> dict[str, float]:
    """The source run's final metrics from MLflow, or {} when the run was not tracked."""
    if trained.run_id is None or trained.tracking_uri is None:
        return {}
    from medexp.tracking.client import client_for

    return dict(client_for(trained.tracking_uri).get_run(trained.run_id).data.metrics)


def merge(trained: Any, out: Path, name: str = "merged") -> Path:
    """base + adapter folded into one full-precision checkpoint (safetensors) in out/name, with tokenizer and
    generation config. A QLoRA run's base is reloaded unquantized: LoRA deltas cannot be folded into 4-bit weights."""
    from omegaconf import open_dict

    from medexp.training.model import resolve_precision
    from medexp.training.source import load_trained

    with open_dict(trained.config):
        trained.config.lora.quantization = None
    # a GPU's bf16 (fp16 GPUs too: fp16 is too narrow for a merged checkpoint); fp32 on CPUs, where even
    # bf16_autocast keeps fp32 weights
    precision = "fp32" if resolve_precision("auto") in ("fp32", "bf16_autocast") else "bf16"
    model, tokenizer = load_trained(trained, precision)
    merged = model.merge_and_unload()
    target = out / name
    merged.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    if merged.generation_config is not None:
        merged.generation_config.save_pretrained(target)
    return target


def model_card(config: DictConfig, metrics: dict[str, float], merged: bool, run_id: str | None) -> str:
    """README.md: base model, data, hyperparameters, metrics, safety results, intended use and license."""
    from medexp.config import stage_configs

    datasets = [s.dataset for _, s in stage_configs(config)] + list(config.mixture.values())
    model = config.model
    licenses = sorted({str(model.license or "unknown")} | {str(d.license or "unknown") for d in datasets})
    lines = [
        "---",
        f"base_model: {model.name_or_path}",
        f"license: {model.license or 'other'}",
        "library_name: " + ("transformers" if merged else "peft"),
        "tags: [medexp, lora, medical, question-answering]",
        "---",
        "",
        f"# {Path(str(model.name_or_path)).name} + LoRA, fine-tuned with medexp",
        "",
        "## Intended use",
        "",
        "Research and education on medical question answering. **Not for clinical decisions**: answers can be "
        "wrong or out of date, and the model is not a medical device. Anyone with a health problem should see a "
        "qualified clinician; in an emergency, call the local emergency number.",
        "",
        "## Base model",
        "",
        f"`{model.name_or_path}`" + (f" (revision `{model.revision}`)" if model.revision else ""),
        "",
        "## Data",
        "",
        *_data_lines(datasets),
        "",
        "System prompt used in training (apply the same at inference):",
        "",
        "> " + str(config.dataset.system_prompt).strip(),
        "",
        "## Hyperparameters",
        "",
        *_hyperparameter_lines(config),
        "",
        "## Metrics",
        "",
        *_metric_lines(metrics),
        "",
        "## License",
        "",
        f"Weights: the base model's license ({model.license or 'see its model card'}). Training "
        f"data licenses: {', '.join(licenses)}. Check each before redistributing.",
        "",
        "## Provenance",
        "",
        f"MLflow run `{run_id}`." if run_id else "Not tracked in MLflow.",
        "",
    ]
    return "\n".join(lines)


def _data_lines(datasets: list[DictConfig]) -> list[str]:
    """One line per training dataset: where it is from, its license, and its weight in a mixture."""
    return [
        f"- `{d.path or d.name}`" + (f" (subset `{d.subset}`)" if d.subset else "")
        + f": license {d.license or 'not stated'}" + (f", weight {d.weight:g}" if len(datasets) > 1 else "")
        for d in datasets
    ]  # fmt: skip


def _hyperparameter_lines(config: DictConfig) -> list[str]:
    lora, trainer = config.lora, config.trainer
    modules = (
        OmegaConf.to_container(lora.target_modules)
        if OmegaConf.is_list(lora.target_modules)
        else lora.target_modules
    )
    return [
        f"- LoRA: r={lora.r}, alpha={lora.alpha}, dropout={lora.dropout}, target modules {modules}"
        + (f", {lora.quantization.bits}-bit {lora.quantization.quant_type} base (QLoRA)" if lora.quantization else ""),
        f"- learning rate {trainer.learning_rate} ({trainer.lr_scheduler}), "
        + (f"max_steps {trainer.max_steps}" if trainer.max_steps > 0 else f"epochs {trainer.epochs}")
        + f", batch {trainer.batch_size} x {trainer.gradient_accumulation_steps} accumulation, seed {config.seed}",
    ]  # fmt: skip


def _metric_lines(metrics: dict[str, float]) -> list[str]:
    """The metrics table (base model, fine-tuned, change) and the safety probes' table, or what is missing."""
    from medexp.evaluation.report import markdown_rows, metric_table

    table = metric_table({k: v for k, v in metrics.items() if "safety" not in k})
    safety = metric_table({k: v for k, v in metrics.items() if "safety" in k})
    header = ["| metric | base model | fine-tuned | change |", "|---|---|---|---|"]
    lines = []
    if "eval_loss" in metrics:
        lines += [f"Best validation loss during training (answer tokens): {metrics['eval_loss']:.4g}.", ""]
    if table:
        lines += header + markdown_rows(table)
    elif "eval_loss" not in metrics:
        lines.append("No metrics were recorded for this run.")
    lines += ["", "## Safety probes", ""]
    if safety:
        lines += header + markdown_rows(safety)
    else:
        lines.append("Not evaluated. Run `python -m medexp.evaluate source=... eval=safety` before sharing.")
    return lines


def register(trained: Any, name: str, metrics: dict[str, float]) -> Any:
    """A new version of registered model `name` from the run's adapter artifact, tagged with its base model."""
    from mlflow.exceptions import MlflowException

    from medexp.tracking.client import client_for

    if trained.run_id is None or trained.tracking_uri is None:
        raise UserError(
            "register=true needs a tracked run: this source has no MLflow run (trained with tracking=none?). "
            "Give the run id, or an output directory whose run.json names one."
        )
    client = client_for(trained.tracking_uri)
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="LoRA adapters trained with medexp")
    run = client.get_run(trained.run_id)
    tags = {
        "medexp.base_model": str(trained.config.model.name_or_path),
        "medexp.dataset_fingerprint": run.data.tags.get("medexp.dataset_fingerprint", ""),
        "medexp.kind": "peft-lora-adapter",
    }
    tags |= {
        k: f"{v:.6g}"
        for k, v in metrics.items()
        if k in ("eval/loss", "eval/rouge_l", "eval/safety_pass_rate")
    }
    source = f"{run.info.artifact_uri.rstrip('/')}/adapter"
    return client.create_model_version(
        name, source, run_id=trained.run_id, tags=tags,
        description=f"Adapter for {trained.config.model.name_or_path}",
    )  # fmt: skip


def push_to_hub(folder: Path, repo_id: str, private: bool) -> str:
    """Upload the export folder to a Hugging Face Hub model repository (created if missing)."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(
        repo_id=repo_id, folder_path=str(folder), commit_message="Upload from medexp.export"
    )
    return str(getattr(info, "commit_url", info))


def export_gguf(cfg: DictConfig, trained: Any, out: Path) -> Path:
    """format=gguf: the merged model as GGUF (merged/ reused, or a temporary merge); format=gguf_lora: the adapter
    as a GGUF LoRA. A Modelfile beside it (gguf.modelfile) prompts the model in Ollama as it was trained."""
    from medexp.config import trained_system_prompt
    from medexp.serving import gguf, modelfile

    folder, system = out / "gguf", trained_system_prompt(trained.config)
    if cfg.format == "gguf_lora":
        written = gguf.export_gguf_lora(cfg, trained, folder)
        base = gguf.base_model_args(trained)[-1]
        if cfg.gguf.modelfile:
            modelfile.write(
                folder, trained.adapter_dir, Path(base), base, system, adapter=f"./{written.name}"
            )
        return written
    merged = out / "merged" if cfg.merge else merge(trained, out, ".merged")
    try:
        written = gguf.export_gguf(cfg, merged, folder)
        if cfg.gguf.modelfile:
            modelfile.write(folder, merged, merged, f"./{written.name}", system)
    finally:
        if not cfg.merge:
            shutil.rmtree(merged, ignore_errors=True)
    return written


def export(cfg: DictConfig) -> Path:
    """The export command's work, on a config its `validate` has checked (output_dir, registered_name, hub_repo)."""
    from medexp.serving import gguf, vllm_check
    from medexp.training.source import resolve_source

    out = Path(str(cfg.output_dir)).expanduser()
    gguf.preflight(cfg)  # a GGUF export without llama.cpp's converter fails before anything is written
    trained = resolve_source(cfg, out / ".source")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(trained.adapter_dir, out / "adapter", dirs_exist_ok=True)
    OmegaConf.save(trained.config, out / "config.yaml")
    adapter_config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    if (advice := vllm_check.advice(adapter_config)) is not None:
        log.warning(advice)
    if cfg.merge:
        log.info("merged checkpoint in %s", merge(trained, out))
    if cfg.get("format", "hf") != "hf":
        log.info("GGUF and Modelfile in %s", export_gguf(cfg, trained, out))
    metrics = run_metrics(trained)
    card = model_card(trained.config, metrics, bool(cfg.merge), trained.run_id)
    name = f"medexp-{trained.run_id or Path(str(cfg.output_dir)).name}"
    base = str(trained.config.model.name_or_path)
    (out / "README.md").write_text(card + "\n".join(vllm_check.card_lines(base, name, adapter_config)))
    shutil.rmtree(out / ".source", ignore_errors=True)
    if cfg.register:
        version = register(trained, str(cfg.registered_name), metrics)
        log.info("registered models:/%s/%s", cfg.registered_name, version.version)
    if cfg.push_to_hub:
        log.info("pushed to %s", push_to_hub(out, str(cfg.hub_repo), bool(cfg.hub_private)))
    log.info("exported to %s", out)
    return out
