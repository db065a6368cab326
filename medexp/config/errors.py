"""The error type for bad input, and the paragraphs medexp prints for it.

`UserError` carries one paragraph the user can act on; `exit_with` prints it as `medexp: error: <paragraph>` on
stderr and exits 2, with no traceback; `describe_config_error` turns a config error from Hydra or OmegaConf
(unknown key, wrong type, unknown option) into such a paragraph. The commands' entry decorator, which routes
every error here, is medexp/config/command.py. Imports nothing of medexp, so any module may use it.
"""

from __future__ import annotations

import difflib
import re
import sys
from typing import Any

EXIT_USER_ERROR = 2


class UserError(Exception):
    """Bad input the user can fix. Its message is a complete paragraph; no traceback is shown."""


def exit_with(err: BaseException | str, status: int = EXIT_USER_ERROR) -> None:
    """Print the one-paragraph message of a user's mistake (or of a stopped sweep) and exit with `status`."""
    print(f"medexp: error: {err}", file=sys.stderr)
    sys.exit(status)


class Stopped(KeyboardInterrupt):
    """Training stopped by a signal (Ctrl-C, SIGTERM) after saving a checkpoint: the run ends KILLED, and the
    command exits 128 + the signal number after saying how to resume."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = int(signum)


def _origin(message: str) -> str:
    """Where Hydra says a config error came from: a command-line override or a config file."""
    for pattern, template in (
        (r"Error merging override (\S+)", "the command-line override {}"),
        (r"Could not override '([^']+)'", "the command-line override of {}"),
        (r"Could not append to config\. An item is already at '([^']+)'", "the command-line override +{}"),
        (r"In '([^']+)'", "the config file {}.yaml (in conf/ or a hydra.searchpath directory)"),
        (r"Error merging '([^']+)'", "the config file {}.yaml (in conf/ or a hydra.searchpath directory)"),
    ):
        found = re.search(pattern, message)
        if found:
            return template.format(found.group(1))
    return ""


def _override_key(message: str, full_key: str) -> str:
    """The dotted key of the override Hydra names in `message` when it ends with `full_key` (OmegaConf gives a
    new node's key without its parents), else `full_key`."""
    found = re.search(r"override [+~]*(?:[\w/]+@)?([\w.]+)", message)
    if not found:
        return full_key
    key = found.group(1)
    if not full_key or key.endswith(full_key):
        return key
    inside = key.find(f".{full_key}.")  # the error is about a parent of the overridden key
    return key[: inside + 1 + len(full_key)] if inside >= 0 else full_key


def unknown_key_message(full_key: str, valid: list[str], where: str = "") -> str:
    """The paragraph for a key the schema does not know, whether Hydra or `validate` found it."""
    parent, _, key = full_key.rpartition(".")
    node = f"{parent!r}" if parent else "the top level of the config"
    known = f" Valid keys there: {', '.join(valid)}." if valid else ""
    return (
        f"Unknown config key {full_key!r}{where}: {node} has no key {key!r}.{did_you_mean(key, valid)}{known}"
    )


def _valid_keys(object_type: Any) -> list[str]:
    import dataclasses

    if isinstance(object_type, type) and dataclasses.is_dataclass(object_type):
        return [f.name for f in dataclasses.fields(object_type)]
    return []


# Names users bring from peft, HF TrainingArguments, Axolotl or LLaMA-Factory configs -> medexp's key.
KNOWN_ALIASES = {
    "rank": "r",
    "lora_r": "r",
    "lora_alpha": "alpha",
    "lora_dropout": "dropout",
    "lr": "learning_rate",
    "num_train_epochs": "epochs",
    "num_epochs": "epochs",
    "per_device_train_batch_size": "batch_size",
    "micro_batch_size": "batch_size",
    "per_device_eval_batch_size": "eval_batch_size",
    "model_name_or_path": "name_or_path",
    "base_model": "name_or_path",
    "padding_free": "batching",  # medexp's own name until issue 11; `trainer.batching=padding_free` now
    "group_by_length": "batching",
    "packing": "batching",
}


def did_you_mean(word: str, choices: list[str]) -> str:
    """ " Did you mean x?" for the valid names closest to `word` (or its usual name elsewhere), or ""."""
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.6)
    alias = KNOWN_ALIASES.get(word)
    if alias in choices and alias not in close:
        close.insert(0, alias)
    return f" Did you mean {' or '.join(close)}?" if close else ""


