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
VERDICTS = ("yes", "no", "maybe")  # what a decision_field may hold (PubMedQA's final_decision)


@dataclass
class RawPairs:
    """Question-answer pairs after the cheap cleaning, with counts of what was read and dropped."""

    pairs: list[tuple[str, str]]
    rows_in: int
    columns: tuple[str, str]
    dropped: Counter[str] = field(default_factory=Counter)


@dataclass
class Source:
    """One dataset of a run, read and cheaply cleaned: the main `dataset`, or a `mixture.<name>` component."""

    name: str  # "dataset" for the main one, else the mixture key (e.g. "safety")
    cfg: DictConfig
    raw: RawPairs


def load_mixture(cfg: DictConfig) -> list[Source]:
    """Every `mixture.<name>` component of the run, read and cheaply cleaned, in config order."""
    mixture = cfg.get("mixture") or {}
    return [Source(str(name), node, load_pairs(node, f"mixture.{name}")) for name, node in mixture.items()]


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):  # None or NaN: a missing cell
        return ""
    return str(value).strip()


def load_pairs(dataset_cfg: DictConfig, key: str = "dataset") -> RawPairs:
    """Read the source, find its question/answer columns, drop rows with an empty question or answer.

    A multiple-choice source becomes pairs too: the question with its "Options:" block, and the answer's
    letter and text (medexp.data.multiple_choice); rows that cannot be normalised are dropped by reason.
    With `context_field` the question is preceded by its passage; with `decision_field` the answer starts
    with the verdict ("Yes. ..."), as PubMedQA is. `key` names the config node in error messages.
    """
    if dataset_cfg.kind == "text":  # documents for continued pretraining (medexp.data.text)
        from medexp.data.text import load_documents

        return load_documents(dataset_cfg, key)
    if dataset_cfg.kind == "preference":  # prompt / chosen / rejected for DPO stages (medexp.data.preference)
        from medexp.data.preference import load_preferences

        return load_preferences(dataset_cfg, key)
    frame = read_rows(dataset_cfg)
    if frame.empty:  # no rows (an empty file, a header alone): nothing to find columns in
        return _usable(RawPairs(pairs=[], rows_in=0, columns=("", "")), dataset_cfg, key)
    if dataset_cfg.kind == "multiple_choice":
        return _usable(_multiple_choice_pairs(frame, dataset_cfg, key), dataset_cfg, key)
    columns = [str(c) for c in frame.columns]
    conversations = _conversation_column(columns, dataset_cfg, key)
    if conversations is not None:  # OpenAI messages / ShareGPT conversations (medexp.data.conversation)
        from medexp.data.conversation import conversation_pairs

        raw = RawPairs(pairs=[], rows_in=len(frame), columns=(conversations, conversations))
        raw.pairs, raw.dropped = conversation_pairs(frame[conversations].tolist())
        return _usable(
            raw,
            dataset_cfg,
            key,
            wanted="Give conversations that alternate user and assistant turns and hold at least one "
            "assistant turn.",
        )
    q_col, a_col = resolve_columns(columns, dataset_cfg.question_field, dataset_cfg.answer_field, key)
    found = ", ".join(repr(c) for c in columns)
    context = dataset_cfg.context_field and _pick(
        columns, dataset_cfg.context_field, (), "context", found, key
    )
    decision = dataset_cfg.decision_field and _pick(
        columns, dataset_cfg.decision_field, (), "decision", found, key
    )
    extra = _alpaca_input(columns, q_col, a_col, dataset_cfg, found, key)
    raw = RawPairs(pairs=[], rows_in=len(frame), columns=(q_col, a_col))
    for row in frame.to_dict("records"):
        question, answer = _text(row[q_col]), _text(row[a_col])
        verdict = _text(row[decision]).lower() if decision else None
        if isinstance(row[q_col], (list, dict, bool)):  # JSON structure where text belongs: not guessed at
            raw.dropped["non_text_question"] += 1
        elif isinstance(row[a_col], (list, dict, bool)):
            raw.dropped["non_text_answer"] += 1
        elif not question:
            raw.dropped["empty_question"] += 1
        elif not answer:
            raw.dropped["empty_answer"] += 1
        elif verdict is not None and verdict not in VERDICTS:
            raw.dropped["unknown_decision"] += 1
        else:
            if context:
                passage = context_text(row[context])
                question = f"Context:\n{passage}\n\nQuestion: {question}" if passage else question
            if extra and _text(row[extra]):  # alpaca: the instruction, then its input
                question = f"{question}\n\n{_text(row[extra])}"
            if verdict is not None:
                answer = f"{verdict.capitalize()}. {answer}"
            raw.pairs.append((question, answer))
    return _usable(raw, dataset_cfg, key)


