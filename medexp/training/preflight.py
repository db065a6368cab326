"""What `medexp.train` checks before reading data or loading a model, so that a run that cannot finish fails in
seconds with one paragraph: the precision is one the hardware has, the tracking store answers and can be written,
the output folder can be written, the base model is reachable (from the cache when HF_HUB_OFFLINE=1), the modules
lora.train_modules names exist, a memory budget holds one sequence, torch.compile can run when asked for."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig

from medexp.config import UserError


def preflight(cfg: DictConfig, output_dir: Path) -> None:
    from medexp.tracking.preflight import check_store
    from medexp.training.compile import check_compile
    from medexp.training.memory_plan import check_budget_floor
    from medexp.training.model import check_offline_model, check_train_modules
    from medexp.training.precision import choose_precision

    # a forced bf16 / fp16 the hardware lacks: refused before any file
    choose_precision(cfg.trainer.precision)
    check_compile(cfg.trainer)  # trainer.compile=true without inductor's compiler: refused before any file
    check_store(cfg.tracking)
    check_writable(output_dir, "paths.output_dir")
    check_offline_model(cfg.model)
    check_train_modules(cfg.model, cfg.lora)
    check_budget_floor(cfg)  # trainer.memory_budget_gb below one sequence: refused before anything loads


def check_writable(folder: Path, key: str) -> None:
    """Create `folder` (and its parents) and make sure files can be written in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".medexp_write_check_{os.getpid()}"  # per process: ranks check at once
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise UserError(
            f"{key}={folder}: cannot write there ({err.strerror or err}). Run from a folder you can write to, or "
            f"set paths.output_root=<a writable folder>."
        ) from None
    if not os.access(folder, os.W_OK):
        raise UserError(
            f"{key}={folder} is not writable by this user; set paths.output_root=<a writable folder>."
        )
