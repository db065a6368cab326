"""What a training stage cost, logged with the run: wall time, non-padding tokens per second, the padding
fraction of the batches it trained on, peak memory (GPU allocated on CUDA, else the process's peak RSS), and the
effective batch size (per-device batch x accumulation x processes)."""

from __future__ import annotations

import resource
import time
from collections.abc import Mapping
from typing import Any

from transformers import TrainerCallback

from medexp.config.runtime import world_size


class BatchCounter:
    """Wraps a data collator: counts the tokens of each training batch (what the model computes on) and how
    many of them are real (not padding). Evaluation batches go through the same collator; `active` is off
    while they are built."""

    def __init__(self, collate: Any) -> None:
        self.collate = collate
        self.active = False
        self.total = 0
        self.real = 0

    def __call__(self, examples: list[dict]) -> Any:
        batch = self.collate(examples)
        if self.active and isinstance(
            batch, Mapping
        ):  # GRPO's batches are lists of prompts: nothing to count
            # paired trainers of trl.experimental (ORPO, CPO) batch the chosen and rejected sequences apart
            keys = ["input_ids"] if "input_ids" in batch else ["chosen_input_ids", "rejected_input_ids"]
            for key in (k for k in keys if k in batch):
                ids = batch[key]
                # padding-free batches have no mask: every token is real
                mask = batch.get(key.replace("input_ids", "attention_mask"))
                self.total += ids.numel()
                self.real += int(mask.sum()) if mask is not None else ids.numel()
        return batch

    @property
    def padding_fraction(self) -> float:
        return 1 - self.real / self.total if self.total else 0.0


def peak_memory_mb() -> float:
    """Peak GPU memory allocated on CUDA, else the process's peak resident memory (Linux: ru_maxrss in KiB)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class CostCallback(TrainerCallback):
    """Logs `train/wall_time_s`, `train/tokens_per_s` (non-padding), `train/padding_fraction`,
    `train/peak_memory_mb` and `train/effective_batch_size` at the end of training, through the tracker."""

    def __init__(self, counter: BatchCounter, tracker: Any) -> None:
        self.counter = counter
        self.tracker = tracker
        self._start = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()
        self.counter.active = True

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_evaluate:  # the evaluation that follows builds its batches with the same collator
            self.counter.active = False

    def on_evaluate(self, args, state, control, **kwargs):
        self.counter.active = state.global_step < state.max_steps  # training goes on after this evaluation

    def on_train_end(self, args, state, control, **kwargs):
        self.counter.active = False
        wall = time.perf_counter() - self._start
        # the launcher's process count (torchrun / accelerate launch), 1 otherwise
        effective = args.per_device_train_batch_size * args.gradient_accumulation_steps * world_size()
        self.tracker.log_metrics(
            {
                "train/wall_time_s": wall,
                "train/tokens_per_s": state.num_input_tokens_seen / wall if wall > 0 else 0.0,
                "train/padding_fraction": self.counter.padding_fraction,
                "train/peak_memory_mb": peak_memory_mb(),
                "train/effective_batch_size": effective,
            },
            step=state.global_step,
        )
