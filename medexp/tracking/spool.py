"""What a run could not send to its tracking store, kept in its run directory until it can.

Every call a run makes to MLflow is one record `{"run": id, "op": ..., ...}` applied by `apply()`. While the store
answers, records are applied at once. When it stops answering mid-run (a server gone, a network cut), the run
carries on: the record, and every record after it (order matters: a status must come after the metrics), is
appended to `<run dir>/tracking_spool/records.jsonl`, with a copy of any file it names (the original may be
rewritten later). Every `RETRY_S` seconds the run asks the store again; once it answers, the spool is sent and
the run is back online. What is still spooled at the end is sent by `python -m medexp.sync` (or by a `resume=`).

`sent` in the spool folder counts the records already applied, so a send interrupted half-way goes on from there.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SPOOL_DIR = "tracking_spool"
RETRY_S = 60.0  # how often a run that lost its store asks again: a probe costs at most PROBE_TIMEOUT_S
PROBE_TIMEOUT_S = 2.0
OFFLINE_RUN_PREFIX = (
    "offline-"  # a run created while the store was away: the id it gets on sending replaces this
)

# MLflow's own HTTP retries wait ~4 minutes on a server that went away (7 retries, backoff factor 2): a run would
# stall that long at its next log call. medexp notices within seconds and spools instead; a user's own settings win.
HTTP_RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def unreachable(err: BaseException) -> bool:
    """Whether `err` says the store could not be reached (rather than that it refused the request)."""
    import requests
    from mlflow.exceptions import MlflowException, RestException

    if isinstance(err, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
        return True
    if isinstance(err, MlflowException) and not isinstance(err, RestException):
        message = str(err.message)
        return bool(
            re.search(r"failed with (timeout )?exception", message)
            or re.search(r"failed with error code 5\d\d", message)
        )
    return False


def apply(client: Any, record: dict[str, Any], files: Path | None = None) -> str | None:
    """Carry out one record with an MlflowClient; returns the new run's id for `create_run`."""
    from mlflow.entities import Metric, Param, RunTag

    op, run_id = record["op"], record["run"]
    if op == "log_batch":
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, ts, step) for k, v, ts, step in record.get("metrics", [])],
            params=[Param(k, v) for k, v in record.get("params", {}).items()],
            tags=[RunTag(k, v) for k, v in record.get("tags", {}).items()],
        )
    elif op == "log_artifact":
        client.log_artifact(run_id, _local(record["path"], files), record.get("artifact_path"))
    elif op == "log_artifacts":
        client.log_artifacts(run_id, _local(record["path"], files), record["artifact_path"])
    elif op == "log_table":
        import pandas as pd

        frame = record["frame"]
        if isinstance(frame, str):  # spooled: the table was written to a file of the spool
            frame = pd.read_json(_local(frame, files), orient="split")
        client.log_table(run_id, data=frame, artifact_file=record["artifact_file"])
    elif op == "log_inputs":
        _log_inputs(client, run_id, record["datasets"])
    elif op == "set_terminated":
        client.set_terminated(run_id, record["status"], end_time=record.get("end_time"))
    elif op == "create_run":
        return client.create_run(
            record["experiment_id"],
            start_time=record["start_time"],
            tags=record["tags"],
            run_name=record["name"],
        ).info.run_id
    else:
        raise ValueError(f"unknown tracking record {op!r}")
    return None


def send(client: Any, spool: Spool | None, record: dict[str, Any]) -> str | None:
    """Apply `record`, through the spool when the run has one (see Spool.send)."""
    return spool.send(client, record) if spool is not None else apply(client, record)


def _local(path: str, files: Path | None) -> str:
    return str(files / path) if files is not None else path


def _log_inputs(client: Any, run_id: str, datasets: list[dict[str, Any]]) -> None:
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    inputs = [
        DatasetInput(Dataset(**{k: v for k, v in d.items() if k != "context"}), [InputTag(MLFLOW_DATASET_CONTEXT, d["context"])])
        for d in datasets
    ]  # fmt: skip
    client.log_inputs(run_id, datasets=inputs)


