"""The row helpers every reader shares: reading a source's rows, finding a column, a cell as text, and the
refusal of a source that holds nothing usable; `RawRecords`, what a reader returns, and `Source`, one source of
a run (the main `dataset` or a `mixture.<name>` component) as read."""

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


@dataclass
class RawRecords:
    """A source's typed records after the cheap cleaning, with counts of what was read and dropped by reason."""

    records: list[Any]  # QAPair, PreferencePair or Document (medexp.data.records), one per usable row
    rows_in: int
    columns: tuple[str, str]  # the columns read, as the data line names them
    dropped: Counter[str] = field(default_factory=Counter)

    @property
    def pairs(self) -> list[Any]:
        """The records, by the name question-answer callers (evaluation, tests) know them."""
        return self.records


@dataclass
class Source:
    """One dataset of a run, read and cheaply cleaned: the main `dataset`, or a `mixture.<name>` component."""

    name: str  # "dataset" for the main one, else the mixture key (e.g. "safety")
    cfg: DictConfig
    raw: RawRecords


def text(value: Any) -> str:
    """A cell as stripped text; "" for a missing cell (None or NaN)."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value).strip()


def structured(value: Any) -> bool:
    """A JSON structure (list, object, boolean) where text belongs: such a cell is dropped, not guessed at."""
    return isinstance(value, (list, dict, bool))


def listed(columns: list[str]) -> str:
    """The columns as a refusal lists them: 'a', 'b' (or none)."""
    return ", ".join(repr(c) for c in columns) or "none"


def pick(
    columns: list[str], configured: str | None, names: tuple[str, ...], role: str, found: str, key: str
) -> str:
    """The column of a `role` (question, answer, text, ...): the configured `<key>.<role>_field`, else the first
    of `names` present (any case); a UserError naming the columns found otherwise."""
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


def usable(
    raw: RawRecords,
    dataset_cfg: DictConfig,
    key: str,
    holds: str = "holds nothing to train or evaluate on",
    none: str = "is usable",
    wanted: str = "Give data with at least one row that has both a question and an answer.",
) -> RawRecords:
    """The records, when there is at least one: a source with none (a header and no rows, every row empty) is
    refused here, with the counts by reason, instead of failing later inside tokenization. `holds`, `none` and
    `wanted` word the refusal for a kind of data other than question-answer pairs (plain text)."""
    if raw.records:
        return raw
    source = dataset_cfg.path or dataset_cfg.name
    reasons = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in raw.dropped.items() if n)
    read = "it has no rows" if not raw.rows_in else f"of its {raw.rows_in} rows none {none} ({reasons})"
    raise UserError(f"{key} {source!r} {holds}: {read}. {wanted}")


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
        content = path.read_text(encoding="utf-8")
        if suffix == ".json" and content.lstrip().startswith("["):
            return pd.DataFrame(json.loads(content))
        rows = [json.loads(line) for line in content.splitlines() if line.strip()]
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
