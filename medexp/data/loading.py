"""Read question-answer rows from a hub dataset or a local file, and find the question and answer columns."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from medexp.config import UserError

if TYPE_CHECKING:
    import pandas as pd

# Common column names, most specific first; matched case-insensitively.
QUESTION_NAMES = ("question", "instruction", "input", "prompt", "query", "q")
ANSWER_NAMES = ("answer", "output", "response", "completion", "target", "a")
MC_ANSWER_NAMES = ("answer_idx", "answer", "correct_answer", "label", "cop", "target")
OPTIONS_NAMES = ("options", "choices")


@dataclass
class RawPairs:
    """Question-answer pairs after the cheap cleaning, with counts of what was read and dropped."""

    pairs: list[tuple[str, str]]
    rows_in: int
    columns: tuple[str, str]
    dropped: Counter[str] = field(default_factory=Counter)


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):  # None or NaN: a missing cell
        return ""
    return str(value).strip()


def load_pairs(dataset_cfg: DictConfig) -> RawPairs:
    """Read the source, find its question/answer columns, drop rows with an empty question or answer.

    A multiple-choice source becomes pairs too: the question with its "Options:" block, and the answer's
    letter and text (medexp.data.multiple_choice); rows that cannot be normalised are dropped by reason.
    """
    frame = read_rows(dataset_cfg)
    if dataset_cfg.kind == "multiple_choice":
        return _multiple_choice_pairs(frame, dataset_cfg)
    q_col, a_col = resolve_columns(
        [str(c) for c in frame.columns], dataset_cfg.question_field, dataset_cfg.answer_field
    )
    raw = RawPairs(pairs=[], rows_in=len(frame), columns=(q_col, a_col))
    for question, answer in zip(frame[q_col].map(_text), frame[a_col].map(_text), strict=True):
        if not question:
            raw.dropped["empty_question"] += 1
        elif not answer:
            raw.dropped["empty_answer"] += 1
        else:
            raw.pairs.append((question, answer))
    return raw


def _multiple_choice_pairs(frame: pd.DataFrame, dataset_cfg: DictConfig) -> RawPairs:
    from medexp.data.multiple_choice import MCFields, normalise_rows

    columns = [str(c) for c in frame.columns]
    found = ", ".join(repr(c) for c in columns) or "none"
    question = _pick(columns, dataset_cfg.question_field, QUESTION_NAMES, "question", found)
    answer = _pick(columns, dataset_cfg.answer_field, MC_ANSWER_NAMES, "answer", found)
    option_columns = tuple(dataset_cfg.option_columns or ())
    options = None
    if option_columns:
        missing = [c for c in option_columns if c not in columns]
        if missing:
            raise UserError(
                f"dataset.option_columns names {missing}, which the data does not have. Columns found: {found}."
            )
    else:
        by_lower = {c.strip().lower(): c for c in columns}
        options = dataset_cfg.options_field or next(
            (by_lower[n] for n in OPTIONS_NAMES if n in by_lower), None
        )
        if options not in columns:
            raise UserError(
                f"Could not find the options of the multiple-choice data. Columns found: {found}. Name the field "
                "holding them all with dataset.options_field=<column>, or one column per option with "
                "dataset.option_columns=[opa,opb,opc,opd]."
            )
    fields = MCFields(question, answer, options, option_columns, dataset_cfg.index_base)
    items, skipped = normalise_rows(frame.to_dict("records"), fields)
    dropped = Counter({f"mc_{reason}": n for reason, n in skipped.items()})
    pairs = [(item.prompt(), item.target()) for item in items]
    return RawPairs(pairs=pairs, rows_in=len(frame), columns=(question, answer), dropped=dropped)


def read_rows(dataset_cfg: DictConfig) -> pd.DataFrame:
    """All rows of the configured source, as strings or missing values; no cleaning yet."""
    if dataset_cfg.path is not None:
        return _read_file(Path(str(dataset_cfg.path)).expanduser())
    return _read_hub(str(dataset_cfg.name), str(dataset_cfg.split))


def _read_file(path: Path) -> pd.DataFrame:
    import pandas as pd

    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            # keep_default_na=False: an answer reading "NA" or "None" is text, not a missing value
            return pd.read_csv(path, dtype=str, keep_default_na=False)
        if suffix == ".parquet":
            return pd.read_parquet(path)
        text = path.read_text(encoding="utf-8")
        if suffix == ".json" and text.lstrip().startswith("["):
            return pd.DataFrame(json.loads(text))
        return pd.DataFrame([json.loads(line) for line in text.splitlines() if line.strip()])
    except (ValueError, UnicodeDecodeError, OSError, pd.errors.ParserError) as err:
        raise UserError(
            f"Could not read {path} as {suffix[1:]}: {err}. Check that the file is valid {suffix[1:]} "
            "(JSON Lines: one object per line; JSON: one array of objects)."
        ) from None


def _read_hub(name: str, split: str) -> pd.DataFrame:
    import datasets

    try:
        return datasets.load_dataset(name, split=split).to_pandas()
    except Exception as err:  # datasets raises many types for "not found" / offline / bad split
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0].rstrip(".")
        raise UserError(
            f"Could not load dataset {name!r} (split {split!r}) from the Hugging Face Hub or its cache: "
            f"{first_line}. Check the id and split, your network (HF_HUB_OFFLINE=1 only reads the cache), or "
            "use a local file with dataset=file dataset.path=…"
        ) from None


def resolve_columns(
    columns: list[str], question_field: str | None, answer_field: str | None
) -> tuple[str, str]:
    """The (question, answer) column names: the configured ones, else the first common name present."""
    found = ", ".join(repr(c) for c in columns) or "none"
    question = _pick(columns, question_field, QUESTION_NAMES, "question", found)
    answer = _pick(columns, answer_field, ANSWER_NAMES, "answer", found)
    if question == answer:
        raise UserError(
            f"The question and answer columns are both {question!r}. Columns found: {found}. "
            "Name them with dataset.question_field=… and dataset.answer_field=…"
        )
    return question, answer


def _pick(columns: list[str], configured: str | None, names: tuple[str, ...], role: str, found: str) -> str:
    if configured is not None:
        if configured in columns:
            return configured
        raise UserError(
            f"dataset.{role}_field={configured!r} is not a column of the data. Columns found: {found}. "
            f"Set dataset.{role}_field to one of them, or to null to detect it."
        )
    by_lower = {c.strip().lower(): c for c in columns}
    for name in names:
        if name in by_lower:
            return by_lower[name]
    raise UserError(
        f"Could not find {'an' if role == 'answer' else 'a'} {role} column. Columns found: {found}; medexp looks for "
        f"{', '.join(names)} (any case). Name it with dataset.{role}_field=<column>."
    )
