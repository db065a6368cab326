"""What the running command is part of: a Hydra multirun, its overrides and run folder (removed again when the run is
refused before doing anything), a distributed launch and its rank."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from omegaconf import DictConfig

from medexp.config.errors import UserError


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def task_overrides() -> list[str]:
    """The command line's overrides of this job (empty outside a Hydra run)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def hydra_output_dir() -> Path | None:
    """The folder Hydra made for this run (hydra.run.dir), resolved; None outside a Hydra run."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return Path(HydraConfig.get().runtime.output_dir).resolve()


def discard_run_dir(cfg: DictConfig, existing: set[str]) -> None:
    """A run refused before it did anything leaves no folder behind: the run folder Hydra made (when it holds
    only Hydra's own `.hydra/` and log file) goes, with the empty folders above it that this command made."""
    import shutil

    out = hydra_output_dir()
    cwd = Path.cwd().resolve()
    if out is None or out == cwd or out in cwd.parents or not out.is_dir():
        return
    if any(p.name != ".hydra" and not (p.is_file() and p.suffix == ".log") for p in out.iterdir()):
        return  # the command wrote something of its own: keep it
    shutil.rmtree(out, ignore_errors=True)
    root = Path(str(cfg.paths.output_root)).resolve()
    for parent in out.parents:
        if parent == cwd or parent in cwd.parents:
            break  # never the launch directory or above it
        if parent == root:  # paths.output_root itself: only when this command made it
            if parent.parent == cwd and parent.name not in existing:
                _remove_empty(parent)
            break
        if root not in parent.parents or not _remove_empty(parent):
            break


def _remove_empty(folder: Path) -> bool:
    try:
        folder.rmdir()
    except OSError:
        return False
    return True


# --- distributed launches (torchrun, accelerate launch): read from the environment the launcher sets ----------
def world_size() -> int:
    """Processes in the launch (1 without a distributed launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Rank 0 of the launch (or the only process): the one that tracks, writes reports and saves adapters."""
    return int(os.environ.get("RANK", "0")) == 0


def gradient_accumulation(trainer_cfg: DictConfig) -> int:
    """trainer.gradient_accumulation_steps, or what trainer.effective_batch_size needs on this many processes."""
    effective = trainer_cfg.effective_batch_size
    if effective is None:
        return int(trainer_cfg.gradient_accumulation_steps)
    per_step = int(trainer_cfg.batch_size) * world_size()
    if effective % per_step:
        raise UserError(
            f"trainer.effective_batch_size={effective} is not a multiple of trainer.batch_size={trainer_cfg.batch_size} "
            f"x {world_size()} processes = {per_step}, so no whole number of accumulation steps reaches it. Choose an "
            f"effective batch that is (e.g. {max(1, round(effective / per_step)) * per_step}), change "
            "trainer.batch_size, or launch a number of processes that divides it."
        )
    return effective // per_step


def check_launch() -> None:
    """A launch across nodes needs one run directory that every node names: refuse one that would make several.
    A parallel sweep job gets its share of CPU threads (OMP_NUM_THREADS, set per job by the sweeper)."""
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0 and "torch" in sys.modules:
        # a worker process reused for another job: torch read OMP_NUM_THREADS once, when it was first imported
        import torch

        torch.set_num_threads(int(threads))
    nodes_differ = os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")) != os.environ.get(
        "WORLD_SIZE", "1"
    )
    if not nodes_differ:
        return
    from hydra.core.hydra_config import HydraConfig

    given = HydraConfig.get().overrides.hydra if HydraConfig.initialized() else []
    if not any(o.startswith("hydra.run.dir=") for o in given):
        raise UserError(
            f"This launch spans several nodes ({world_size()} processes, {os.environ.get('LOCAL_WORLD_SIZE')} on "
            "this one), and each node would make its own timestamped output directory. Give every node the same "
            "directory on a shared filesystem: hydra.run.dir=/shared/outputs/<job name or id>."
        )
