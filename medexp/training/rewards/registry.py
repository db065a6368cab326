"""The `reward` group made into TRL reward functions: each term of `reward.terms` is a reward medexp ships
(REWARDS) or a function of your own by import path (`_target_`), wrapped so that TRL logs it under its name
(rewards/<name>/mean and /std) and so that a function that raises or returns the wrong number of scores stops
the run with one paragraph naming it instead of a traceback from inside the trainer."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from medexp.config.errors import UserError
from medexp.training.rewards import builtin

CALLING = (
    "A reward function takes prompts, completions (and completion_ids) and the prompt data's columns as keyword "
    "lists (gold, reference, answer_kind; accept **kwargs for the rest) and returns one float per completion "
    "(None: not scored)."
)


@dataclass(frozen=True)
class BuiltinReward:
    fn: Callable[..., list[float]]
    needs_gold: bool = False  # scores against a gold option letter or yes/no/maybe
    options: tuple[tuple[str, str], ...] = ()  # (its keyword, the reward group's field) it is called with


REWARDS: dict[str, BuiltinReward] = {
    "choice_correct": BuiltinReward(builtin.choice_correct, needs_gold=True),
    "answer_format": BuiltinReward(builtin.answer_format),
    "length": BuiltinReward(builtin.length, options=(("max_tokens", "length_max_tokens"),)),
    "reference_overlap": BuiltinReward(builtin.reference_overlap),
    "safety": BuiltinReward(builtin.safety, options=(("scorer", "safety_scorer"),)),
}


class Reward:
    """One weighted term: calls its function with the term's options and checks what comes back."""

    def __init__(self, name: str, fn: Callable[..., Any], options: dict[str, Any], source: str) -> None:
        self.__name__ = name  # TRL's metric name: rewards/<name>/mean
        self.key = f"reward.{name}" if source.startswith("medexp's") else f"reward.custom.{name}"
        self.fn, self.options, self.source = fn, options, source

    def __call__(self, prompts: list, completions: list, **columns: Any) -> list[float | None]:
        n = len(completions)
        try:
            scores = self.fn(prompts=prompts, completions=completions, **self.options, **columns)
        except UserError:
            raise
        except Exception as err:
            raise UserError(
                f"The reward {self.key} ({self.source}) raised {type(err).__name__}: {err} "
                f"on a batch of {n} completions. {CALLING} Fix the function, or turn it off."
            ) from err
        try:
            scores = [None if s is None else float(s) for s in scores]
        except (TypeError, ValueError) as err:
            raise UserError(
                f"The reward {self.key} ({self.source}) returned {type(scores).__name__} "
                f"({err}) instead of one number per completion. {CALLING}"
            ) from err
        if len(scores) != n:
            raise UserError(
                f"The reward {self.key} ({self.source}) returned {len(scores)} scores for "
                f"{n} completions. {CALLING}"
            )
        return scores


def resolve(path: str, key: str) -> Callable[..., Any]:
    """The function `path` (module.function) names; one paragraph when it does not import."""
    module, _, attr = str(path).rpartition(".")
    try:
        fn = getattr(importlib.import_module(module), attr) if module else None
    except ImportError as err:
        raise UserError(
            f"{key}={path} does not import: {err}. Give module.function of an importable module."
        ) from err
    except AttributeError:
        fn = None
    if not callable(fn):
        raise UserError(f"{key}={path} is not a function: give module.function, e.g. mypkg.rewards.brevity.")
    return fn


def terms(reward: DictConfig) -> list[tuple[str, float, str | None]]:
    """(name, weight, import path or None for medexp's own) of every reward on: medexp's with a nonzero weight
    (in REWARDS' order), then the `custom` ones."""
    out = [(name, float(reward[name]), None) for name in REWARDS if reward[name] != 0]
    for name, entry in reward.custom.items():
        entry = entry if isinstance(entry, DictConfig) else {}
        target, weight = entry.get("_target_"), entry.get("weight", 1.0)
        if not target or not isinstance(weight, (int, float)) or set(entry) - {"_target_", "weight"}:
            raise UserError(
                f"reward.custom.{name} must be {{_target_: module.function, weight: number}}, got "
                f"{dict(entry) or reward.custom[name]}. For example "
                f"+reward.custom.{name}='{{_target_:mypkg.rewards.{name},weight:0.5}}'."
            )
        out.append((str(name), float(weight), str(target)))
    return out


def check_rewards(reward: DictConfig, answer_kind: str, stage: str) -> None:
    """Refuse a grpo stage with no rewards, a custom reward that does not import, or a reward needing a gold
    answer on data that has none (unknown names are the schema's to refuse). Cheap: imports only the named
    functions' modules."""
    on = terms(reward)
    if not on:
        raise UserError(
            f"stages.{stage}.kind=grpo needs rewards to learn from, but every reward weight is 0. Pick a reward "
            "preset (reward=mc for multiple-choice or PubMedQA data, reward=qa for free-text answers) or set "
            f"weights, e.g. reward.answer_format=1 (rewards: {', '.join(REWARDS)}, or your own in reward.custom)."
        )
    for name, _weight, target in on:
        if target is not None:
            resolve(target, f"reward.custom.{name}._target_")
        elif REWARDS[name].needs_gold and answer_kind == "free":
            raise UserError(
                f"reward.{name} scores the chosen option against the gold answer, but stage {stage}'s data has "
                "none (free-text question-answer pairs). Give it multiple-choice data "
                "(dataset.kind=multiple_choice) or decisions (dataset.decision_field, as PubMedQA), or reward "
                f"free text with reference_overlap (reward=qa, reward.{name}=0)."
            )
        elif name == "safety":
            resolve(reward.safety_scorer, "reward.safety_scorer")


def build_rewards(reward: DictConfig) -> tuple[list[Reward], list[float]]:
    """The TRL reward functions of the rewards that are on, and their weights."""
    funcs, weights = [], []
    for name, weight, target in terms(reward):
        if target is not None:
            fn, options, source = resolve(target, f"reward.custom.{name}._target_"), {}, target
        else:
            fn, source = REWARDS[name].fn, f"medexp's {name}"
            options = {option: reward[key] for option, key in REWARDS[name].options}
            if "scorer" in options:
                options["scorer"] = resolve(reward.safety_scorer, "reward.safety_scorer")
        funcs.append(Reward(name, fn, options, source))
        weights.append(weight)
    return funcs, weights
