"""The answers of one request, shared by the chat and completions handlers: each prompt answered n times (the
choices decoded in the same batch), whole or as pieces for streaming, and the log-probability listings in
OpenAI's two formats. No HTTP here."""

from __future__ import annotations

import queue
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
    """(choice index, piece) of every choice; several choices are decoded in the same batch, their pieces
    interleaved as they come. Each choice samples with its own generator, seeded from the request's seed and its
    index, so that a seed fixes every choice whatever else shares the batch, and the n choices still differ."""
    runs = list(job.runs())
    if job.decoding.max_new_tokens == 0:  # echo with max_tokens=0: the prompts scored, nothing generated
        yield from ((index, Piece("", [], "length")) for index, _ in runs)
        return
    if len(runs) == 1:
        sampler = engine.sampler(job.decoding.seed)
        for piece in pieces(engine, runs[0][1], job.decoding, job.stops, sampler, cancel, timing):
            yield 0, piece
        return
    yield from _together(engine, job, runs, timing, cancel)


def choice_seed(seed: int | None, index: int) -> int | None:
    """The seed of a request's choice `index`: apart from every other choice's and from other seeds' choices."""
    return None if seed is None else (seed * 0x9E3779B97F4A7C15 + index * 0xBF58476D1CE4E5B9) % 2**63


def _together(
    engine: Engine,
    job: Job,
    runs: list[tuple[int, list[int]]],
    timing: Timing,
    cancel: threading.Event | None,
) -> Iterator[tuple[int, Piece]]:
    """Every choice read by a thread of its own (each waits on its sequence's tokens), pieces handed over as they
    come; closing this iterator, or `cancel`, stops them all (and returns at once: the slot is free again)."""
    arrived: queue.SimpleQueue = queue.SimpleQueue()
    halt = threading.Event()

    def read(index: int, prompt: list[int]) -> None:
        own = Timing()
        try:
            sampler = engine.sampler(choice_seed(job.decoding.seed, index))
            for piece in pieces(engine, prompt, job.decoding, job.stops, sampler, halt, own):
                arrived.put((index, piece, own.first_token_at))
        except Exception as exc:  # noqa: BLE001  (re-raised to the reader)
            arrived.put((index, exc, None))
        finally:
            arrived.put((index, None, None))

    threads = [threading.Thread(target=read, args=run, daemon=True) for run in runs]
    for thread in threads:
        thread.start()
    running = len(threads)
    try:
        while running:
            # checked at every piece: n busy choices never go quiet
            if cancel is not None and cancel.is_set():
                return
            try:
                index, piece, first = arrived.get(timeout=0.1)
            except queue.Empty:
                continue
            if piece is None:
                running -= 1
                continue
            if isinstance(piece, Exception):
                raise piece
            timing.tokens += len(piece.steps)
            timing.first_token_at = timing.first_token_at or first
            yield index, piece
    finally:
        halt.set()  # each thread's row leaves the batch at its next step; nobody waits for that here


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
