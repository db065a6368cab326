"""Bring the tracking store up to date with the runs on this machine:

    python -m medexp.sync [runs=<run dir | folder of runs>] [mark_stale=false]

sends what runs kept in `tracking_spool/` while their store was away (see medexp/tracking/spool.py), and marks
runs whose process is gone (kill -9, a lost machine) KILLED instead of RUNNING. The work is
`medexp.training.sync.sync_runs`; exit status 1 when some run's store still does not answer.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from medexp.config import command, exit_with, validate


@command("sync")
def main(cfg: DictConfig) -> None:
    validate(cfg)
    from medexp.training.sync import sync_runs

    results = sync_runs(Path(cfg.runs), cfg.mark_stale)
    for result in results:
        print(f"{result.run_dir}: {result.what}")
    failed = [r for r in results if r.failed]
    if failed:
        exit_with(
            f"{len(failed)} of {len(results)} runs could not be synced (their tracking store does not answer). "
            "Start the store again and rerun python -m medexp.sync; nothing was lost.",
            status=1,
        )


if __name__ == "__main__":
    main()
