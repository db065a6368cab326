"""`dataset.answer_format=final_line`: multiple-choice and yes/no/maybe answers written the way a GRPO stage's
rewards read them, so an SFT stage before it teaches that format (a "cold start", as DeepSeek-R1's).

`leading` (the default) writes the choice first: "C. Iron deficiency", "Yes. <explanation>". A GRPO stage asks
for reasoning, then a final line `Answer: X` (medexp.training.rewards). Measured on the real SmolLM2-135M
(docs/stages.md): after 124 SFT steps on PubMedQA in the leading format, not one of 208 GRPO completions (13 steps)
ended with an answer line, so every group's rewards tied and GRPO had nothing to learn from. `final_line` writes the same pair as
GRPO's prompt and the answer it rewards: the question with the same format instruction, then the explanation (or
the option's text) and a last line `Answer: C` / `Answer: yes`.
"""

from __future__ import annotations

from omegaconf import DictConfig

from medexp.data.answer_text import ANSWER_LINE, FORMAT, LEADING
from medexp.data.records import QAPair
from medexp.data.rows import RawRecords


def answer_kind(dataset_cfg: DictConfig) -> str:
    """letter (multiple choice), decision (yes/no/maybe) or free (a reference answer only)."""
    from medexp.data.readers import reader_for

    if reader_for(dataset_cfg.kind).lettered_options:
        return "letter"
    return "decision" if dataset_cfg.decision_field else "free"


def gold_of(answer: str, kind: str) -> str:
    """The option letter (upper case) or decision (lower case) of a pair's answer in either format; "" if none."""
    line = ANSWER_LINE.search(answer)
    if line:
        return line.group(1).lower() if kind == "decision" else line.group(1)
    match = LEADING[kind].match(answer) if kind in LEADING else None
    if match is None:
        return ""
    return match.group(1).lower() if kind == "decision" else match.group(1)


def final_line(raw: RawRecords, dataset_cfg: DictConfig, key: str = "dataset") -> RawRecords:
    """Each pair rewritten: question + the format instruction; the answer without its leading choice, then
    `Answer: X` (a multiple-choice answer keeps its option's text as the reasoning line)."""
    from medexp.config import UserError

    kind = answer_kind(dataset_cfg)
    if kind == "free":
        raise UserError(
            f"{key}.answer_format=final_line needs answers with a choice to put on the last line: multiple-choice "
            f"data ({key}.kind=multiple_choice) or yes/no/maybe decisions ({key}.decision_field, as PubMedQA), "
            f"but this source is kind={dataset_cfg.kind} without a decision_field. Leave "
            f"{key}.answer_format=leading for free-text answers."
        )
    records = []
    for pair in raw.records:
        match = LEADING[kind].match(pair.answer)
        if match is None or type(pair.question) is not str:  # no leading choice, or a multi-turn chat: kept
            records.append(pair)
            continue
        choice = match.group(1)
        rest = pair.answer[match.end() :].lstrip(" .") if kind == "decision" else pair.answer
        said = choice.lower() if kind == "decision" else choice
        question = f"{pair.question}\n\n{FORMAT[kind]}"
        records.append(QAPair(question, f"{rest}\nAnswer: {said}" if rest else f"Answer: {said}"))
    raw.records = records
    return raw
