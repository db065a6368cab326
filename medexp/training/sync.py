"""`python -m medexp.sync`: bring the tracking store up to date with runs on this machine.

For every run directory under `runs` (a run's own directory, or a folder holding run directories):
- records the run kept because its store stopped answering mid-run (`tracking_spool/`) are sent, in order;
- a run MLflow still shows RUNNING whose process is gone (kill -9, a lost machine, a crash before the final status
  went out) is marked KILLED with the tag `medexp.ended`, so the UI does not show it running forever. Continue it
  with `python -m medexp.train resume=<run dir>`.
A run whose process still runs is left alone: it sends its own records.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from medexp.config import UserError
from medexp.training.resume import process_alive
from medexp.training.run_record import RUN_RECORD, read_run_record


@dataclass
class Synced:
    run_dir: Path
    what: str  # one line: what was done, or why nothing was
    failed: bool = False


def run_dirs(root: Path) -> list[Path]:
    """The run directories (those with a run.json) at or under `root`, parents before their stages."""
    if not root.exists():
        raise UserError(
            f"runs={root} does not exist. Give a run's output directory (the one holding run.json) or a folder "
            "of runs, e.g. runs=outputs."
        )
    found = sorted({path.parent for path in root.rglob(RUN_RECORD)})
    if not found:
        raise UserError(
            f"runs={root} holds no medexp run (no {RUN_RECORD} at or under it). Give a run's output directory or "
            "a folder of runs, e.g. runs=outputs."
        )
    return found


def sync_runs(root: Path, mark_stale: bool) -> list[Synced]:
    """Sync every run under `root`; a run whose store cannot be reached is reported, and the others go on."""
    from medexp.tracking.spool import unreachable, use_short_http_retries

    use_short_http_retries()
    results = []
    for run_dir in run_dirs(root):
        try:
            results.append(sync_run(run_dir, mark_stale))
        except Exception as err:
            if not unreachable(err):
                raise
            why = str(err).splitlines()[0][:200]
            results.append(Synced(run_dir, f"not synced: its tracking store does not answer ({why})", True))
    return results


def sync_run(run_dir: Path, mark_stale: bool) -> Synced:
    from medexp.tracking.client import client_for
    from medexp.tracking.spool import Spool, flush, probe

    record = read_run_record(run_dir) or {}
    uri, alive = record.get("tracking_uri"), process_alive(record)
    if not uri or not record.get("run_id"):
        return Synced(run_dir, "nothing to do: the run was not tracked (tracking=none)")
    if alive:
        return Synced(
            run_dir, f"left alone: its process {record['pid']} is still running and logs for itself"
        )
    why = probe(uri)
    if why is not None:
        return Synced(run_dir, f"not synced: its tracking store {uri} does not answer ({why})", True)
    client = client_for(uri)
    done = []
    spool = Spool(run_dir, uri)
    waiting = spool.pending()
    if waiting:
        flush(spool.dir, client)
        record = read_run_record(run_dir) or record  # a run created offline now has its real id
        done.append(f"sent {waiting} spooled tracking records")
    run_id = record["run_id"]
    status = client.get_run(run_id).info.status
    if status == "RUNNING" and mark_stale and alive is False:
        client.set_tag(
            run_id, "medexp.ended", f"process {record['pid']} on {record['host']} gone; marked by sync"
        )
        client.set_terminated(run_id, "KILLED", end_time=int(time.time() * 1000))
        done.append(f"marked KILLED (process {record['pid']} is gone; continue it with resume={run_dir})")
        status = "KILLED"
    elif status == "RUNNING" and alive is None:
        done.append(
            f"RUNNING, started on {record.get('host')}: only that machine can tell whether it still runs"
        )
    what = "; ".join(done) or "up to date"
    return Synced(run_dir, f"{what} (MLflow run {run_id}: {status})")
