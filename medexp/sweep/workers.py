"""Which sweeper process runs a trial, whether it is still alive, its heartbeat while trials run, and what becomes
of the trials of a worker that died: they continue from their last checkpoint as new trials."""

from __future__ import annotations

import logging
import os
import socket
import threading
import warnings
from pathlib import Path

from medexp.sweep.search_space import quote_value

log = logging.getLogger(__name__)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def is_alive(worker: str) -> bool:
    """False only when the worker ran on this host and its process is gone."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


class Heartbeat:
    """Keeps recording heartbeats for running trials, so other workers can tell a live sweeper from a dead one."""

    def __init__(self, storage, trial_ids: list[int]) -> None:
        self.storage, self.trial_ids = storage, trial_ids
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self.stop.is_set():
            for trial_id in self.trial_ids:
                self.storage.record_heartbeat(trial_id)
            self.stop.wait(self.storage.get_heartbeat_interval() or 30)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        return False


def mark_interrupted(study, storage) -> None:
    """Running trials whose sweeper died (this host: its pid is gone; elsewhere: no heartbeat for the grace
    period) end FAIL without an error, so they do not count, and are queued again with their params."""
    import optuna

    from medexp.sweep.storage import retry_interrupted
    from medexp.sweep.trial import WORKER_ATTR

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # the storage's heartbeat_stale_trial_callback queues them
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER_ATTR)
        if worker is not None and not is_alive(worker):
            storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
            retry_interrupted()(study, storage.get_trial(trial._trial_id))
            log.info(
                "trial %d was interrupted (its sweeper %s is gone); it continues as a new trial from its last "
                "checkpoint",
                trial.number,
                worker,
            )


def continue_interrupted(storage, trial, sweep_dir: Path, fixed: dict[str, str]) -> list[str] | None:
    """For a queued copy of an interrupted trial: `resume=` of that trial's run (its checkpoint, steps and MLflow
    run: the training run's own resume). None for a new trial, or a copy of one killed before its run began."""
    from medexp.sweep.storage import RETRIED_ATTR

    origin = storage.get_trial_system_attrs(trial._trial_id).get(RETRIED_ATTR)
    if origin is None:
        return None
    run_dir = (sweep_dir / f"trial_{origin}").resolve()
    if not (run_dir / "run.json").is_file():
        log.info("trial %d repeats trial %d, killed before its run started", trial.number, origin)
        return None
    log.info("trial %d continues trial %d (its worker died) in %s", trial.number, origin, run_dir)
    # hparams_search too: the job's Hydra config (hydra.sweeper.*, given on the command line) needs its group
    search = [f"hparams_search={fixed['hparams_search']}"] if "hparams_search" in fixed else []
    return [f"resume={quote_value(run_dir)}", *search]


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them (or nvidia-smi counts them); none on a
    machine without NVIDIA GPUs. Read without importing torch, which would initialise CUDA in the sweeper."""
    import shutil
    import subprocess

    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return [g for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False).stdout
    return [str(i) for i, line in enumerate(listed.splitlines()) if line.startswith("GPU ")]


# Launchers that run a batch's jobs at once on this machine (hydra-joblib-launcher; hydra-submitit-launcher's
# submitit_local). Hydra's basic launcher runs them one by one; submitit_slurm's jobs get their own nodes.
_LOCAL_PARALLEL = ("JoblibLauncher", "LocalLauncher")


def job_share(launcher, jobs: int, slot: int) -> list[str]:
    """Overrides giving job `slot` of `jobs` launched at once its share of this machine: its CPU threads, and on
    the joblib launcher one GPU of those visible (submitit's local executor assigns GPUs itself)."""
    kind = type(launcher).__name__
    if jobs < 2 or kind not in _LOCAL_PARALLEL:
        return []
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    env = {"OMP_NUM_THREADS": str(max(1, cores // jobs))}  # torch threads in every job would oversubscribe
    gpus = visible_gpus()
    if gpus and kind == "JoblibLauncher":
        env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    return [f"++hydra.job.env_set.{key}={value}" for key, value in env.items()]
