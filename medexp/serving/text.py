"""From tokens to the text a client reads: an answer's text as it becomes final (stop sequences cut it, and text
that may still turn into one is held back), and each token's own text for log-probability listings."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from medexp.serving.engine import Decoding, Engine, Step

# Tokens decoded before a token to find its own text: byte-level and SentencePiece tokenizers join tokens into text
# (leading spaces, characters split over several tokens) that a token decoded alone does not show.
_WINDOW = 6


class TextStream:
    """The text of the tokens added so far, handed out as it becomes final: decoded whole at each token (special
    tokens left out), held back while it ends in an unfinished character or in the start of a stop sequence,
    and cut before the first stop sequence (`stopped` is then set)."""

    def __init__(self, tokenizer: Any, stops: list[str]) -> None:
        self.tokenizer, self.stops = tokenizer, stops
        self.ids: list[int] = []
        self.sent = 0  # characters handed out
        self.stopped = False

    def add(self, token: int) -> str:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        hits = [i for s in self.stops if (i := text.find(s, max(0, self.sent - len(s)))) >= 0]
        if hits:
            self.stopped = True
            return self._hand_out(text[: min(hits)])
        final = text.rstrip("\ufffd")  # bytes of a character still to come
        held = max((k for s in self.stops for k in range(1, len(s)) if final.endswith(s[:k])), default=0)
        return self._hand_out(final[: len(final) - held])

    def rest(self) -> str:
        """At the end of the answer: whatever was held back."""
        if self.stopped:
            return ""
        return self._hand_out(self.tokenizer.decode(self.ids, skip_special_tokens=True))

    def _hand_out(self, text: str) -> str:
        piece = text[self.sent :]
        self.sent = max(self.sent, len(text))
        return piece


@dataclass
class Piece:
    """Final text of an answer, the tokens generated since the previous piece, and the finish reason on the last."""

    text: str
    steps: list[Step]
    finish: str | None = None


@dataclass
class Timing:
    """When the first token of a request came (for time to first token), and how many tokens came in all."""

    first_token_at: float | None = None
    tokens: int = field(default=0)


def pieces(
    engine: Engine, prompt: list[int], decoding: Decoding, stops: list[str], sampler: Any,
    cancel: threading.Event | None = None, timing: Timing | None = None,
) -> Iterator[Piece]:  # fmt: skip
    """One answer as pieces of final text; the last carries the finish reason: "stop" (end of sequence or a stop
    sequence) or "length" (max_new_tokens reached)."""
    stream = TextStream(engine.tokenizer, stops)
    timing = timing or Timing()
    pending: list[Step] = []
    last = None
    for step in engine.generate(prompt, decoding, sampler, cancel):
        if timing.first_token_at is None:
            timing.first_token_at = time.monotonic()
        timing.tokens += 1
        pending.append(last := step)
        text = stream.add(step.token)
        if stream.stopped:
            yield Piece(text, pending, "stop")
            return
        if text:
            yield Piece(text, pending)
            pending = []
    ended = last is not None and last.token in engine.stop_ids
    finish = "length" if not ended and len(stream.ids) >= decoding.max_new_tokens else "stop"
    yield Piece(stream.rest(), pending, finish)


def token_texts(tokenizer: Any, ids: list[int], before: list[int] | None = None) -> list[str]:
    """Each token's own text (special tokens by name) as it reads after the tokens `before` and those ahead of it."""
    context = list(before or [])[-_WINDOW:]
    texts = []
    for token in ids:
        head = tokenizer.decode(context, skip_special_tokens=False)
        texts.append(tokenizer.decode([*context, token], skip_special_tokens=False)[len(head) :])
        context = [*context, token][-_WINDOW:]
    return texts


def text_offsets(tokenizer: Any, ids: list[int], texts: list[str], start: int = 0) -> list[int]:
    """Where each token's text starts in the answer's text (special tokens, left out of it, take no room)."""
    special = set(tokenizer.all_special_ids)
    offsets, at = [], start
    for token, text in zip(ids, texts, strict=True):
        offsets.append(at)
        at += 0 if token in special else len(text)
    return offsets
