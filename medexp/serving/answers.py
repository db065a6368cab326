"""The answers of one request, shared by the chat and completions handlers: each prompt answered n times (one
after the other; a batching scheduler would take them together), whole or as pieces for streaming, and the
log-probability listings in OpenAI's two formats. No HTTP here."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from medexp.serving.engine import Decoding, Engine, Step
from medexp.serving.text import Piece, Timing, pieces, text_offsets, token_texts


@dataclass
class Job:
    """One request's work: its prompts (token ids), each answered `n` times with the same decoding and stops."""

    prompts: list[list[int]]
    decoding: Decoding
    stops: list[str]
    n: int = 1

    def runs(self) -> Iterator[tuple[int, list[int]]]:
        """(choice index, prompt) in OpenAI's order: all choices of the first prompt, then the next prompt's."""
        for p, prompt in enumerate(self.prompts):
            for i in range(self.n):
                yield p * self.n + i, prompt


@dataclass
class Answer:
    text: str
    steps: list[Step]
    finish: str


def stream_answers(
    engine: Engine, job: Job, timing: Timing, cancel: threading.Event | None = None
) -> Iterator[tuple[int, Piece]]:
    """(choice index, piece) of every choice in turn; one sampler for the whole request, so that a seed fixes
    every choice and the n choices of a prompt still differ when sampled."""
    sampler = engine.sampler(job.decoding.seed)
    for index, prompt in job.runs():
        if job.decoding.max_new_tokens == 0:  # echo with max_tokens=0: the prompt scored, nothing generated
            yield index, Piece("", [], "length")
            continue
        for piece in pieces(engine, prompt, job.decoding, job.stops, sampler, cancel, timing):
            yield index, piece


def answer_all(
    engine: Engine, job: Job, timing: Timing, cancel: threading.Event | None = None
) -> list[Answer]:
    """Every choice, whole, in index order."""
    texts: dict[int, list[str]] = {}
    steps: dict[int, list[Step]] = {}
    finish: dict[int, str] = {}
    for index, piece in stream_answers(engine, job, timing, cancel):
        texts.setdefault(index, []).append(piece.text)
        steps.setdefault(index, []).extend(piece.steps)
        if piece.finish:
            finish[index] = piece.finish
    # a client that left mid-answer: whatever was generated (nobody reads it)
    return [Answer("".join(texts[i]), steps[i], finish.get(i, "stop")) for i in sorted(texts)]


def top_texts(tokenizer: Any, step: Step) -> list[tuple[str, float]]:
    return [(tokenizer.decode([token], skip_special_tokens=False), logprob) for token, logprob in step.top]


def chat_logprobs(tokenizer: Any, steps: list[Step], before: list[int]) -> list[dict[str, Any]]:
    """OpenAI chat's `logprobs.content`: each token with its bytes, log-probability and likeliest alternatives."""

    def entry(text: str, logprob: float) -> dict[str, Any]:
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

    texts = token_texts(tokenizer, [s.token for s in steps], before)
    return [
        entry(text, step.logprob) | {"top_logprobs": [entry(t, lp) for t, lp in top_texts(tokenizer, step)]}
        for text, step in zip(texts, steps, strict=True)
    ]


def legacy_logprobs(
    tokenizer: Any, ids: list[int], steps: list[Step | None], before: list[int], start: int
) -> dict[str, list[Any]]:
    """OpenAI completions' `logprobs`: tokens, token_logprobs, top_logprobs (the likeliest tokens and the chosen
    one, text -> log-probability) and text_offset (from `start` in the choice's text). A step of None (a
    prompt's first token, which nothing precedes) lists null."""
    texts = token_texts(tokenizer, ids, before)
    top: list[dict[str, float] | None] = []
    for text, step in zip(texts, steps, strict=True):
        if step is None:
            top.append(None)
            continue
        listed: dict[str, float] = {}
        for t, logprob in top_texts(tokenizer, step):
            listed.setdefault(t, logprob)
        listed.setdefault(text, step.logprob)
        top.append(listed)
    return {
        "tokens": texts,
        "token_logprobs": [None if s is None else s.logprob for s in steps],
        "top_logprobs": top,
        "text_offset": text_offsets(tokenizer, ids, texts, start),
    }


def join_logprobs(first: dict[str, list[Any]], then: dict[str, list[Any]]) -> dict[str, list[Any]]:
    return {key: first[key] + then[key] for key in first}
