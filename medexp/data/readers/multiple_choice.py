"""Multiple-choice questions (`dataset.kind=multiple_choice`): MedMCQA, MedQA, local files. Each row is
normalised (medexp.data.multiple_choice) and becomes a pair: the question with its "Options:" block, and the
answer's letter and text; rows that cannot be normalised are dropped by reason (mc_<reason>)."""

from __future__ import annotations

from collections import Counter

from omegaconf import DictConfig

from medexp.config import UserError
from medexp.data.multiple_choice import MCFields, normalise_rows
from medexp.data.pairs import prepare_pairs
from medexp.data.readers.base import Reader
from medexp.data.readers.qa import QUESTION_NAMES
from medexp.data.records import QAPair
from medexp.data.rows import RawRecords, listed, pick, read_rows, usable

MC_ANSWER_NAMES = ("answer_idx", "answer", "correct_answer", "label", "cop", "target")
OPTIONS_NAMES = ("options", "choices")


def read_multiple_choice(dataset_cfg: DictConfig, key: str = "dataset") -> RawRecords:
    """The source's questions with their options and correct answer, as pairs."""
    frame = read_rows(dataset_cfg)
    if frame.empty:
        return usable(RawRecords(records=[], rows_in=0, columns=("", "")), dataset_cfg, key)
    columns = [str(c) for c in frame.columns]
    found = listed(columns)
    question = pick(columns, dataset_cfg.question_field, QUESTION_NAMES, "question", found, key)
    answer = pick(columns, dataset_cfg.answer_field, MC_ANSWER_NAMES, "answer", found, key)
    option_columns = tuple(dataset_cfg.option_columns or ())
    options = _options_field(columns, option_columns, dataset_cfg, found, key)
    fields = MCFields(question, answer, options, option_columns, dataset_cfg.index_base)
    items, skipped = normalise_rows(frame.to_dict("records"), fields)
    raw = RawRecords(
        records=[QAPair(item.prompt(), item.target()) for item in items],
        rows_in=len(frame),
        columns=(question, answer),
        dropped=Counter({f"mc_{reason}": n for reason, n in skipped.items()}),
    )
    return usable(raw, dataset_cfg, key)


def _options_field(
    columns: list[str], option_columns: tuple[str, ...], dataset_cfg: DictConfig, found: str, key: str
) -> str | None:
    """The field holding all options (None when `option_columns` name one column per option)."""
    if option_columns:
        missing = [c for c in option_columns if c not in columns]
        if missing:
            raise UserError(
                f"{key}.option_columns names {missing}, which the data does not have. Columns found: {found}."
            )
        return None
    by_lower = {c.strip().lower(): c for c in columns}
    options = dataset_cfg.options_field or next((by_lower[n] for n in OPTIONS_NAMES if n in by_lower), None)
    if options not in columns:
        raise UserError(
            f"Could not find the options of the multiple-choice data. Columns found: {found}. Name the field "
            f"holding them all with {key}.options_field=<column>, or one column per option with "
            f"{key}.option_columns=[opa,opb,opc,opd]."
        )
    return options


READER = Reader(
    kind="multiple_choice",
    record=QAPair,
    read=read_multiple_choice,
    prepare=prepare_pairs,
    describe="multiple-choice questions",
    mixable=True,
    lettered_options=True,
)
