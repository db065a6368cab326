"""The typed records readers turn rows into. Each is a tuple of texts, so the cleaning (exact and near
duplicates) reads every field of a record and the split groups records by their first field (the question or
prompt), whatever the record's kind."""

from __future__ import annotations

from typing import Any, NamedTuple


class QAPair(NamedTuple):
    """A question and its answer (a multiple-choice item becomes one; a conversation ends in one)."""

    question: str  # a `Dialogue` when the pair ends a multi-turn conversation
    answer: str


class PreferencePair(NamedTuple):
    """A prompt with a preferred and a dispreferred answer, as DPO-like stages train on them."""

    prompt: str
    chosen: str
    rejected: str


class LabelledCompletion(NamedTuple):
    """A prompt with one answer labelled desirable or not, as KTO trains on them (unpaired preference data)."""

    prompt: str
    completion: str
    desirable: bool


class Document(NamedTuple):
    """One document of plain text, for continued pretraining."""

    text: str


class Dialogue(str):
    """The question of a pair that ends a conversation. Its text is the transcript ("system: ...", "user: ...",
    "assistant: ..." lines); `turns` are the messages before the final answer, alternating user / assistant and
    ending with the user's; `system` is the data's own system message (None: the config's is used)."""

    turns: tuple[dict[str, str], ...]
    system: str | None

    def __new__(cls, turns: list[dict[str, str]], system: str | None = None) -> Dialogue:
        lines = ([f"system: {system}"] if system is not None else []) + [
            f"{t['role']}: {t['content']}" for t in turns
        ]
        obj = super().__new__(cls, "\n".join(lines))
        obj.turns, obj.system = tuple(dict(t) for t in turns), system
        return obj

    def __reduce__(self) -> tuple[Any, ...]:  # pickled (worker processes) with its turns, not as plain text
        return (Dialogue, ([dict(t) for t in self.turns], self.system))
