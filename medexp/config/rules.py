"""Range checks a schema dataclass declares beside its fields, and the one walk that runs them.

Types and closed sets are the schema's job (OmegaConf refuses them while Hydra composes). What types cannot say
(a rate in (0, 1), a positive count, two fields that must agree) is declared on the dataclass it belongs to:

    @dataclass
    class LoraConfig:
        r: int = MISSING  # adapter rank
        ...
        RULES: ClassVar[Rules] = (positive("r", 16), between("dropout", 0, 1, high_open=True, hint="0.05 is usual"))

        @staticmethod
        def check(node: DictConfig, key: str, root: DictConfig) -> None:
            ...  # cross-field rules; raise UserError with one paragraph

`check_tree(cfg)` walks a composed config and, for every node whose structured type is such a dataclass, runs
its RULES (each returns a message or None), then the checks of its nested nodes, then its own `check` (given the
node, its dotted key and the root): a cross-field rule may take every part as sound. A `None` value of an
optional field is never checked by a rule: null means "off" or "detect". `require` words a rule's message itself
where the generic wording of `positive`, `at_least` or `between` would not say what the value is for.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from medexp.config.errors import UserError

Rule = Callable[[Any, str], "str | None"]  # (the node, its dotted key) -> a one-paragraph message, or None
Rules = tuple[Rule, ...]


def _value(node: Any, name: str) -> Any:
    return node[name]


def dotted(key: str, name: str) -> str:
    """`trainer` + `learning_rate` -> `trainer.learning_rate`; at the root, the name alone."""
    return f"{key}.{name}" if key else name


def positive(name: str, example: Any, why: str = "") -> Rule:
    """`name` > 0. `why` (a clause) says what the value is for."""

    def rule(node: Any, key: str) -> str | None:
        value = _value(node, name)
        if value is None or value > 0:
            return None
        return f"{dotted(key, name)} must be positive, got {value!r}{': ' + why if why else ''}. For example: {dotted(key, name)}={example}."

    return rule


def at_least(name: str, low: float, example: Any, why: str = "") -> Rule:
    """`name` >= low."""

    def rule(node: Any, key: str) -> str | None:
        value = _value(node, name)
        if value is None or value >= low:
            return None
        return f"{dotted(key, name)} must be >= {low:g}, got {value!r}{': ' + why if why else ''}. For example: {dotted(key, name)}={example}."

    return rule


def between(
    name: str, low: float, high: float, *, low_open: bool = False, high_open: bool = False, hint: str = ""
) -> Rule:
    """low <= `name` <= high, each end open when asked (`low_open`: strictly above low)."""

    def rule(node: Any, key: str) -> str | None:
        value = _value(node, name)
        if value is None:
            return None
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if above and below and math.isfinite(value):
            return None
        span = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        return f"{dotted(key, name)} must be in {span}, got {value!r}.{' ' + hint if hint else ''}"

    return rule


def require(name: str, ok: Callable[[Any], bool], message: str) -> Rule:
    """`ok(value)` must hold for `name`; else `message`, formatted with `key` (the dotted key) and `value`, e.g.
    `require("beta", lambda v: v > 0, "{key} must be positive, got {value}: it is the KL leash ...")`."""

    def rule(node: Any, key: str) -> str | None:
        value = _value(node, name)
        if value is None or ok(value):
            return None
        return message.format(key=dotted(key, name), value=value)

    return rule


def check_tree(cfg: DictConfig, key: str = "", root: DictConfig | None = None) -> None:
    """Run every declared RULES entry and `check` method in `cfg` (a composed config, or one node of it at the
    dotted `key` of `root`), depth first; the first problem raises UserError."""
    _check_node(cfg, f"{key}." if key else "", cfg if root is None else root)


def _check_node(node: Any, key: str, root: DictConfig) -> None:
    if not OmegaConf.is_dict(node):
        return
    kind = OmegaConf.get_type(node)
    for rule in getattr(kind, "RULES", ()):
        message = rule(node, key.rstrip("."))
        if message:
            raise UserError(message)
    for name in node:
        if OmegaConf.is_missing(node, name) or OmegaConf.is_interpolation(node, name):
            continue
        _check_node(node._get_node(name), f"{key}{name}.", root)
    check = getattr(kind, "check", None)
    if check is not None:
        check(node, key.rstrip("."), root)
