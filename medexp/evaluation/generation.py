"""Greedy answers from the adapted model or, with its adapters switched off, from the base model."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from medexp.data.prepare import chat_messages


@dataclass
class Generation:
    text: str
    new_tokens: int
    seconds: float


def as_base(model: Any):
    """A context in which a PEFT model answers as its base model (adapters disabled)."""
    return model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()


def generate(
    model: Any, tokenizer: Any, system_prompt: str, prompts: list[str], gen_cfg: DictConfig
) -> list[Generation]:
    """One answer per prompt, one prompt at a time (so each latency is a single request's)."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    out = []
    for prompt in prompts:
        inputs = tokenizer.apply_chat_template(
            chat_messages(system_prompt, prompt),
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        ).to(device)
        start = time.perf_counter()
        with torch.no_grad():
            ids = model.generate(
                **inputs,
                max_new_tokens=int(gen_cfg.max_new_tokens),
                do_sample=False,  # greedy: the same model gives the same answer, so runs compare
                repetition_penalty=float(gen_cfg.repetition_penalty),
                pad_token_id=tokenizer.pad_token_id,
            )
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        new = ids[0, inputs["input_ids"].shape[1] :]
        out.append(
            Generation(tokenizer.decode(new, skip_special_tokens=True).strip(), int(new.numel()), seconds)
        )
    return out


def speed_metrics(generations: list[Generation]) -> dict[str, float]:
    """Latency p50/p95 per answer, generated tokens per second, and peak memory (GPU allocated, else RSS)."""
    import resource

    import torch

    from medexp.evaluation.text_metrics import percentile

    seconds = [g.seconds for g in generations]
    total = sum(seconds)
    if torch.cuda.is_available():
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:  # the process's peak resident memory: on Linux ru_maxrss is in KiB
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "latency_p50_s": percentile(seconds, 50),
        "latency_p95_s": percentile(seconds, 95),
        "tokens_per_s": sum(g.new_tokens for g in generations) / total if total > 0 else 0.0,
        "peak_memory_mb": peak_mb,
    }
