"""One normaliser for every multiple-choice source (MedMCQA, MedQA, PubMedQA, local files).

Options may come as a dict keyed by letter ({"A": ...}), a list, or separate columns; the answer as a letter
("B", "b)", "(B)"), an index (0- or 1-based, where the source states `index_base`) or the option's full text (matched after
normalising case, whitespace and punctuation). Any number of options from 2 to 26 (A..Z). A row that cannot
be normalised raises `Skip` with a reason; `normalise_rows` counts the reasons and never stops.
"""

from __future__ import annotations

import numbers
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

LETTERS = string.ascii_uppercase
_LETTER = re.compile(r"^\(?\s*(?:option\s+)?([A-Za-z])\s*[).:]?\s*\)?$", re.IGNORECASE)


class Skip(Exception):
    """A row that cannot be normalised; `reason` is a short key for the drop counts."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class MCItem:
    question: str
    options: tuple[str, ...]
    answer_index: int

    @property
    def letter(self) -> str:
        return LETTERS[self.answer_index]

    @property
    def answer_text(self) -> str:
        return self.options[self.answer_index]

    def prompt(self) -> str:
        """The question with an "Options:" block, one lettered option per line."""
        lines = [f"{LETTERS[i]}. {text}" for i, text in enumerate(self.options)]
        return f"{self.question}\n\nOptions:\n" + "\n".join(lines)

    def target(self) -> str:
        """The answer as both letter and text, e.g. "B. Iron deficiency"."""
        return f"{self.letter}. {self.answer_text}"


def _clean(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):  # None or NaN
        return ""
    return " ".join(str(value).split())


def match_key(text: str) -> str:
    """Case, whitespace and punctuation folded away, for matching an answer's text to an option."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    kept = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in folded)
    return " ".join(kept.split())


def _options(raw: Any) -> list[str]:
    if hasattr(raw, "tolist") and not isinstance(raw, (str, bytes)):  # a numpy array, as parquet lists load
        raw = raw.tolist()
    if isinstance(raw, Mapping):
        by_index: dict[int, str] = {}
        for key, value in raw.items():
            letter = _LETTER.match(str(key).strip())
            if letter is None:
                raise Skip("bad_option_key")
            by_index[LETTERS.index(letter.group(1).upper())] = _clean(value)
        if sorted(by_index) != list(range(len(by_index))):
            raise Skip("option_letters_not_contiguous")
        options = [by_index[i] for i in range(len(by_index))]
    elif isinstance(raw, (list, tuple)):
        options = [_clean(v) for v in raw]
    else:
        raise Skip("bad_options")
    while options and not options[-1]:  # trailing empty columns (a source with fewer options on this row)
        options.pop()
    if len(options) < 2:
        raise Skip("too_few_options")
    if len(options) > len(LETTERS):
        raise Skip("too_many_options")
    if any(not o for o in options):
        raise Skip("empty_option")
    return options


def _whole_number(value: Any) -> int | None:
    """An int, an integral float (an index column with a gap loads as floats) or a string of decimal digits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and float(value).is_integer():
        return int(value)
    text = _clean(value)
    return int(text) if text.isdecimal() and text.isascii() else None


def _answer_index(answer: Any, options: Sequence[str], index_base: int | None) -> int:
    if answer is None or (isinstance(answer, float) and answer != answer) or _clean(answer) == "":
        raise Skip("missing_answer")
    # Numbers are indices only where the source says it counts that way; elsewhere "5" may be an option's text.
    number = _whole_number(answer) if index_base is not None else None
    if number is not None:
        index = number - index_base
        if not 0 <= index < len(options):
            raise Skip("answer_out_of_range")
        return index
    text = _clean(answer)
    letter = _LETTER.match(text)
    if letter is not None and LETTERS.index(letter.group(1).upper()) < len(options):
        return LETTERS.index(letter.group(1).upper())
    # Not a letter of these options: the option's own text (which may itself be one letter, like "x").
    matches = [i for i, option in enumerate(options) if match_key(option) == match_key(text)]
    if len(matches) > 1:
        raise Skip("ambiguous_answer")
    if not matches:
        raise Skip("answer_out_of_range" if letter is not None else "answer_not_an_option")
    return matches[0]


def normalise(question: Any, options: Any, answer: Any, index_base: int | None = None) -> MCItem:
    """One row -> MCItem, or `Skip(reason)`. `index_base` (0 or 1) says how the source counts indices."""
    q = _clean(question)
    if not q:
        raise Skip("missing_question")
    opts = _options(options)
    return MCItem(q, tuple(opts), _answer_index(answer, opts, index_base))


@dataclass(frozen=True)
class MCFields:
    """Where a source keeps its parts: options in one field (dict or list) or in several columns."""

    question: str
    answer: str
    options: str | None = None
    option_columns: tuple[str, ...] = ()
    index_base: int | None = None


def normalise_rows(rows: Iterable[Mapping[str, Any]], fields: MCFields) -> tuple[list[MCItem], Counter[str]]:
    """Every row that normalises, and the count of skipped rows by reason."""
    items: list[MCItem] = []
    skipped: Counter[str] = Counter()
    for row in rows:
        try:
            if not isinstance(row, Mapping):
                raise Skip("not_a_record")
            options = (
                row.get(fields.options) if fields.options else [row.get(c) for c in fields.option_columns]
            )
            items.append(
                normalise(row.get(fields.question), options, row.get(fields.answer), fields.index_base)
            )
        except Skip as skip:
            skipped[skip.reason] += 1
    return items, skipped
