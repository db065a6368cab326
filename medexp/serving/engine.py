"""Token-level decoding for `medexp.serve`: token by token over the model's KV cache, the sequences of concurrent
requests in one batch (`medexp.serving.batcher`), each token with its log-probability and, when asked, the
likeliest alternatives. Everything above tokens (text, stop sequences, OpenAI shapes) is `medexp.serving.text` and
the handlers.

The HTTP handlers see only `Engine.generate` (an iterator of `Step`s for one prompt) and `Engine.score` (the
log-probabilities of a prompt's own tokens), and each forward pass's batch size reaches `on_batch`.

Log-probabilities are the model's own (log-softmax of its logits), before temperature, top_p and logit_bias,
as vLLM reports them by default: a prompt scores the same whatever sampling settings come with it."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

BASE_ROWS = "__base__"  # peft's adapter name for rows the base model answers in a mixed batch


@dataclass
class Decoding:
    """What one request asks of the generation."""

    max_new_tokens: int
    temperature: float = 0.7  # 0 = greedy
    top_p: float = 1.0
    logit_bias: dict[int, float] | None = None  # token id -> added to its logit before sampling; -100 bans it
    top_logprobs: int = 0  # how many likeliest alternatives each Step lists
    seed: int | None = None  # the sampler's seed; None = a fresh one per request
    adapter: str | None = None  # the peft adapter to decode with (adapter_names); None = the model as loaded


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
    """Decodes with `model` (a causal LM, peft-wrapped or not) through a `Batcher`: the sequences of concurrent
    requests are decoded together, at most `max_batch` in one forward pass. `on_batch(n)` hears of every forward
    pass over n sequences (the Prometheus batch-size histogram)."""

    def __init__(
        self, model: Any, tokenizer: Any, on_batch: Callable[[int], None] | None = None, max_batch: int = 16
    ) -> None:
        import inspect

        from medexp.serving.batcher import Batcher

        self.model, self.tokenizer = model, tokenizer
        self.on_batch = on_batch or (lambda n: None)
        self.stop_ids = stop_token_ids(model, tokenizer)
        self.context = context_length(model, tokenizer)
        self.cache_arg = cache_argument(model)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        # logits of the last position only, where the model can: a prompt's other positions are never sampled
        self.keeps_logits = "logits_to_keep" in inspect.signature(base.forward).parameters
        # what a row without an adapter of its own decodes with in a batch that names adapters: the model as loaded
        active = getattr(model, "active_adapters", None) if hasattr(model, "get_base_model") else None
        self.loaded_adapter = active[0] if isinstance(active, list) and len(active) == 1 else BASE_ROWS
        self.batcher = Batcher(self, max_batch)

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
        `decoding.max_new_tokens` tokens, or at the next token once `cancel` is set or this iterator is closed.
        Decoded in the batch of every sequence being generated meanwhile."""
        from medexp.serving.batcher import END, Row

        if not prompt:  # refused before it could fail the forward pass it would share with other requests
            raise ValueError("an empty prompt: nothing to continue")
        if decoding.max_new_tokens <= 0:
            return
        row = Row(prompt, decoding, sampler, cancel)
        self.batcher.submit(row)
        try:
            while (item := row.out.get()) is not END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            row.left = True  # the row leaves the batch at the next step, if it has not already

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
        nothing precedes), with the likeliest alternatives at each position; computed between two decoding steps."""
        import torch

        extra = {"adapter_names": [adapter]} if adapter else {}

        def forward() -> Any:
            with torch.no_grad():
                out = self.model(input_ids=torch.tensor([prompt], device=self.device), **extra)
            self.on_batch(1)
            return out.logits[0, :-1].float()

        logprobs = torch.log_softmax(self.batcher.call(forward), dim=-1)
        steps: list[Step | None] = [None]
        for position, token in enumerate(prompt[1:]):
            row = logprobs[position]
            steps.append(Step(token, float(row[token]), top_of(row, top_logprobs)))
        return steps


def top_of(logprobs: Any, k: int) -> list[tuple[int, float]]:
    """The k likeliest tokens of one position, likeliest first."""
    if k <= 0:
        return []
    values, ids = logprobs.topk(k)
    return list(zip(ids.tolist(), values.tolist(), strict=True))