def _conversation_column(columns: list[str], dataset_cfg: DictConfig, key: str) -> str | None:
    """The column of multi-turn conversations: the configured `messages_field`, else a `messages` /
    `conversations` column when no question or answer column is configured (UltraChat has both `prompt` and
    `messages`: the conversation is the richer of the two)."""
    from medexp.data.conversation import CONVERSATION_NAMES

    configured = dataset_cfg.get("messages_field")
    found = ", ".join(repr(c) for c in columns)
    if configured is not None:
        return _pick(columns, configured, (), "messages", found, key)
    if dataset_cfg.question_field is not None or dataset_cfg.answer_field is not None:
        return None
    by_lower = {c.strip().lower(): c for c in columns}
    return next((by_lower[n] for n in CONVERSATION_NAMES if n in by_lower), None)


def _alpaca_input(
    columns: list[str], q_col: str, a_col: str, dataset_cfg: DictConfig, found: str, key: str
) -> str | None:
    """Alpaca's optional `input` column, shown below the instruction: the configured `input_field`, or detected
    when the question column is `instruction` and an `input` column sits beside it (and is not the answer)."""
    configured = dataset_cfg.get("input_field")
    if configured is not None:
        return _pick(columns, configured, (), "input", found, key)
    by_lower = {c.strip().lower(): c for c in columns}
    column = by_lower.get("input")
    if q_col.strip().lower() == "instruction" and column not in (None, q_col, a_col):
        return column
    return None


def _usable(
    raw: RawPairs,
    dataset_cfg: DictConfig,
    key: str,
    holds: str = "holds nothing to train or evaluate on",
    none: str = "is usable",
    wanted: str = "Give data with at least one row that has both a question and an answer.",
) -> RawPairs:
    """The pairs, when there is at least one: a source with none (a header and no rows, every row empty) is
    refused here, with the counts by reason, instead of failing later inside tokenization. `holds`, `none` and
    `wanted` word the refusal for a kind of data other than question-answer pairs (plain text)."""
    if raw.pairs:
        return raw
    source = dataset_cfg.path or dataset_cfg.name
    reasons = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in raw.dropped.items() if n)
    read = "it has no rows" if not raw.rows_in else f"of its {raw.rows_in} rows none {none} ({reasons})"
    raise UserError(f"{key} {source!r} {holds}: {read}. {wanted}")


def context_text(value: Any) -> str:
    """A passage as text: a string; a list of paragraphs; or PubMedQA's {"contexts": [...], "labels": [...]}
    (each paragraph headed by its label, e.g. "METHODS: ...")."""
    if isinstance(value, dict):
        paragraphs = [_text(p) for p in _sequence(value.get("contexts"))]
        labels = [_text(label) for label in _sequence(value.get("labels"))]
        if len(labels) == len(paragraphs):
            paragraphs = [
                f"{label}: {p}" if label else p for label, p in zip(labels, paragraphs, strict=True)
            ]
        return "\n".join(p for p in paragraphs if p)
    if isinstance(value, str):
        return value.strip()
    return "\n".join(p for p in (_text(v) for v in _sequence(value)) if p)


def _sequence(value: Any) -> list[Any]:
    """A list from a list, tuple or numpy array (how `datasets` hands nested lists to pandas); else []."""
    if value is None or isinstance(value, (str, bytes, dict)):
        return []
    try:
        return list(value)
    except TypeError:
        return []


