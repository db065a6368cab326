"""Preference pairs (`dataset.kind=preference`): rows of a prompt, a chosen and a rejected answer, for DPO-like
stages. Columns are detected (prompt / question / instruction ..., `chosen`, `rejected`) or named with
`dataset.question_field`, `dataset.chosen_field` and `dataset.rejected_field`; empty or non-text cells and rows
whose two answers are the same are dropped by reason. Prepared by medexp.data.preference."""

from __future__ import annotations

from omegaconf import DictConfig

from medexp.data.preference import prepare_preferences
from medexp.data.readers.base import Reader
from medexp.data.records import PreferencePair
from medexp.data.rows import RawRecords, listed, pick, read_rows, structured, text, usable

PROMPT_NAMES = ("prompt", "question", "instruction", "input", "query")
CHOSEN_NAMES = ("chosen", "preferred", "accepted", "chosen_response")
REJECTED_NAMES = ("rejected", "dispreferred", "rejected_response")


def read_preferences(dataset_cfg: DictConfig, key: str = "dataset") -> RawRecords:
    """The rows as `PreferencePair`s, bad rows dropped by reason."""
    frame = read_rows(dataset_cfg)
    columns = [str(c) for c in frame.columns]
    found = listed(columns)
    if frame.empty:
        return usable(RawRecords(records=[], rows_in=0, columns=("", "")), dataset_cfg, key)
    prompt = pick(columns, dataset_cfg.question_field, PROMPT_NAMES, "question", found, key)
    chosen = pick(columns, dataset_cfg.chosen_field, CHOSEN_NAMES, "chosen", found, key)
    rejected = pick(columns, dataset_cfg.rejected_field, REJECTED_NAMES, "rejected", found, key)
    raw = RawRecords(records=[], rows_in=len(frame), columns=(prompt, f"{chosen}/{rejected}"))
    for row in frame.to_dict("records"):
        cells = [row[prompt], row[chosen], row[rejected]]
        texts = [text(c) for c in cells]
        if any(structured(c) for c in cells):  # conversations here: not guessed at
            raw.dropped["non_text_cell"] += 1
        elif not texts[0]:
            raw.dropped["empty_prompt"] += 1
        elif not texts[1]:
            raw.dropped["empty_chosen"] += 1
        elif not texts[2]:
            raw.dropped["empty_rejected"] += 1
        elif texts[1] == texts[2]:
            raw.dropped["chosen_equals_rejected"] += 1
        else:
            raw.records.append(PreferencePair(*texts))
    return _nonempty(raw, dataset_cfg, key)


def _nonempty(raw: RawRecords, dataset_cfg: DictConfig, key: str) -> RawRecords:
    return usable(
        raw,
        dataset_cfg,
        key,
        holds="(dataset.kind=preference) holds no preference pairs",
        none="has a prompt, a chosen and a different rejected answer",
        wanted="Give rows with prompt, chosen and rejected text (dataset.chosen_field / rejected_field name "
        "other columns).",
    )


READER = Reader(
    kind="preference",
    record=PreferencePair,
    read=read_preferences,
    prepare=prepare_preferences,
    describe="preference data",
    stage="preference",
)
