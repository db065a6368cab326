"""Token-level decoding for `medexp.serve`: one sequence at a time, token by token over the model's KV cache,
each token with its log-probability and, when asked, the likeliest alternatives. Everything above tokens (text,
stop sequences, OpenAI shapes) is `medexp.serving.text` and the handlers.

The HTTP handlers see only `Engine.generate` (an iterator of `Step`s for one prompt) and `Engine.score` (the
log-probabilities of a prompt's own tokens), and report each forward pass's batch size through `on_batch`, so a
batching scheduler can later sit under the same two calls and decode many requests' sequences together.

Log-probabilities are the model's own (log-softmax of its logits), before temperature, top_p and logit_bias,
as vLLM reports them by default: a prompt scores the same whatever sampling settings come with it."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass
class Decoding:
    """What one request asks of the generation."""

    max_new_tokens: int
    temperature: float = 0.7  # 0 = greedy
    top_p: float = 1.0
    logit_bias: dict[int, float] | None = None  # token id -> added to its logit before sampling; -100 bans it
    top_logprobs: int = 0  # how many likeliest alternatives each Step lists
    seed: int | None = None  # the sampler's seed; None = a fresh one per request
    adapter: str | None = (
        None  # the peft adapter that answers (peft's `adapter_names`); None = the model as it is
    )


@dataclass
class Step:
    """One token: its id, its log-probability, and the likeliest tokens at its position as (id, log-probability)."""

    token: int
    logprob: float
    top: list[tuple[int, float]]


def stop_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """The tokens that end an answer: the tokenizer's end of sequence and the generation config's."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    return ids


def context_length(model: Any, tokenizer: Any) -> int:
    """How many tokens (prompt and answer) the model attends to: its position embeddings, else the tokenizer's."""
    positions = getattr(model.config, "max_position_embeddings", None)
    return int(positions or tokenizer.model_max_length)


def cache_argument(model: Any) -> str:
    """What the model's forward calls its KV cache: `cache` in recent transformers, `past_key_values` before."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


class Engine:
    """Decodes with `model` (a causal LM, peft-wrapped or not); `on_batch(n)` hears of every forward pass over n
    sequences (the Prometheus batch-size histogram)."""

    def __init__(self, model: Any, tokenizer: Any, on_batch: Callable[[int], None] | None = None) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.on_batch = on_batch or (lambda n: None)
        self.stop_ids = stop_token_ids(model, tokenizer)
        self.context = context_length(model, tokenizer)
        self.cache_arg = cache_argument(model)

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    def sampler(self, seed: int | None) -> Any:
        """The random source of one request: seeded, so that the same request with the same seed samples the same."""
        import torch

        generator = torch.Generator(device=self.device)
        generator.manual_seed(random.getrandbits(63) if seed is None else seed)
        return generator

    def generate(
        self, prompt: list[int], decoding: Decoding, sampler: Any, cancel: threading.Event | None = None
    ) -> Iterator[Step]:
        """The answer to `prompt`, one Step per token, ending after an end-of-sequence token, after
        `decoding.max_new_tokens` tokens, or at the next token once `cancel` is set."""
        import torch

        ids = torch.tensor([prompt], device=self.device)
        past = None
        for _ in range(decoding.max_new_tokens):
            if cancel is not None and cancel.is_set():
                return
            with torch.no_grad():
                out = self.model(
                    input_ids=ids, use_cache=True, **{self.cache_arg: past}, **routed(decoding.adapter, 1)
                )
            self.on_batch(1)
            past = getattr(out, self.cache_arg)
            step = self.pick(out.logits[0, -1].float(), decoding, sampler)
            yield step
            if step.token in self.stop_ids:
                return
            ids = torch.tensor([[step.token]], device=self.device)

    def pick(self, logits: Any, decoding: Decoding, sampler: Any) -> Step:
        """The next token from one position's logits: greedy at temperature 0, else sampled from the top_p nucleus
        of the tempered, biased distribution."""
        import torch

        logprobs = torch.log_softmax(logits, dim=-1)
        scores = logits.clone()
        for token, bias in (decoding.logit_bias or {}).items():
            scores[token] += bias
        if decoding.temperature == 0:
            token = int(scores.argmax())
        else:
            probs = torch.softmax(scores / decoding.temperature, dim=-1)
            if decoding.top_p < 1:
                ranked, order = probs.sort(descending=True)
                keep = (
                    ranked.cumsum(0) - ranked < decoding.top_p
                )  # the likeliest tokens up to top_p, at least one
                probs = torch.zeros_like(probs).scatter(0, order[keep], ranked[keep])
            token = int(torch.multinomial(probs, 1, generator=sampler))
        return Step(token, float(logprobs[token]), top_of(logprobs, decoding.top_logprobs))

    def score(self, prompt: list[int], top_logprobs: int, adapter: str | None = None) -> list[Step | None]:
        """The log-probability of each of the prompt's tokens given those before it (None for the first, which
        nothing precedes), with the likeliest alternatives at each position, as `adapter` (see Decoding) reads it."""
        import torch

        with torch.no_grad():
            ids = torch.tensor([prompt], device=self.device)
            logits = self.model(input_ids=ids, **routed(adapter, 1)).logits[0, :-1].float()
        self.on_batch(1)
        logprobs = torch.log_softmax(logits, dim=-1)
        steps: list[Step | None] = [None]
        for position, token in enumerate(prompt[1:]):
            row = logprobs[position]
            steps.append(Step(token, float(row[token]), top_of(row, top_logprobs)))
        return steps


def routed(adapter: str | None, rows: int) -> dict[str, Any]:
    """The forward's keyword that picks the adapter of each of `rows` rows: peft's mixed-batch `adapter_names`
    (one name per row, "__base__" for the base model); nothing when the model answers as it is (one adapter,
    merged into the weights, or none). A batching scheduler passes one name per row of a mixed batch."""
    return {} if adapter is None else {"adapter_names": [adapter] * rows}


def top_of(logprobs: Any, k: int) -> list[tuple[int, float]]:
    """The k likeliest tokens of one position, likeliest first."""
    if k <= 0:
        return []
    values, ids = logprobs.topk(k)
    return list(zip(ids.tolist(), values.tolist(), strict=True))
