"""`resume=<run directory or MLflow run id>`: continue a training run that died, even by `kill -9`.

What a run leaves on disk for this (all in its output directory):
    config.yaml                   the composed config; a resume runs with it, not with a new composition
    run.json                      the MLflow run id and store, the process that ran it, `finished` at the very end
    [stages/<name>/]checkpoints/  the Trainer's checkpoints (adapter, optimizer, scheduler, RNG, trainer state)
    [stages/<name>/]stage.json    written once a stage's adapter is saved: that stage is done

A checkpoint counts only if its trainer_state.json parses: the Trainer writes that file after the weights,
optimizer, scheduler and RNG state and before it deletes older checkpoints, so a kill during a save leaves the
newest checkpoint without it and the previous one is used.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from medexp.config import UserError
from medexp.training.run_record import RUN_RECORD, read_run_record
from medexp.training.source import RUN_ID, read_run_config

FORMS = (
    "Name the run to resume as resume=<its output directory> (outputs/<date>/<time>, where its config.yaml and "
    "run.json are) or resume=<its MLflow run id> (32 hex characters, looked up in tracking.uri)."
)
# Overrides that may come with resume=: where to look the run id up, where this invocation's own log goes, and
# (from the sweeper, for a trial whose worker died) which Optuna trial the continued run now reports to and the
# hparams_search preset its Hydra config composes with. Anything else would silently not apply, so it is refused.
RESUME_OVERRIDES = ("resume", "tracking.uri", "paths.", "optuna.", "hparams_search=")


@dataclass
class Resumption:
    run_dir: Path
    config: DictConfig  # the run's own composed config, as saved when it started
    run_id: str | None  # its MLflow run, None when it was not tracked
    finished: bool
    metrics: dict[str, float] = field(default_factory=dict)  # the final metrics of a finished run


def find_run(
    address: str, tracking_uri: str, overrides: list[str], trial: DictConfig | None = None
) -> Resumption:
    """The run `resume=` names, with its saved config; UserError when it is not a medexp run to continue.

    `trial`: this invocation's `optuna` node. A sweep retrying a trial whose worker died resumes that trial's run
    as a new Optuna trial (same params, same MLflow run), so the saved config's trial number is replaced."""
    extra = [o for o in overrides if not o.lstrip("+~").startswith(RESUME_OVERRIDES)]
    if extra:
        raise UserError(
            f"resume= continues a run with the config it was started with, so {' '.join(extra)} would not apply. "
            "Drop those overrides to resume, or start a new run with them (its own output directory and MLflow run)."
        )
    address = str(address).strip()
    path = Path(address).expanduser()
    if path.exists():
        run_dir = path
    elif RUN_ID.fullmatch(address):  # the same run-id form source= takes
        run_dir = _output_dir_of(address, tracking_uri)
    else:
        raise UserError(f"resume={address!r} is neither an existing directory nor an MLflow run id. {FORMS}")
    found = _read_run(run_dir.resolve(), address)
    if trial is not None and trial.trial is not None:
        found.config.optuna = trial
    return found


def _output_dir_of(run_id: str, tracking_uri: str) -> Path:
    from mlflow.exceptions import MlflowException

    from medexp.tracking.client import client_for

    try:
        run = client_for(tracking_uri).get_run(run_id)
    except MlflowException as err:
        raise UserError(
            f"resume={run_id!r}: {err.message.splitlines()[0]} (tracking store {tracking_uri}). Check the run id and "
            f"tracking.uri, or give the run's output directory. {FORMS}"
        ) from None
    recorded = run.data.tags.get("medexp.output_dir")
    if not recorded:
        raise UserError(
            f"resume={run_id!r}: MLflow run {run_id} was not started by medexp.train (it has no medexp.output_dir "
            "tag), so there is no checkpoint to continue from."
        )
    if not Path(recorded).is_dir():
        raise UserError(
            f"resume={run_id!r}: the run's output directory {recorded} is not on this machine. Resume on the "
            "machine that trained it, or copy the directory here and give resume=<that directory>."
        )
    return Path(recorded)