# Hydra's launcher plugins, by the option name they add to hydra/launcher, and the package that adds it.
LAUNCHER_PACKAGES = {
    "joblib": "hydra-joblib-launcher",
    "submitit_local": "hydra-submitit-launcher",
    "submitit_slurm": "hydra-submitit-launcher",
    "rq": "hydra-rq-launcher",
    "ray_aws": "hydra-ray-launcher",
}


def describe_config_error(err: BaseException) -> str:
    """One paragraph for a Hydra or OmegaConf config error: which key, where it came from, what would work."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import (
        ConfigAttributeError,
        ConfigKeyError,
        InterpolationResolutionError,
        MissingMandatoryValue,
        OmegaConfBaseException,
        ValidationError,
    )

    # Hydra chains the OmegaConf error as the cause, or (for a config file) only as the context
    cause = err if isinstance(err, OmegaConfBaseException) else (err.__cause__ or err.__context__)
    message = str(err).strip()
    origin = _origin(message)
    where = f" (from {origin})" if origin else ""

    if isinstance(err, MissingConfigException) and err.options is not None:
        group = (err.missing_cfg_file or "").rpartition("/")[0] or "the"
        wanted = (err.missing_cfg_file or "").rpartition("/")[2]
        options = sorted(o for o in err.options if o != "schema")
        if group == "hydra/launcher" and wanted in LAUNCHER_PACKAGES:  # a plugin, not a medexp option
            return (
                f"hydra/launcher={wanted} is a Hydra launcher plugin that is not installed (installed launchers: "
                f"{', '.join(options)}). Install it with pip install {LAUNCHER_PACKAGES[wanted]} (or pip install "
                "-e '.[sweep]'), then run the command again."
            )
        return (
            f"There is no option {wanted!r} in the {group} config group.{did_you_mean(wanted, options)} "
            f"Options: {', '.join(options)} (the YAML files in conf/{group}/, plus any hydra.searchpath directory)."
        )
    if isinstance(err, OverrideParseException):
        return f"{_one_line(message)} Overrides look like key=value, group=option or +key=value."
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and getattr(cause, "key", None) is not None:
        full_key = str(getattr(cause, "full_key", "") or cause.key)
        return unknown_key_message(full_key, _valid_keys(getattr(cause, "object_type", None)), where)
    if isinstance(cause, ValidationError):
        full_key = _override_key(message, str(getattr(cause, "full_key", "") or ""))
        detail = _one_line(str(cause).split("\n")[0]).rstrip(".")
        needs_dataset = re.search(r"not a subclass of (DatasetConfig|StageConfig)", detail)
        if needs_dataset and full_key:
            where_it_goes = f"{full_key}.dataset" if needs_dataset.group(1) == "StageConfig" else full_key
            return (
                f"{full_key}{where} needs a dataset option before anything else ({detail}). Add one first: "
                f"+dataset@{where_it_goes}=<option> (e.g. +dataset@{where_it_goes}=safety), then set its keys."
            )
        return (
            f"Wrong value for {full_key or 'a config key'}{where}: {detail}. Give a value of the key's type "
            "(python -m medexp.<command> --cfg job shows the composed config; medexp/config/schema.py, and "
            "medexp/sweep/schema.py for hydra.sweeper, list every key's type)."
        )
    if isinstance(cause, (InterpolationResolutionError, MissingMandatoryValue)):
        full_key = str(getattr(cause, "full_key", "") or "")
        return (
            f"Cannot resolve config value {full_key or ''}{where}: {_one_line(str(cause).split(chr(10))[0])}."
        )
    return _one_line(message + (f" {cause}" if cause is not None and str(cause) not in message else ""))


def _one_line(text: str) -> str:
    return " ".join(text.split())
