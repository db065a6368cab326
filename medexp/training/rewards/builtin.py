"""The rewards medexp ships, each a small function in TRL's reward signature: lists of prompts and completions
(conversational: lists of messages) and the prompt dataset's columns as keyword lists (`gold`: the option
letter or yes/no/maybe, "" for free text; `reference`: the reference answer; `answer_kind`: letter, decision
or free), one float per completion. The required answer format is reasoning, then a final line `Answer: X`."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

_ANSWER_LINE = re.compile(r"^\W*answer\W*:\s*(.+?)\s*$", re.IGNORECASE)
_LETTER = re.compile(r"^\(?([A-Za-z])\b")
_DECISION = re.compile(r"^(yes|no|maybe)\b", re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9]+")


def text_of(completion: Any) -> str:
    """A completion's text: the assistant message's content, or the string itself."""
    if isinstance(completion, list):
        return "".join(str(m.get("content") or "") for m in completion if isinstance(m, dict))
    return str(completion)


def final_answer(text: str) -> tuple[str, str] | None:
    """(the reasoning before it, what it says) of the completion's last non-empty line when it is
    `Answer: ...`; None otherwise."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    match = _ANSWER_LINE.match(lines[-1]) if lines else None
    return ("\n".join(lines[:-1]).strip(), match.group(1)) if match else None


def parse_choice(said: str, answer_kind: str) -> str | None:
    """The option letter (upper case) or the decision (lower case) an answer line names; None if neither."""
    pattern = _DECISION if answer_kind == "decision" else _LETTER
    match = pattern.match(said.strip())
    if match is None:
        return None
    return match.group(1).lower() if answer_kind == "decision" else match.group(1).upper()


def choice_correct(completions: list, gold: list[str], answer_kind: list[str], **_: Any) -> list[float]:
    """1 when the final `Answer: X` line names the gold option letter (or yes/no/maybe), else 0."""
    scores = []
    for completion, want, kind in zip(completions, gold, answer_kind, strict=True):
        found = final_answer(text_of(completion))
        said = parse_choice(found[1], kind) if found else None
        scores.append(
            float(said is not None and said == (want.lower() if kind == "decision" else want.upper()))
        )
    return scores


def answer_format(completions: list, answer_kind: list[str], **_: Any) -> list[float]:
    """1 for reasoning then a final `Answer: X` line whose X fits the data (a letter, yes/no/maybe, any text);
    0.5 for that line without reasoning before it; 0 without it."""
    scores = []
    for completion, kind in zip(completions, answer_kind, strict=True):
        found = final_answer(text_of(completion))
        if found is None or (kind != "free" and parse_choice(found[1], kind) is None):
            scores.append(0.0)
        else:
            scores.append(1.0 if found[0] else 0.5)
    return scores


def length(completion_ids: list[list[int]], max_tokens: int = 256, **_: Any) -> list[float]:
    """0 within `max_tokens` completion tokens, falling linearly to -1 at twice the budget."""
    return [-min(1.0, max(0, len(ids) - max_tokens) / max_tokens) for ids in completion_ids]


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 on lower-cased alphanumeric words (the longest common subsequence)."""
    a, b = _WORD.findall(candidate.lower()), _WORD.findall(reference.lower())
    if not a or not b:
        return 0.0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    lcs = previous[-1]
    return 0.0 if lcs == 0 else 2 * lcs / (len(a) + len(b))


def reference_overlap(completions: list, reference: list[str], **_: Any) -> list[float]:
    """ROUGE-L F1 of the completion against the reference answer, in [0, 1]."""
    return [rouge_l(text_of(c), ref) for c, ref in zip(completions, reference, strict=True)]


def safety(prompts: list, completions: list, scorer: Callable[[str, str], Any], **_: Any) -> list[float]:
    """-1 for an answer the safety scorer judges unsafe, else 0 (a penalty only: a safe answer earns nothing)."""
    return [
        0.0 if scorer(_question(p), text_of(c)).safe else -1.0
        for p, c in zip(prompts, completions, strict=True)
    ]


def _question(prompt: Any) -> str:
    """The last user message of a conversational prompt, or the prompt itself."""
    if isinstance(prompt, list):
        users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return str(users[-1]) if users else ""
    return str(prompt)
