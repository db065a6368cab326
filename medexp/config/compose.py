"""Composing a run's config in-process, as `python -m medexp.train` would: for notebooks, benchmarks and tests
that call `train(cfg)` themselves."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig


def compose_run_config(overrides: list[str], root: Path, config_name: str = "train") -> DictConfig:
    """The config `python -m medexp.<config_name> *overrides` would run, with outputs, sweeps and the MLflow store
    under `root` and the run's own directory at root/outputs/run. Schema and resolvers are registered first."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from medexp.config.commands import register_configs
    from medexp.config.resolvers import register_resolvers

    register_configs()
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_module("medexp.conf", version_base="1.3"):
        cfg = compose(
            config_name,
            overrides=[
                *overrides,
                f"paths.output_root={root / 'outputs'}",
                f"paths.multirun_root={root / 'multirun'}",
                f"paths.mlruns_dir={root / 'mlruns'}",
            ],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)  # resolves ${hydra:...}, as inside a real run
    with open_dict(cfg):
        cfg.paths.output_dir = str(root / "outputs" / "run")
        del cfg["hydra"]
    return cfg
