"""Plain text for continued pretraining (`dataset.kind=text`): one document per row of a `.jsonl` / `.json` /
`.csv` / `.parquet` file or a hub dataset (its text column, `dataset.text_field` or detected), or per non-empty
line of a `.txt` file (the convention of Hugging Face's `text` loader). Prepared as packed blocks
(medexp.data.packing)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from medexp.config import UserError
from medexp.data.packing import prepare_text
from medexp.data.readers.base import TABLE_SUFFIXES, Reader
from medexp.data.records import Document
from medexp.data.rows import RawRecords, listed, pick, read_rows, structured, text, usable

TEXT_NAMES = ("text", "content", "document", "body", "abstract", "article", "passage")


def read_documents(dataset_cfg: DictConfig, key: str = "dataset") -> RawRecords:
    """The source's documents, empty and non-text rows dropped by reason."""
    path = Path(str(dataset_cfg.path)) if dataset_cfg.path else None
    if path is not None and path.suffix.lower() == ".txt":
        return _nonempty(_lines(path, key), dataset_cfg, key)
    frame = read_rows(dataset_cfg)
    if frame.empty:
        return _nonempty(RawRecords(records=[], rows_in=0, columns=("", "")), dataset_cfg, key)
    columns = [str(c) for c in frame.columns]
    column = pick(columns, dataset_cfg.text_field, TEXT_NAMES, "text", listed(columns), key)
    raw = RawRecords(records=[], rows_in=len(frame), columns=(column, ""))
    for value in frame[column].tolist():
        if structured(value):
            raw.dropped["non_text"] += 1
        elif not text(value):
            raw.dropped["empty_text"] += 1
        else:
            raw.records.append(Document(text(value)))
    return _nonempty(raw, dataset_cfg, key)


def _lines(path: Path, key: str) -> RawRecords:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise UserError(
            f"{key}.path={str(path)!r} is not UTF-8 text (byte {err.start}): save it as UTF-8."
        ) from None
    raw = RawRecords(records=[], rows_in=len(lines), columns=("line", ""))
    for line in lines:
        if line.strip():
            raw.records.append(Document(line.strip()))
        else:
            raw.dropped["empty_text"] += 1
    return raw


def _nonempty(raw: RawRecords, dataset_cfg: DictConfig, key: str) -> RawRecords:
    """The documents, when there is at least one: the shared refusal, worded for text."""
    return usable(
        raw,
        dataset_cfg,
        key,
        holds="(dataset.kind=text) holds no text to pretrain on",
        none="has text",
        wanted="Give a .txt file with one document per line, or rows with a text column (dataset.text_field "
        "names it).",
    )


READER = Reader(
    kind="text",
    record=Document,
    read=read_documents,
    prepare=prepare_text,
    describe="plain text",
    stage="pretraining",
    suffixes=(*TABLE_SUFFIXES, ".txt"),
)
