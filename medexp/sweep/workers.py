"""Which sweeper process runs a trial, whether it is still alive, and its heartbeat while trials run."""

from __future__ import annotations

import os
import socket
import threading


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
