"""OmegaConf resolvers the YAML files use, and where the package's assets live."""

from __future__ import annotations

from importlib.resources import files

from omegaconf import OmegaConf


def assets_dir() -> str:
    """Where the tiny model and sample data live inside the installed medexp package."""
    return str(files("medexp") / "assets")


def register_resolvers() -> None:
    """`${medexp_assets:}` -> `assets_dir()`; `${medexp_mul:a,b}` -> a x b (e.g. lora.alpha as a multiple of r)."""
    if not OmegaConf.has_resolver("medexp_assets"):
        OmegaConf.register_new_resolver("medexp_assets", assets_dir)
    if not OmegaConf.has_resolver("medexp_mul"):
        OmegaConf.register_new_resolver("medexp_mul", lambda a, b: a * b)
