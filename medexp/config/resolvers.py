"""OmegaConf resolvers the YAML files use, and where the package's assets live."""

from __future__ import annotations

import os
from datetime import datetime
from importlib.resources import files
from pathlib import Path

from omegaconf import OmegaConf

from medexp.config.errors import UserError


def assets_dir() -> str:
    """Where the tiny model and sample data live inside the installed medexp package."""
    return str(files("medexp") / "assets")


def register_resolvers() -> None:
    """`${medexp_assets:}` -> `assets_dir()`; `${medexp_mul:a,b}` -> a x b (e.g. lora.alpha as a multiple of r);
    `${medexp_started:fmt}` -> `started(fmt)`."""
    if not OmegaConf.has_resolver("medexp_assets"):
        OmegaConf.register_new_resolver("medexp_assets", assets_dir)
    if not OmegaConf.has_resolver("medexp_started"):
        OmegaConf.register_new_resolver("medexp_started", started)
    if not OmegaConf.has_resolver("medexp_mul"):
        OmegaConf.register_new_resolver("medexp_mul", lambda a, b: a * b)


def started(fmt: str) -> str:
    """Like Hydra's `${now:fmt}`, except under a distributed launcher (torchrun, accelerate launch): there every
    process of a node gets the launcher's own start time, so all ranks name the same run directory."""
    if "LOCAL_RANK" not in os.environ:
        return datetime.now().strftime(fmt)
    return _start_time(os.getppid()).strftime(fmt)


def _start_time(pid: int) -> datetime:
    """When process `pid` started (Linux: /proc/<pid>/stat's start tick after boot, plus the boot time)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        stat = Path("/proc/stat").read_text().splitlines()
        boot = next(int(line.split()[1]) for line in stat if line.startswith("btime"))
    except (OSError, StopIteration, IndexError, ValueError):
        raise UserError(
            "Under a distributed launcher every process must name the same run directory, and medexp could not "
            "read the launcher's start time here (no /proc). Give it explicitly: hydra.run.dir=outputs/<a name>."
        ) from None
    return datetime.fromtimestamp(boot + int(fields[19]) / os.sysconf("SC_CLK_TCK"))