class Spool:
    """One run directory's tracking calls: sent while the store answers, kept in order while it does not."""

    def __init__(self, run_dir: Path, uri: str) -> None:
        self.dir = Path(run_dir) / SPOOL_DIR
        self.uri = uri
        self.offline_since: float | None = None
        self.reason = ""
        self.ids: dict[str, str] = {}  # placeholder id of a run created offline -> its id once sent
        self._last_probe = 0.0

    @property
    def records(self) -> Path:
        return self.dir / "records.jsonl"

    def pending(self) -> int:
        """How many records wait to be sent."""
        return max(0, _count_lines(self.records) - _sent(self.dir))

    def send(self, client: Any, record: dict[str, Any]) -> str | None:
        """Apply `record` now, or keep it when the store is away (or earlier records still wait)."""
        record = {**record, "run": self.ids.get(record["run"], record["run"])}
        if self.offline_since is not None and not self._back_online(client):
            return self._keep(record)
        try:
            return apply(client, record)
        except Exception as err:
            if not unreachable(err):
                raise
            self.offline_since, self._last_probe = time.time(), time.monotonic()
            self.reason = str(err).splitlines()[0][:300]
            log.warning(
                "the tracking store %s stopped answering (%s); training goes on, and what the run logs is kept "
                "in %s until the store is back",
                self.uri,
                self.reason,
                self.dir,
            )
            return self._keep(record)

    def _keep(self, record: dict[str, Any]) -> str | None:
        """Append the record (with copies of the files it names); a new run gets a placeholder id."""
        self.dir.mkdir(parents=True, exist_ok=True)
        record = dict(record)
        new_id = None
        if record["op"] == "create_run":
            new_id = record["new_id"] = OFFLINE_RUN_PREFIX + uuid.uuid4().hex
        if record["op"] in ("log_artifact", "log_artifacts"):
            record["path"] = self._copy(Path(record["path"]))
        if record["op"] == "log_table":
            name = f"files/{uuid.uuid4().hex}.json"
            (self.dir / "files").mkdir(exist_ok=True)
            record["frame"].to_json(self.dir / name, orient="split")
            record["frame"] = name
        with self.records.open("a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
        return new_id

    def _copy(self, source: Path) -> str:
        name = f"files/{uuid.uuid4().hex}/{source.name}"
        target = self.dir / name
        target.parent.mkdir(parents=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
        return name

    def _back_online(self, client: Any) -> bool:
        """Every RETRY_S: does the store answer again? Then send what waits, and go back online."""
        if time.monotonic() - self._last_probe < RETRY_S:
            return False
        self._last_probe = time.monotonic()
        if probe(self.uri) is not None:
            return False
        try:
            self.ids |= flush(self.dir, client)
        except Exception as err:
            if not unreachable(err):
                raise
            return False
        log.info("the tracking store %s answers again: the runs' spooled records were sent", self.uri)
        self.offline_since = None
        return True

    def finish(self, client: Any) -> None:
        """At the end of the run: one last try to send what waits (without waiting for RETRY_S)."""
        if self.offline_since is None:
            return
        self._last_probe = 0.0
        self._back_online(client)


def probe(uri: str) -> str | None:
    """None when the store at `uri` answers within PROBE_TIMEOUT_S, else why not (servers only: a local
    database is there or not)."""
    if not uri.startswith(("http://", "https://")):
        return None
    from medexp.tracking.preflight import server_health

    status = server_health(uri, PROBE_TIMEOUT_S)
    if isinstance(status, str):
        return status
    return f"HTTP {status}" if status >= 500 else None


def flush(spool_dir: Path, client: Any) -> dict[str, str]:
    """Send the spool's waiting records in order; returns {placeholder id: real id} for runs created on the way.

    Progress is written after each record, so an interrupted flush resumes where it stopped. A fully sent spool
    is renamed `tracking_spool.sent` (kept: the files in it are the run's own)."""
    records_path = spool_dir / "records.jsonl"
    if not records_path.exists():
        return {}
    lines = records_path.read_text(encoding="utf-8").splitlines()
    done = _sent(spool_dir)
    ids = _ids(spool_dir)
    for n, line in enumerate(lines[done:], start=done):
        record = json.loads(line)
        record["run"] = ids.get(record["run"], record["run"])
        new_id = apply(client, record, spool_dir)
        if new_id is not None:
            ids[record["new_id"]] = new_id
            (spool_dir / "ids.json").write_text(json.dumps(ids))
        (spool_dir / "sent").write_text(str(n + 1))
    _rewrite_run_records(spool_dir.parent, ids)
    sent_dir = spool_dir.with_name(SPOOL_DIR + ".sent")
    if sent_dir.exists():
        shutil.rmtree(sent_dir)
    spool_dir.rename(sent_dir)
    return ids


def _rewrite_run_records(run_dir: Path, ids: dict[str, str]) -> None:
    """run.json files (the run's and its stages') that name a placeholder id get the real one."""
    if not ids:
        return
    for path in run_dir.rglob("run.json"):
        text = path.read_text(encoding="utf-8")
        new = text
        for placeholder, real in ids.items():
            new = new.replace(placeholder, real)
        if new != text:
            path.write_text(new, encoding="utf-8")


def _sent(spool_dir: Path) -> int:
    try:
        return int((spool_dir / "sent").read_text())
    except (OSError, ValueError):
        return 0


def _ids(spool_dir: Path) -> dict[str, str]:
    try:
        return json.loads((spool_dir / "ids.json").read_text())
    except (OSError, ValueError):
        return {}


def _count_lines(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def use_short_http_retries() -> None:
    """Make MLflow give up on an unreachable server in seconds (see HTTP_RETRY_DEFAULTS)."""
    import os

    for key, value in HTTP_RETRY_DEFAULTS.items():
        os.environ.setdefault(key, value)
