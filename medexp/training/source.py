"""`source=`: the one way every medexp command names a trained model.

    source=<MLflow run id>             a training run in the tracking store (tracking.uri)
    source=<directory>                 a run's output directory, or its adapter/ directory
    source=models:/<name>/<version>    a registered model version (or models:/<name>@<alias>)

Each resolves to the adapter directory, the training run's resolved config (config.yaml, for the base model,
data split and system prompt) and, where there is one, the MLflow run to log into.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from medexp.config import UserError
from medexp.config.commands import SOURCE_FORMS
from medexp.tracking.client import absolute_uri, client_for

RUN_ID = re.compile(r"[0-9a-f]{32}")
FORMS = SOURCE_FORMS  # the forms `source=` takes, as the command roots' schema words them


@dataclass
class TrainedModel:
    adapter_dir: Path
    config: DictConfig  # the training run's resolved config
    run_id: str | None  # the MLflow run to log into; None when the run was not tracked
    tracking_uri: str | None


def resolve_source(cfg: DictConfig, cache_dir: Path) -> TrainedModel:
    """The trained model a command's `source=` names, looked up in its `tracking.uri` store."""
    if OmegaConf.is_missing(cfg, "source"):
        raise UserError(f"source is required. {FORMS}")
    return resolve(str(cfg.source), absolute_uri(str(cfg.tracking.uri)), cache_dir)


def resolve(source: str, tracking_uri: str, cache_dir: Path) -> TrainedModel:
    """Find the adapter and config that `source` names; download them from MLflow where needed."""
    source = str(source).strip()
    path = Path(source).expanduser()
    if path.exists():
        return _from_directory(path)
    if source.startswith("models:/"):
        run_id = _registered_run(source, tracking_uri)
        return _from_run(run_id, tracking_uri, cache_dir)
    if RUN_ID.fullmatch(source):
        return _from_run(source, tracking_uri, cache_dir)
    raise UserError(
        f"source={source!r} is neither an existing directory, a run id nor a models:/ URI. {FORMS}"
    )


def _from_directory(path: Path) -> TrainedModel:
    if (path / "adapter_config.json").is_file():
        adapter_dir, run_dir = path, path.parent
    elif (path / "adapter" / "adapter_config.json").is_file():
        adapter_dir, run_dir = path / "adapter", path
    else:
        raise UserError(
            f"source={str(path)!r} holds no adapter (no adapter_config.json in it or in its adapter/). Give a run's "
            "output directory (outputs/<date>/<time>) or its adapter/ directory."
        )
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise UserError(
            f"source={str(path)!r} has an adapter but no training config.yaml beside it ({config_path}), so the "
            "base model, data split and system prompt are unknown. Use the run's output directory as medexp "
            "wrote it, or the run id."
        )
    from medexp.training.run_record import read_run_record

    run = read_run_record(run_dir) or {}
    return TrainedModel(adapter_dir, read_run_config(config_path), run.get("run_id"), run.get("tracking_uri"))


def _existing_store(tracking_uri: str, source: str) -> Any:
    """A client for the store a source is looked up in; a SQLite store that does not exist is not created."""
    from medexp.tracking.dblock import sqlite_path

    path = sqlite_path(tracking_uri)
    if path is not None and str(path) not in ("", ":memory:") and not path.exists():
        raise UserError(
            f"source={source!r} is looked up in the tracking store {tracking_uri}, which does not exist (no "
            f"database at {path}). Set tracking.uri to the store the run was tracked in, or give the run's output "
            "directory instead."
        )
    return client_for(tracking_uri)


def _registered_run(uri: str, tracking_uri: str) -> str:
    from mlflow.exceptions import MlflowException

    spec = uri.removeprefix("models:/")
    name, sep, alias = spec.partition("@")
    version = None
    if not sep:
        name, _, version = spec.rpartition("/")
    if not name or not (alias or (version or "").isdigit()):
        raise UserError(f"source={uri!r} is not a models:/ URI medexp can read. {FORMS}")
    client = _existing_store(tracking_uri, uri)
    try:
        mv = (
            client.get_model_version_by_alias(name, alias)
            if alias
            else client.get_model_version(name, version)
        )
    except MlflowException as err:
        raise UserError(
            f"source={uri!r}: no such registered model version in {tracking_uri} ({err.message.splitlines()[0]}). "
            "List versions in the MLflow UI's Models tab, or register one with python -m medexp.export register=true."
        ) from None
    if not mv.run_id:
        raise UserError(
            f"source={uri!r}: the model version records no run, so medexp cannot find its adapter."
        )
    return mv.run_id


def _from_run(run_id: str, tracking_uri: str, cache_dir: Path) -> TrainedModel:
    from mlflow.exceptions import MlflowException

    client = _existing_store(tracking_uri, run_id)
    try:
        client.get_run(run_id)
        target = cache_dir / run_id
        target.mkdir(parents=True, exist_ok=True)
        config = client.download_artifacts(run_id, "config.yaml", str(target))
        adapter = client.download_artifacts(run_id, "adapter", str(target))
    except MlflowException as err:
        raise UserError(
            f"source={run_id!r}: {err.message.splitlines()[0]} (tracking store {tracking_uri}). Check the run id "
            "and tracking.uri; the run must have logged config.yaml and adapter/ (tracking.log_adapter=true)."
        ) from None
    return TrainedModel(Path(adapter), read_run_config(Path(config)), run_id, tracking_uri)


def read_run_config(path: Path) -> DictConfig:
    """A training run's saved config.yaml, typed by the train schema, so commands read it as train reads its own."""
    from omegaconf.errors import OmegaConfBaseException

    from medexp.config import TrainConfig, describe_config_error

    try:
        return OmegaConf.merge(OmegaConf.structured(TrainConfig), OmegaConf.load(path))
    except OmegaConfBaseException as err:
        raise UserError(
            f"The run's config {path} does not fit this medexp version's schema: {describe_config_error(err)} "
            "Was the run trained with another medexp version? Evaluate it with that version."
        ) from None


def load_trained(trained: TrainedModel, precision: str, trainable: bool = False):
    """(PEFT model = base + the adapter, tokenizer saved with the adapter)."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    from medexp.training.model import load_base_model

    tokenizer = AutoTokenizer.from_pretrained(str(trained.adapter_dir))
    base = load_base_model(trained.config.model, trained.config.lora, precision)
    return PeftModel.from_pretrained(base, str(trained.adapter_dir), is_trainable=trainable), tokenizer
