"""The records a training run leaves in its output directory: run.json (its MLflow run and store, the process
that ran it, `finished` at the very end) and, per finished stage, stage.json. `source=` finds a run's MLflow run
through the first; `resume=` knows what is done through both (medexp.training.resume)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from omegaconf import DictConfig

RUN_RECORD = "run.json"
STAGE_RECORD = "stage.json"


def record_run(output_dir: Path, run_id: str | None, tracking_cfg: DictConfig, **extra: object) -> None:
    """run.json: lets source=/resume= find the run's MLflow run from its directory, and resume= know its state
    (`finished=True, metrics=...` once the run is complete)."""
    from medexp.config.runtime import is_main_process
    from medexp.tracking.client import absolute_uri

    if not is_main_process():
        return
    record = {
        "run_id": run_id,
        "tracking_uri": absolute_uri(str(tracking_cfg.uri)) if run_id else None,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        **extra,
    }
    write_atomic(output_dir / RUN_RECORD, json.dumps(record, indent=1))


def read_run_record(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / RUN_RECORD).read_text())
    except (OSError, ValueError):
        return None


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # a kill mid-write leaves the previous file, never half of one


def read_stage_record(stage_dir: Path) -> dict | None:
    """A finished stage's metrics, step count and curves, or None if the stage did not finish."""
    path = stage_dir / STAGE_RECORD
    if not path.is_file() or not (stage_dir / "adapter" / "adapter_config.json").is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None


def write_stage_record(stage_dir: Path, metrics: dict, steps: int, curves: dict) -> None:
    write_atomic(stage_dir / STAGE_RECORD, json.dumps({"metrics": metrics, "steps": steps, "curves": curves}))
