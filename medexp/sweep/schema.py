"""The sweeper's typed options (`hydra.sweeper.*`), registered as `hydra/sweeper=medexp_optuna`.

Names follow Hydra's Optuna sweeper. OmegaConf refuses an unknown key, a value of the wrong type or one outside an
Enum (direction, pruner.name) while Hydra composes the config; the checks types cannot express (n_trials >= 1,
...) are the RULES and `check` beside `MedexpOptunaSweeperConf` (medexp/config/rules.py), which the sweeper runs
before it opens the study.
Values live in conf/hparams_search/*.yaml; these defaults only apply to a bare `hydra/sweeper=medexp_optuna`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from omegaconf import DictConfig

from medexp.config.choices import Choice
from medexp.config.errors import UserError
from medexp.config.rules import Rule, Rules, dotted

# Hydra instantiates a plugin only from a class path under `hydra_plugins.`, and only a class it discovered
# there: the shim's subclass of `medexp.sweep.sweeper.MedexpOptunaSweeper`.
PLUGIN_TARGET = "hydra_plugins.medexp_optuna_sweeper.plugin.MedexpOptunaSweeper"


class Direction(Choice):
    minimize = "minimize"  # lower is better (eval_loss)
    maximize = "maximize"  # higher is better (an accuracy)


class PrunerName(Choice):
    hyperband = "hyperband"  # successive halving over several brackets of rungs
    median = "median"  # stop a trial below the median of earlier trials at the same step
    percentile = (
        "percentile"  # stop a trial outside the best `percentile`% of earlier trials at the same step
    )
    none = "none"  # every trial runs to the end


@dataclass
class HyperbandOptions:
    """optuna.pruners.HyperbandPruner's arguments; the defaults are Optuna's."""

    min_resource: int = 1  # the first rung, in optimizer steps: no trial is pruned before it
    max_resource: Any = "auto"  # the last rung, in optimizer steps, or auto (number or word: untyped)
    reduction_factor: int = 3  # keep the best 1/reduction_factor of the trials at each rung
    bootstrap_count: int = 0  # trials a rung waits for before it prunes anything


@dataclass
class MedianOptions:
    """optuna.pruners.MedianPruner's arguments; the defaults are Optuna's."""

    n_startup_trials: int = 5  # no pruning until this many trials have finished: the median needs curves
    n_warmup_steps: int = 0  # no trial is pruned before this step
    interval_steps: int = 1  # consider pruning every this many reported steps
    n_min_trials: int = 1  # trials that must have reported a step before one is pruned at it


@dataclass
class PercentileOptions:
    """optuna.pruners.PercentilePruner's arguments; the defaults are Optuna's, percentile aside."""

    percentile: float = 25.0  # keep a trial while it is within the best this-many percent at its step
    n_startup_trials: int = 5  # no pruning until this many trials have finished
    n_warmup_steps: int = 0  # no trial is pruned before this step
    interval_steps: int = 1  # consider pruning every this many reported steps
    n_min_trials: int = 1  # trials that must have reported a step before one is pruned at it


@dataclass
class PrunerConf:
    """Which pruner stops unpromising trials early, from the eval_loss they report; each one's options."""

    name: PrunerName = PrunerName.median  # the pruner the study uses; the other's options are ignored
    hyperband: HyperbandOptions = field(default_factory=HyperbandOptions)  # used when name=hyperband
    median: MedianOptions = field(default_factory=MedianOptions)  # used when name=median
    percentile: PercentileOptions = field(default_factory=PercentileOptions)  # used when name=percentile


def _whole(name: str) -> Rule:
    """`name` is a positive whole number (its type is the schema's: only the range is checked here)."""

    def rule(node: Any, key: str) -> str | None:
        value = node[name]
        return None if value >= 1 else f"{dotted(key, name)} must be a positive whole number, got {value!r}."

    return rule


def _share(name: str) -> Rule:
    """`name` is a share, from 0 to 1."""

    def rule(node: Any, key: str) -> str | None:
        value = node[name]
        return None if 0 <= value <= 1 else f"{dotted(key, name)} must be between 0 and 1, got {value!r}."

    return rule


@dataclass
class MedexpOptunaSweeperConf:
    _target_: str = PLUGIN_TARGET  # the Sweeper class Hydra instantiates with the fields below
    study_name: str = "medexp"  # re-running with the same name and storage resumes the study
    # the study's database URL (sqlite:///..., postgresql://...); null = sqlite:///<sweep dir>/optuna.db
    storage: str | None = None
    direction: Direction = Direction.minimize  # whether optimized_metric should fall or rise
    # a multi-objective study: one direction per name of a list optimized_metric (e.g. [minimize, maximize] for
    # [eval_loss, eval/safety_pass_rate]); the result is a Pareto front. null = single-objective (`direction`)
    directions: list[Direction] | None = None
    # metrics each trial must meet, e.g. ["eval/safety_pass_rate >= 0.9"]: the best trial is the best feasible one
    constraints: list[str] = field(default_factory=list)
    n_trials: int = 20  # the study's total, across resumes and workers: finished trials are not run again
    n_jobs: int = 1  # trials launched together per batch (in parallel only with a parallel launcher)
    max_failure_rate: float = 0.5  # stop the sweep once more than this share of n_trials has failed
    # an Optuna sampler, instantiated by Hydra from its _target_ (any keyword arguments of that class)
    sampler: Any = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": None})
    pruner: PrunerConf = field(default_factory=PrunerConf)  # stops unpromising trials early
    # the search space: key -> override grammar, e.g. choice(4, 8); null drops a key a preset searched
    params: dict[str, str | None] | None = None

    RULES: ClassVar[Rules] = (_whole("n_trials"), _whole("n_jobs"), _share("max_failure_rate"))

    @staticmethod
    def check(node: DictConfig, key: str, root: DictConfig) -> None:
        if node.n_jobs > node.n_trials:
            raise UserError(
                f"{dotted(key, 'n_jobs')}={node.n_jobs} is more than {dotted(key, 'n_trials')}={node.n_trials}: the "
                "surplus jobs would have nothing to run. Set n_jobs to n_trials or fewer."
            )


def register() -> None:
    """Store the schema in Hydra's ConfigStore (idempotent). The plugin shim calls it when Hydra scans it."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(
        group="hydra/sweeper", name="medexp_optuna", node=MedexpOptunaSweeperConf, provider="medexp"
    )
