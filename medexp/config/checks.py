"""`validate(cfg)`: the one check of a composed config, for every command, before anything heavy is loaded.

The schema (medexp/config/schema.py, commands.py) has already refused wrong types and closed-set values while
Hydra composed the config. `validate` adds, in order: keys the schema does not know (added with `+` or carried
in an old run's config.yaml), values still missing, numbers that are not finite, and every range, cross-field,
file and extra check declared beside its dataclass (`RULES` and `check`, run by `check_tree`). Every check is
cheap (no torch, no network, no model) and raises `UserError` with one paragraph naming the bad value and what
would work.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from medexp.config.errors import UserError, unknown_key_message
from medexp.config.rules import check_tree
from medexp.config.tree import leaves, missing_keys


def validate(cfg: DictConfig) -> None:
    """Raise UserError on the first bad value of any command's composed config. Cheap: no torch, no network."""
    for key, valid in unknown_keys(cfg):
        raise UserError(unknown_key_message(key, valid))
    _mixture_sources(cfg)
    missing = missing_keys(cfg)
    if missing:
        raise UserError(_missing_message(cfg, missing))
    for key, value in leaves(cfg, resolve=False):
        if isinstance(value, float) and not math.isfinite(value):  # `x=inf` parses as a float; garbage in
            raise UserError(f"{key} must be a finite number, got {value}. Give a number such as {key}=0.1.")
    check_tree(cfg)


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


def _mixture_sources(cfg: DictConfig) -> None:
    """`mixture.<name>` set key by key (`+mixture.x.weight=2`) instead of from a dataset option."""
    if "mixture" not in cfg:  # only medexp.train's root has a mixture
        return
    for key in [f"mixture.{name}" for name in cfg.mixture]:
        if OmegaConf.is_missing(OmegaConf.select(cfg, key), "system_prompt"):
            raise UserError(
                f"{key} is not a dataset config: add a source with a dataset option, e.g. +dataset@{key}=safety "
                f"(then {key}.weight=2 sets its weight)."
            )


def _missing_message(cfg: DictConfig, missing: list[str]) -> str:
    """The paragraph for required values left at `???`: a root may say why its own fields are needed
    (`REQUIRED`, a field name -> a sentence, e.g. a command's `source`)."""
    required = getattr(OmegaConf.get_type(cfg), "REQUIRED", {})
    explained = next((required[key] for key in missing if key in required), None)
    if explained is not None:
        return explained
    return f"These required config values are missing: {', '.join(missing)}. Set them with key=value."


def looks_like_local_path(name_or_path: str) -> bool:
    """Hub ids are `name` or `namespace/name`; anything else (absolute, ./, ~, deeper nesting) is a path."""
    return (
        name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1 or Path(name_or_path).exists()
    )
