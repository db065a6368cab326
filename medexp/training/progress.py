"""The one progress bar of training: steps done / total, train loss, the last eval_loss, tokens/s and ETA.

It replaces the Trainer's own bars and printed log dicts (build_trainer sets disable_tqdm and removes the
PrinterCallback). The logs themselves still reach MLflow through MetricsCallback; here each one is also logged
at DEBUG, so `hydra.verbose=medexp` shows them in the console and train.log.
"""

from __future__ import annotations

import contextlib
import logging
import time

from transformers import TrainerCallback

from medexp.console import redirect_console_logging

log = logging.getLogger(__name__)


class TrainProgress(TrainerCallback):
    """A tqdm bar over the optimizer steps of `trainer.train()`; evaluations before training show nothing."""

    def __init__(self, desc: str = "train") -> None:
        self.desc = desc
        self.bar = None
        self._redirect = contextlib.ExitStack()
        self._postfix: dict[str, str] = {}
        self._step_started: float | None = None
        self._step_seconds = 0.0  # time inside optimizer steps: tokens/s leaves evaluations and saves out
        self._tokens_at_start = 0
        self._evaluating = False

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        from tqdm.auto import tqdm

        self._redirect.enter_context(redirect_console_logging())
        self.bar = tqdm(
            total=state.max_steps, initial=state.global_step, desc=self.desc, unit="step", dynamic_ncols=True
        )
        self._postfix = {}
        self._step_seconds, self._tokens_at_start = 0.0, state.num_input_tokens_seen

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is None:
            return
        if self._step_started is not None:
            self._step_seconds += time.perf_counter() - self._step_started
            self._step_started = None
        tokens = state.num_input_tokens_seen - self._tokens_at_start
        if tokens > 0 and self._step_seconds > 0:
            self._postfix["tok/s"] = f"{tokens / self._step_seconds:,.0f}"
        self._show()
        self.bar.update(state.global_step - self.bar.n)

    def on_prediction_step(self, args, state, control, **kwargs):
        if self.bar is not None and not self._evaluating:  # an evaluation inside training: say so on the bar
            self._evaluating = True
            self.bar.set_description(f"{self.desc} (evaluating)")

    def on_evaluate(self, args, state, control, **kwargs):
        if self.bar is not None:
            self._evaluating = False
            self.bar.set_description(self.desc)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        log.debug("step %d: %s", state.global_step, _format(logs))
        if self.bar is None:
            return
        if "loss" in logs:
            self._postfix["loss"] = f"{logs['loss']:.3f}"
        if "eval_loss" in logs:
            self._postfix["eval_loss"] = f"{logs['eval_loss']:.3f}"
        self._show()

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self._redirect.close()

    def _show(self) -> None:
        order = ("loss", "eval_loss", "tok/s")
        self.bar.set_postfix_str(
            ", ".join(f"{k}={self._postfix[k]}" for k in order if k in self._postfix), refresh=False
        )


def _format(logs: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in logs.items())