def _read_run(run_dir: Path, address: str) -> Resumption:
    config_path, record_path = run_dir / "config.yaml", run_dir / RUN_RECORD
    if not run_dir.is_dir() or not config_path.is_file() or not record_path.is_file():
        raise UserError(
            f"resume={address!r}: {run_dir} is not a medexp training run's output directory (it needs the "
            f"config.yaml and {RUN_RECORD} that medexp.train writes when a run starts). {FORMS}"
        )
    record = read_run_record(run_dir)
    if record is None:
        raise UserError(f"resume={address!r}: {record_path} cannot be read as JSON. {FORMS}")
    config = read_run_config(config_path)
    if record.get("tracking_uri"):  # absolute, so the run's own store is found from any directory
        config.tracking.uri = record["tracking_uri"]
    config.paths.output_dir = str(run_dir)  # the directory may have moved since the run started
    config.resume = None
    _refuse_live_process(record, run_dir)
    return Resumption(
        run_dir, config, record.get("run_id"), bool(record.get("finished")), record.get("metrics") or {}
    )


def _refuse_live_process(record: dict, run_dir: Path) -> None:
    """Two processes writing one run's checkpoints would corrupt them: refuse while the recorded one lives."""
    from medexp.config.runtime import is_main_process

    if not is_main_process():
        return  # rank 0 of the same launch may already have rewritten run.json with its own pid
    if record.get("pid") == os.getpid() or record.get("finished"):
        return
    if process_alive(record):
        raise UserError(
            f"The run in {run_dir} is still being trained by process {record['pid']} on this machine. Wait for it "
            f"to end, or stop it (kill {record['pid']}) and resume again."
        )


def process_alive(record: dict) -> bool | None:
    """Whether the medexp process a run.json names still runs: None when it ran on another machine (or the
    record names none), so this one cannot tell."""
    pid = record.get("pid")
    if not pid or record.get("host") != socket.gethostname():
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False  # no such process (or no /proc): nothing is running the run
    return "medexp" in cmdline


def last_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The newest complete checkpoint-N in the directory (see the module docstring), or None."""
    found = []
    for path in checkpoints_dir.glob("checkpoint-*"):
        step = path.name.removeprefix("checkpoint-")
        if not step.isdigit():
            continue
        try:
            state = json.loads((path / "trainer_state.json").read_text())
        except (OSError, ValueError):
            continue  # being written when the run died: the previous checkpoint is the one to use
        if state.get("global_step") == int(step):
            found.append((int(step), path))
    return max(found)[1] if found else None


def check_checkpoint(checkpoint: Path, cfg: DictConfig) -> None:
    """Refuse a checkpoint whose adapter does not fit the run's model and LoRA settings, before loading it."""
    try:
        adapter = json.loads((checkpoint / "adapter_config.json").read_text())
    except (OSError, ValueError):
        raise UserError(
            f"Checkpoint {checkpoint} holds no readable adapter_config.json, so it is not a medexp LoRA checkpoint. "
            "Delete it to resume from the one before, or start a new run."
        ) from None
    expected = {
        "base_model_name_or_path": str(cfg.model.name_or_path),
        "r": int(cfg.lora.r),
        "lora_alpha": float(cfg.lora.alpha),
    }
    found = {
        "base_model_name_or_path": str(adapter.get("base_model_name_or_path")),
        "r": adapter.get("r"),
        "lora_alpha": float(adapter.get("lora_alpha") or 0),
    }
    wrong = [f"{k} {found[k]!r} (the run's config says {v!r})" for k, v in expected.items() if found[k] != v]
    if wrong:
        raise UserError(
            f"Checkpoint {checkpoint} was not written by this run's model and LoRA settings: {'; '.join(wrong)}. "
            "Its weights and optimizer state cannot continue this run. Remove the foreign checkpoint directory, "
            "or start a new run."
        )


def load_adapter_weights(model, adapter_dir: Path) -> None:
    """Put a saved adapter's weights into the run's PEFT model (a finished stage, when a later one resumes)."""
    from peft import load_peft_weights, set_peft_model_state_dict

    set_peft_model_state_dict(model, load_peft_weights(str(adapter_dir)))