def _multiple_choice_pairs(frame: pd.DataFrame, dataset_cfg: DictConfig, key: str) -> RawPairs:
    from medexp.data.multiple_choice import MCFields, normalise_rows

    columns = [str(c) for c in frame.columns]
    found = ", ".join(repr(c) for c in columns) or "none"
    question = _pick(columns, dataset_cfg.question_field, QUESTION_NAMES, "question", found, key)
    answer = _pick(columns, dataset_cfg.answer_field, MC_ANSWER_NAMES, "answer", found, key)
    option_columns = tuple(dataset_cfg.option_columns or ())
    options = None
    if option_columns:
        missing = [c for c in option_columns if c not in columns]
        if missing:
            raise UserError(
                f"{key}.option_columns names {missing}, which the data does not have. Columns found: {found}."
            )
    else:
        by_lower = {c.strip().lower(): c for c in columns}
        options = dataset_cfg.options_field or next(
            (by_lower[n] for n in OPTIONS_NAMES if n in by_lower), None
        )
        if options not in columns:
            raise UserError(
                f"Could not find the options of the multiple-choice data. Columns found: {found}. Name the field "
                f"holding them all with {key}.options_field=<column>, or one column per option with "
                f"{key}.option_columns=[opa,opb,opc,opd]."
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
    return _read_hub(str(dataset_cfg.name), dataset_cfg.subset, str(dataset_cfg.split))


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
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        if not all(isinstance(row, dict) for row in rows):
            n = next(i for i, row in enumerate(rows, 1) if not isinstance(row, dict))
            raise ValueError(f'record {n} is not a JSON object ({{"question": ..., "answer": ...}})')
        return pd.DataFrame(rows)
    except (ValueError, UnicodeDecodeError, OSError, pd.errors.ParserError) as err:
        raise UserError(
            f"Could not read {path} as {suffix[1:]}: {err}. Check that the file is valid {suffix[1:]} "
            "(JSON Lines: one object per line; JSON: one array of objects)."
        ) from None


def _read_hub(name: str, subset: str | None, split: str) -> pd.DataFrame:
    import datasets

    try:
        return datasets.load_dataset(name, subset, split=split).to_pandas()
    except Exception as err:  # noqa: BLE001  (datasets raises many types for not found / offline / bad split)
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0].rstrip(".")
        raise UserError(
            f"Could not load dataset {name!r} (subset {subset!r}, split {split!r}) from the Hugging Face Hub or its cache: "
            f"{first_line}. Check the id and split, your network (HF_HUB_OFFLINE=1 only reads the cache), or "
            "use a local file with dataset=file dataset.path=…"
        ) from None


def resolve_columns(
    columns: list[str], question_field: str | None, answer_field: str | None, key: str = "dataset"
) -> tuple[str, str]:
    """The (question, answer) column names: the configured ones, else the first common name present."""
    found = ", ".join(repr(c) for c in columns) or "none"
    question = _pick(columns, question_field, QUESTION_NAMES, "question", found, key)
    answer = _pick(columns, answer_field, ANSWER_NAMES, "answer", found, key)
    if question == answer:
        raise UserError(
            f"The question and answer columns are both {question!r}. Columns found: {found}. "
            f"Name them with {key}.question_field=… and {key}.answer_field=…"
        )
    return question, answer


def _pick(
    columns: list[str], configured: str | None, names: tuple[str, ...], role: str, found: str, key: str
) -> str:
    if configured is not None:
        if configured in columns:
            return configured
        raise UserError(
            f"{key}.{role}_field={configured!r} is not a column of the data. Columns found: {found}. "
            f"Set {key}.{role}_field to one of them, or to null{' to detect it' if names else ''}."
        )
    by_lower = {c.strip().lower(): c for c in columns}
    for name in names:
        if name in by_lower:
            return by_lower[name]
    raise UserError(
        f"Could not find {'an' if role == 'answer' else 'a'} {role} column. Columns found: {found}; medexp looks for "
        f"{', '.join(names)} (any case). Name it with {key}.{role}_field=<column>."
    )


def sources(cfg: DictConfig) -> dict[str, DictConfig]:
    """The run's data sources by name: `dataset` and each mixture component."""
    return {"dataset": cfg.dataset, **{str(k): v for k, v in (cfg.get("mixture") or {}).items()}}
