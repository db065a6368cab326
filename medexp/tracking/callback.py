"""The Trainer callback that streams the Trainer's logs into a medexp Tracker."""

from __future__ import annotations

import time

from transformers import TrainerCallback

from medexp.tracking.run import Tracker


class MetricsCallback(TrainerCallback):
    """Streams the Trainer's logs into a Tracker under stable names.

    `loss` becomes `train_loss`; `learning_rate`, `grad_norm` and every `eval_*` keep their names; between two
    training logs, `throughput_tokens_per_s` is the non-padding tokens seen divided by the wall time. The
    end-of-training summary is logged with a `train/` prefix (`train/runtime`, `train/mean_loss`, ...).
    """

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self._last: tuple[float, int] | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._last = (time.perf_counter(), state.num_input_tokens_seen)

    def on_log(self, args, state, control, logs=None, **kwargs):
        numeric = {
            k: v for k, v in (logs or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        if "train_loss" in numeric:  # the summary logged once at the end of train()
            metrics = {
                "train/mean_loss" if k == "train_loss" else "train/" + k.removeprefix("train_"): v
                for k, v in numeric.items()
            }
        elif "loss" in numeric:  # a training step; train_* keys there are cumulative speed figures, left out
            metrics = {
                "train_loss" if k == "loss" else k: v
                for k, v in numeric.items()
                if not k.startswith("train_")
            }
            now, tokens = time.perf_counter(), state.num_input_tokens_seen
            if self._last is not None and now > self._last[0] and tokens > self._last[1]:
                metrics["throughput_tokens_per_s"] = (tokens - self._last[1]) / (now - self._last[0])
            self._last = (now, tokens)
        else:  # an evaluation: eval_loss and TRL's eval_* extras
            metrics = numeric
        if metrics:
            self.tracker.log_metrics(metrics, state.global_step)
