"""The dataset group's schema (`dataset`, `stages.<name>.dataset`, `mixture.<name>`, `eval.mc.sets.<name>`) and the
checks types cannot express: ranges, and the local file a dataset names. See medexp/config/schema.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from omegaconf import MISSING, DictConfig

from medexp.config.errors import UserError
from medexp.config.rules import Rules, positive, require

LOCAL_FILE_SUFFIXES = (".csv", ".json", ".jsonl", ".parquet")


@dataclass
class NearDupConfig:
    threshold: float | None = MISSING  # Jaccard similarity at which a pair is a near duplicate; null = off
    num_perm: int = MISSING  # MinHash permutations: more = tighter estimate, slower

    RULES: ClassVar[Rules] = (
        require(
            "threshold",
            lambda v: 0 < v < 1,
            "{key} must be a Jaccard similarity strictly between 0 and 1, or null to turn near-duplicate removal "
            "off; got {value!r}. 0.9 drops pairs that differ by a few words.",
        ),
        positive("num_perm", 128),
    )


@dataclass
class DatasetConfig:
    name: str | None = MISSING  # hub id; null when `path` names a local file
    path: str | None = MISSING  # local .csv/.json/.jsonl/.parquet; used instead of `name` when set
    subset: str | None = None  # the hub dataset's configuration (e.g. pqa_labeled); null = its default
    split: str = MISSING  # the hub split to read; medexp makes its own validation split from it
    license: str | None = None  # the data's license, listed in exported model cards
    question_field: str | None = None  # null = detect among common names (Question, question, input, ...)
    answer_field: str | None = None  # null = detect among common names (Answer, answer, output, ...)
    context_field: str | None = None  # a passage shown above the question (PubMedQA's abstract)
    input_field: str | None = None  # alpaca's input, shown below the instruction; null = detect `input`
    decision_field: str | None = None  # a yes/no/maybe verdict put first in the answer
    answer_format: str = "leading"  # leading: "C. text"; final_line: reasoning, then `Answer: C` (GRPO's)
    messages_field: str | None = None  # multi-turn chats (OpenAI messages / ShareGPT); null = detect
    kind: str = MISSING  # qa, multiple_choice, conversation, text, preference, unpaired (medexp.data.readers)
    text_field: str | None = (
        None  # text: the column holding each document; null = detect (text, content, ...)
    )
    chosen_field: str | None = None  # preference: the preferred answer's column; null = detect `chosen`
    rejected_field: str | None = None  # preference: the dispreferred answer's; null = detect `rejected`
    completion_field: str | None = None  # unpaired: the answer's column; null = detect `completion`
    label_field: str | None = (
        None  # unpaired: desirable or not (true/false, 1/0, good/bad); null = detect `label`
    )
    options_field: str | None = None  # multiple_choice: the field holding all options (dict or list)
    option_columns: list[str] | None = None  # multiple_choice: or one column per option, in order
    index_base: int | None = None  # multiple_choice: 0 or 1 when the answer is an index; null otherwise
    dedup: bool = MISSING  # drop exact repeated pairs (after folding case, whitespace, punctuation)
    near_dup: NearDupConfig = field(default_factory=NearDupConfig)  # MinHash LSH near-duplicate removal
    max_tokens: int = MISSING  # drop pairs whose formatted conversation is longer, in tokens
    limit: int | None = None  # keep only the first N cleaned pairs (seeded shuffle); null = all
    weight: float = MISSING  # in a mixture: copies of each training row (0.5 = a seeded half)
    val_fraction: float = MISSING  # share of questions held out for validation
    system_prompt: str = MISSING  # the system message every conversation starts with

    RULES: ClassVar[Rules] = (
        require(
            "weight",
            lambda v: v > 0,
            "{key} must be positive, got {value}: the copies of each training row this source adds "
            "(0.5 = a seeded half of its rows, 2 = every row twice).",
        ),
        require(
            "val_fraction",
            lambda v: 0 < v < 1,
            "{key} must be strictly between 0 and 1, got {value}. It is the share of pairs held out for "
            "validation, e.g. {key}=0.05.",
        ),
        positive("max_tokens", 1024),
        require(
            "option_columns",
            len,
            "{key} must be a list of column names, one per option, got {value!r}. For example: "
            "{key}=[opa,opb,opc,opd].",
        ),
        require(
            "index_base",
            lambda v: v in (0, 1),
            "{key} must be 0, 1 or null, got {value!r}: how the source counts the index of the correct option "
            "(null when the answer is a letter or the option's text).",
        ),
        positive("limit", 1000),
        require(
            "system_prompt",
            lambda v: bool(str(v).strip()),
            "{key} is empty. Every training pair is formatted with it; set one.",
        ),
    )

    @staticmethod
    def check(node: DictConfig, key: str, root: DictConfig) -> None:
        """The data is named: a local file medexp can read, or a hub id; final_line answers have a choice."""
        _check_answer_format(node, key)
        if node.path is None:
            if not node.name:
                raise UserError(
                    f"{key}.path is required: the dataset names neither a local file ({key}.path) nor a hub id "
                    f"({key}.name). Give a local .csv, .json, .jsonl or .parquet file, e.g. "
                    f"`dataset=file {key}.path=data/my_qa.jsonl`, or use a hub dataset such as dataset=medquad."
                )
            return
        path = Path(str(node.path)).expanduser()
        if not path.is_file():
            raise UserError(
                f"{key}.path={node.path!r} does not exist or is not a file (resolved to {path.resolve()}). "
                "Give the path of a local .csv, .json, .jsonl or .parquet file, relative to the directory you "
                "launch from."
            )
        # the file's suffix is checked by the reader of its kind (medexp.data.readers), after validate


def _check_answer_format(node: DictConfig, key: str) -> None:
    fmt = node.get("answer_format", "leading")
    if fmt not in ("leading", "final_line"):
        raise UserError(
            f"{key}.answer_format={fmt!r} is not a format medexp writes. Use leading (the choice first: "
            f'"C. text", "Yes. ...") or final_line (reasoning, then a last line `Answer: X`, as a GRPO stage '
            "rewards it)."
        )
