"""The answer format a GRPO stage rewards, as text: its instruction, the leading choice of medexp's default answers
and the final `Answer: X` line (medexp.data.answer_line writes pairs in it). Imports nothing of medexp, so data
cleaning can use it without an import circle through the readers."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["ANSWER_LINE", "FORMAT", "LEADING", "final_line_format", "without_answer_line"]

FORMAT = {  # the required answer format, added to each question (a GRPO prompt, a final_line pair)
    "letter": "Think it through briefly, then end with a final line `Answer: X`, X being the option's letter.",
    "decision": "Think it through briefly, then end with a final line `Answer: yes`, `Answer: no` or "
    "`Answer: maybe`.",
    "free": "Think it through briefly, then end with a final line `Answer: ` and your answer in one sentence.",
}
# the choice a leading-format answer starts with ("C. text", "Yes. explanation")
LEADING = {"letter": re.compile(r"^([A-Z])\. "), "decision": re.compile(r"^(yes|no|maybe)\b", re.IGNORECASE)}
ANSWER_LINE = re.compile(r"\n+Answer: (\S+)$")


def final_line_format(dataset_cfg: Any) -> bool:
    """Whether a dataset node writes its answers final_line (a run config saved before the option reads leading)."""
    return dataset_cfg.get("answer_format", "leading") == "final_line"


def without_answer_line(pair: tuple[str, str]) -> tuple[str, str]:
    """A final_line pair as near-duplicate removal compares it: without the instruction every question carries
    (~20 shared words would push short questions over the threshold) and without the answer line."""
    question, answer = pair
    for instruction in FORMAT.values():
        question = question.removesuffix(f"\n\n{instruction}")
    return question, ANSWER_LINE.sub("", answer)
