"""Unpaired preference data (`dataset.kind=unpaired`): rows of a prompt, one completion and a label saying whether
the completion is desirable, as KTO trains on them. Columns are detected (prompt / question / ..., `completion` /
`response` / ..., `label` / `desirable`) or named with `dataset.question_field`, `dataset.completion_field` and
`dataset.label_field`. A label is true/false, 1/0, yes/no, or a word: desirable/undesirable, good/bad,
chosen/rejected, positive/negative (any case); rows with any other label, or an empty or non-text prompt or
completion, are dropped by reason. Prepared by medexp.data.unpaired."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from medexp.data.readers.base import Reader
from medexp.data.readers.preference import PROMPT_NAMES
from medexp.data.records import LabelledCompletion
from medexp.data.rows import RawRecords, listed, pick, read_rows, structured, text, usable
from medexp.data.unpaired import prepare_unpaired

COMPLETION_NAMES = ("completion", "response", "answer", "output")
LABEL_NAMES = ("label", "desirable", "kto_label")
DESIRABLE = ("true", "1", "yes", "desirable", "good", "chosen", "positive")
UNDESIRABLE = ("false", "0", "no", "undesirable", "bad", "rejected", "negative")


def parse_label(value: Any) -> bool | None:
    """True (desirable), False (undesirable), or None for a label medexp does not read as either."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    word = text(value).lower()
    if word in DESIRABLE:
        return True
    if word in UNDESIRABLE:
        return False
    return None


def read_unpaired(dataset_cfg: DictConfig, key: str = "dataset") -> RawRecords:
    """The rows as `LabelledCompletion`s, bad rows dropped by reason."""
    frame = read_rows(dataset_cfg)
    columns = [str(c) for c in frame.columns]
    found = listed(columns)
    if frame.empty:
        return _nonempty(RawRecords(records=[], rows_in=0, columns=("", "")), dataset_cfg, key)
    prompt = pick(columns, dataset_cfg.question_field, PROMPT_NAMES, "question", found, key)
    completion = pick(columns, dataset_cfg.completion_field, COMPLETION_NAMES, "completion", found, key)
    label = pick(columns, dataset_cfg.label_field, LABEL_NAMES, "label", found, key)
    raw = RawRecords(records=[], rows_in=len(frame), columns=(prompt, f"{completion}/{label}"))
    for row in frame.to_dict("records"):
        cells = [row[prompt], row[completion]]
        texts = [text(c) for c in cells]
        desirable = parse_label(row[label])
        if any(structured(c) for c in cells):  # conversations here: not guessed at
            raw.dropped["non_text_cell"] += 1
        elif not texts[0]:
            raw.dropped["empty_prompt"] += 1
        elif not texts[1]:
            raw.dropped["empty_completion"] += 1
        elif desirable is None:
            raw.dropped["empty_label" if not text(row[label]) else "unknown_label"] += 1
        else:
            raw.records.append(LabelledCompletion(*texts, desirable))
    return _nonempty(raw, dataset_cfg, key)


def _nonempty(raw: RawRecords, dataset_cfg: DictConfig, key: str) -> RawRecords:
    return usable(
        raw,
        dataset_cfg,
        key,
        holds="(dataset.kind=unpaired) holds no labelled completions",
        none="has a prompt, a completion and a label medexp reads",
        wanted="Give rows with prompt and completion text and a label: true/false, 1/0, yes/no, "
        "desirable/undesirable, good/bad (dataset.completion_field / label_field name other columns).",
    )


READER = Reader(
    kind="unpaired",
    record=LabelledCompletion,
    read=read_unpaired,
    prepare=prepare_unpaired,
    describe="unpaired preference data",
    stage="KTO",
)
