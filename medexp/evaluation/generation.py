"""Greedy answers from the adapted model or, with its adapters switched off, from the base model: answered in
batches for throughput, plus a few single requests timed for latency."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from medexp.data.prepare import chat_messages


@dataclass
class Generation:
    text: str
    new_tokens: int  # generated tokens up to and including the first eos (padding after it not counted)
    seconds: float  # wall time of the model.generate call that produced it / the answers that call produced


def as_base(model: Any):
    """A context in which a PEFT model answers as its base model: adapters disabled or, when a PiSSA / OLoRA
    initialisation moved part of the base weights into the adapter, the starting adapter swapped back in."""
    from medexp.training.adapter_init import initial_adapter, mutates_base

    if mutates_base(model):
        return initial_adapter(model)
    return model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()


def _foldable(model: Any) -> list[Any]:
    """The LoRA layers whose adapter can be folded into the weights for a generation: those of a PEFT model with
    adapters switched on (not inside `disable_adapter`) and unmerged, on a base that is not quantized (merging
    into 4-bit weights would re-quantize them). Empty where nothing is to fold."""
    if not hasattr(model, "merge_adapter"):
        return []
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    if getattr(base, "hf_quantizer", None) is not None or getattr(base, "is_loaded_in_4bit", False):
        return []
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    if not layers or any(m.disable_adapters or m.merged for m in layers):
        return []
    return layers


@contextlib.contextmanager
def folded(model: Any):
    """The adapter merged into the weights while generating (one matmul per projection instead of three: the
    base's, A's and B's), unmerged after. fp32 weights come back within fp32 rounding (peft's unmerge); 16-bit
    weights, where unmerging would move about one in twenty by a rounding step, are kept on the CPU and copied
    back exactly. Answers equal the unmerged model's to floating-point tolerance (in bf16/fp16, the rounding of
    the merged weights: what an exported merged model answers)."""
    import torch

    layers = _foldable(model)
    if not layers:
        yield
        return
    weights = [m.get_base_layer().weight for m in layers]
    kept = [None if w.dtype == torch.float32 else w.detach().to("cpu", copy=True) for w in weights]
    model.merge_adapter()
    try:
        yield
    finally:
        model.unmerge_adapter()
        with torch.no_grad():
            for weight, original in zip(weights, kept, strict=True):
                if original is not None:
                    weight.copy_(original)


def generate(
    model: Any,
    tokenizer: Any,
    system_prompt: str | list[str],
    prompts: list[str],
    gen_cfg: DictConfig,
    batch_size: int | None = None,
    advance: Callable[[int], None] | None = None,
) -> list[Generation]:
    """One greedy answer per prompt, in the prompts' order, `batch_size` prompts per `model.generate` call
    (default eval.generation.batch_size). `system_prompt` is one for all prompts or one per prompt. The batch is
    left-padded and each row's position ids follow its attention mask, so every answer is the one the prompt
    would get alone (tested token for token in fp32; bf16/fp16 kernels may round a near-tie differently). One
    caveat: repetition_penalty != 1 also penalises the pad id, which changes nothing when the pad token is in the
    prompt already (as for the tiny model: pad = eos = the chat template's end-of-turn token).
    `advance(n)` is called after each batch with its size (the progress bar)."""
    import torch

    systems = [system_prompt] * len(prompts) if isinstance(system_prompt, str) else list(system_prompt)
    if len(systems) != len(prompts):
        raise ValueError(f"{len(systems)} system prompts for {len(prompts)} prompts")
    size = int(gen_cfg.batch_size if batch_size is None else batch_size)
    model.eval()
    device = next(model.parameters()).device
    eos = _eos_ids(model)
    # The tokens the chat template renders (BOS included when the template writes it), never special tokens
    # added again: the same ids as apply_chat_template(..., tokenize=True) gives a single prompt.
    texts = [
        tokenizer.apply_chat_template(chat_messages(s, p), add_generation_prompt=True, tokenize=False)
        for s, p in zip(systems, prompts, strict=True)
    ]
    out: list[Generation] = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues every row from its last token; training pads right
    try:
        with folded(model):  # the adapter merged while generating: fewer matmuls, the same answers
            for first in range(0, len(texts), size):
                batch = texts[first : first + size]
                inputs = tokenizer(batch, padding=True, return_tensors="pt", add_special_tokens=False).to(
                    device
                )
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
                seconds = (time.perf_counter() - start) / len(batch)
                for row in ids[:, inputs["input_ids"].shape[1] :]:
                    new = row[: _answer_length(row.tolist(), eos)]
                    text = tokenizer.decode(new, skip_special_tokens=True).strip()
                    out.append(Generation(text, int(new.numel()), seconds))
                if advance is not None:
                    advance(len(batch))
    finally:
        tokenizer.padding_side = side
    return out


def _eos_ids(model: Any) -> set[int]:
    """The ids `model.generate` stops a row at: its generation config's eos (an id or a list; none = a row runs
    to max_new_tokens and is never padded)."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        return set()
    return {int(eos)} if isinstance(eos, int) else {int(e) for e in eos}


def _answer_length(new: list[int], eos: set[int]) -> int:
    """Generated tokens up to and including the first eos: what generate returns for the prompt alone. A row
    that finished before the batch's longest is filled with pad tokens only after its eos, so cutting at the
    first eos drops exactly that padding (also where pad and eos are the same id)."""
    for i, token in enumerate(new):
        if token in eos:
            return i + 1
    return len(new)


def request_latencies(
    model: Any,
    tokenizer: Any,
    system_prompt: str | list[str],
    prompts: list[str],
    gen_cfg: DictConfig,
    advance: Callable[[int], None] | None = None,
) -> list[float]:
    """Seconds of single requests: the first eval.generation.latency_samples prompts asked one at a time (the
    latency a user of one request sees, which batching would hide). Empty when latency_samples is 0."""
    n = min(int(gen_cfg.latency_samples), len(prompts))
    systems = system_prompt if isinstance(system_prompt, str) else list(system_prompt)[:n]
    gens = generate(model, tokenizer, systems, prompts[:n], gen_cfg, batch_size=1, advance=advance)
    return [g.seconds for g in gens]


def speed_metrics(generations: list[Generation], latencies: list[float] | None = None) -> dict[str, float]:
    """Speed of one model's answers.

    - latency_p50_s, latency_p95_s: median and 95th percentile of single-request seconds, from `latencies`
      (`request_latencies`: prompts asked one at a time). None takes the generations' own seconds, which are
      single requests' only when they were generated with batch_size 1; an empty list leaves both out
      (eval.generation.latency_samples=0).
    - tokens_per_s: throughput as generated: the generations' new tokens / the wall time of the generate calls
      that produced them (batched calls, so it grows with eval.generation.batch_size).
    - peak_memory_mb: the peak of the process so far: GPU memory allocated, else resident memory (RSS).
    """
    from medexp.evaluation.text_metrics import percentile
    from medexp.training.cost import peak_memory_mb

    seconds = [g.seconds for g in generations] if latencies is None else list(latencies)
    total = sum(g.seconds for g in generations)
    out = {}
    if seconds:
        out = {"latency_p50_s": percentile(seconds, 50), "latency_p95_s": percentile(seconds, 95)}
    return out | {
        "tokens_per_s": sum(g.new_tokens for g in generations) / total if total > 0 else 0.0,
        "peak_memory_mb": peak_memory_mb(),
    }
