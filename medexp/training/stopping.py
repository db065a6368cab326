"""Ctrl-C or SIGTERM (a scheduler's preemption, `kill`) during training: finish the step, save a checkpoint, stop,
and end the run KILLED with the command that resumes it. A second signal stops at once (the last checkpoint then
is the previous one)."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from transformers import TrainerCallback

from medexp.config import Stopped
from medexp.config.runtime import world_size

log = logging.getLogger("medexp.train")
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class GracefulStop(TrainerCallback):
    """Signal handlers installed for the length of `trainer.train()` (`with stop:`), in the main thread (where
    Python delivers signals) of a single-process run."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> GracefulStop:
        # under torchrun / accelerate the launcher forwards signals to every rank at different steps: theirs rule
        if threading.current_thread() is threading.main_thread() and world_size() == 1:
            self._previous = {sig: signal.signal(sig, self._handle) for sig in SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            raise Stopped(f"{signal.Signals(signum).name} again: stopped at once", signum)
        self.received = signal.Signals(signum).name
        log.warning(
            "%s: finishing this step, saving a checkpoint, then stopping (send it again to stop at once)",
            self.received,
        )

    def on_step_end(self, args, state, control, **kwargs):
        if self.received is not None:
            control.should_save = True
            control.should_training_stop = True
            # With save_total_limit=1 the Trainer deletes the newest checkpoint at the end of train() when it is
            # not the best: that is the one this stop saves to resume from.
            args.save_total_limit = None
        return control

    def raise_if_stopped(self, step: int, checkpoints: str) -> None:
        """After `trainer.train()` returned: a signal stopped it, so the run ends here (KILLED), resumable."""
        if self.received is not None:
            signum = signal.Signals[self.received]
            raise Stopped(f"{self.received} at step {step}: checkpoint saved in {checkpoints}", signum)
