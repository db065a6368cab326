"""Question-answer pairs (`dataset.kind=qa`): a question and an answer column, detected or named, with PubMedQA's
passage (`context_field`) and verdict (`decision_field`) and alpaca's `input`; a source holding conversations
instead (a `messages` / `conversations` column) is read as conversations (medexp.data.readers.conversation)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from medexp.config import UserError
from medexp.data.pairs import prepare_pairs
from medexp.data.readers.base import Reader
from medexp.data.readers.conversation import conversation_column, conversation_records
from medexp.data.records import QAPair
from medexp.data.rows import RawRecords, listed, pick, read_rows, structured, text, usable

if TYPE_CHECKING:
    import pandas as pd

# Common column names, most specific first; matched case-insensitively.
QUESTION_NAMES = ("question", "instruction", "input", "prompt", "query", "q")
ANSWER_NAMES = ("answer", "output", "response", "completion", "target", "a")
VERDICTS = ("yes", "no", "maybe")  # what a decision_field may hold (PubMedQA's final_decision)


def read_qa(dataset_cfg: DictConfig, key: str = "dataset") -> RawRecords:
    """Read the source, find its question/answer columns, drop rows with an empty question or answer.

    With `context_field` the question is preceded by its passage; with `decision_field` the answer starts
    with the verdict ("Yes. ..."), as PubMedQA is. `key` names the config node in error messages."""
    frame = read_rows(dataset_cfg)
    if frame.empty:  # no rows (an empty file, a header alone): nothing to find columns in
        return usable(RawRecords(records=[], rows_in=0, columns=("", "")), dataset_cfg, key)
    columns = [str(c) for c in frame.columns]
    conversations = conversation_column(columns, dataset_cfg, key, detect=_unnamed(dataset_cfg))
    if conversations is not None:  # OpenAI messages / ShareGPT conversations
        return conversation_records(frame, conversations, dataset_cfg, key)
    return usable(_pairs(frame, columns, dataset_cfg, key), dataset_cfg, key)


def _unnamed(dataset_cfg: DictConfig) -> bool:
    """Neither a question nor an answer column is configured: a conversation column may be detected (UltraChat
    has both `prompt` and `messages`: the conversation is the richer of the two)."""
    return dataset_cfg.question_field is None and dataset_cfg.answer_field is None


def _pairs(frame: pd.DataFrame, columns: list[str], dataset_cfg: DictConfig, key: str) -> RawRecords:
    q_col, a_col = resolve_columns(columns, dataset_cfg.question_field, dataset_cfg.answer_field, key)
    found = listed(columns)
    context = dataset_cfg.context_field and pick(
        columns, dataset_cfg.context_field, (), "context", found, key
    )
    decision = dataset_cfg.decision_field and pick(
        columns, dataset_cfg.decision_field, (), "decision", found, key
    )
    extra = _alpaca_input(columns, q_col, a_col, dataset_cfg, found, key)
    raw = RawRecords(records=[], rows_in=len(frame), columns=(q_col, a_col))
    for row in frame.to_dict("records"):
        question, answer = text(row[q_col]), text(row[a_col])
        verdict = text(row[decision]).lower() if decision else None
        if structured(row[q_col]):
            raw.dropped["non_text_question"] += 1
        elif structured(row[a_col]):
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
            if extra and text(row[extra]):  # alpaca: the instruction, then its input
                question = f"{question}\n\n{text(row[extra])}"
            if verdict is not None:
                answer = f"{verdict.capitalize()}. {answer}"
            raw.records.append(QAPair(question, answer))
    return raw


def resolve_columns(
    columns: list[str], question_field: str | None, answer_field: str | None, key: str = "dataset"
) -> tuple[str, str]:
    """The (question, answer) column names: the configured ones, else the first common name present."""
    found = listed(columns)
    question = pick(columns, question_field, QUESTION_NAMES, "question", found, key)
    answer = pick(columns, answer_field, ANSWER_NAMES, "answer", found, key)
    if question == answer:
        raise UserError(
            f"The question and answer columns are both {question!r}. Columns found: {found}. "
            f"Name them with {key}.question_field=… and {key}.answer_field=…"
        )
    return question, answer


def _alpaca_input(
    columns: list[str], q_col: str, a_col: str, dataset_cfg: DictConfig, found: str, key: str
) -> str | None:
    """Alpaca's optional `input` column, shown below the instruction: the configured `input_field`, or detected
    when the question column is `instruction` and an `input` column sits beside it (and is not the answer)."""
    if dataset_cfg.input_field is not None:
        return pick(columns, dataset_cfg.input_field, (), "input", found, key)
    column = {c.strip().lower(): c for c in columns}.get("input")
    if q_col.strip().lower() == "instruction" and column not in (None, q_col, a_col):
        return column
    return None


def context_text(value: Any) -> str:
    """A passage as text: a string; a list of paragraphs; or PubMedQA's {"contexts": [...], "labels": [...]}
    (each paragraph headed by its label, e.g. "METHODS: ...")."""
    if isinstance(value, dict):
        paragraphs = [text(p) for p in _sequence(value.get("contexts"))]
        labels = [text(label) for label in _sequence(value.get("labels"))]
        if len(labels) == len(paragraphs):
            paragraphs = [
                f"{label}: {p}" if label else p for label, p in zip(labels, paragraphs, strict=True)
            ]
        return "\n".join(p for p in paragraphs if p)
    if isinstance(value, str):
        return value.strip()
    return "\n".join(p for p in (text(v) for v in _sequence(value)) if p)


def _sequence(value: Any) -> list[Any]:
    """A list from a list, tuple or numpy array (how `datasets` hands nested lists to pandas); else []."""
    if value is None or isinstance(value, (str, bytes, dict)):
        return []
    try:
        return list(value)
    except TypeError:
        return []


READER = Reader(
    kind="qa",
    record=QAPair,
    read=read_qa,
    prepare=prepare_pairs,
    describe="question-answer pairs",
    mixable=True,
)
