"""The sweeper's config, registered as `hydra/sweeper=medexp_optuna`. Names follow Hydra's Optuna sweeper.

No `from __future__ import annotations` here: Hydra executes plugin modules outside sys.modules while
scanning, where @dataclass cannot resolve string annotations.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class MedexpOptunaSweeperConf:
    _target_: str = "hydra_plugins.medexp_optuna_sweeper.sweeper.MedexpOptunaSweeper"
    # Name of the study; re-running with the same name and storage resumes it.
    study_name: str = "medexp"
    # Database URL (sqlite:///..., postgresql://...); null = sqlite:///<sweep dir>/optuna.db.
    storage: Any = None
    # minimize or maximize the value the task returns (optimized_metric).
    direction: str = "minimize"
    # Total trials of the study, counted across resumes and workers: finished trials are not run again.
    n_trials: int = 20
    # Trials launched together per batch (in parallel with a parallel launcher such as joblib or submitit).
    n_jobs: int = 1
    # Stop the sweep once more than this share of n_trials has failed.
    max_failure_rate: float = 0.5
    # An Optuna sampler, instantiated by Hydra from its _target_.
    sampler: Any = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": None})
    # name: median | hyperband | none; each pruner's keyword arguments under its own name.
    pruner: Any = field(default_factory=lambda: {"name": "median", "median": {}, "hyperband": {}})
    # The search space: key -> override grammar, e.g. lora.r: choice(4, 8, 16).
    params: Any = None


ConfigStore.instance().store(
    group="hydra/sweeper", name="medexp_optuna", node=MedexpOptunaSweeperConf, provider="medexp"
)
