"""Plain text for continued pretraining (`dataset.kind=text`): documents read, cleaned and deduplicated like QA
pairs, split by document, then packed into blocks of `dataset.max_tokens` tokens with EOS between documents
and the loss on every token.

A document is one row of a `.jsonl` / `.json` / `.csv` / `.parquet` file or a hub dataset (its text column,
`dataset.text_field` or detected), or one non-empty line of a `.txt` file (the convention of Hugging Face's
`text` loader). Documents travel through the QA pipeline's cleaning as (document, "") pairs, so exact and near
duplicates are dropped by the same code and counted the same way.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from medexp.config import UserError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from medexp.data.loading import RawPairs
    from medexp.data.prepare import PreparedData

log = logging.getLogger(__name__)

TEXT_NAMES = ("text", "content", "document", "body", "abstract", "article", "passage")


def load_documents(dataset_cfg: DictConfig, key: str) -> RawPairs:
    """The source's documents as (document, "") pairs, empty and non-text rows dropped by reason."""
    from medexp.data.loading import RawPairs, _pick, _text, read_rows

    path = Path(str(dataset_cfg.path)) if dataset_cfg.path else None
    if path is not None and path.suffix.lower() == ".txt":
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as err:
            raise UserError(
                f"{key}.path={str(path)!r} is not UTF-8 text (byte {err.start}): save it as UTF-8."
            ) from None
        raw = RawPairs(pairs=[], rows_in=len(lines), columns=("line", ""))
        for line in lines:
            if line.strip():
                raw.pairs.append((line.strip(), ""))
            else:
                raw.dropped["empty_text"] += 1
        return _nonempty(raw, dataset_cfg, key)

    frame = read_rows(dataset_cfg)
    if frame.empty:
        return _nonempty(RawPairs(pairs=[], rows_in=0, columns=("", "")), dataset_cfg, key)
    columns = [str(c) for c in frame.columns]
    found = ", ".join(repr(c) for c in columns)
    column = _pick(columns, dataset_cfg.get("text_field"), TEXT_NAMES, "text", found, key)
    raw = RawPairs(pairs=[], rows_in=len(frame), columns=(column, ""))
    for value in frame[column].tolist():
        if isinstance(value, (list, dict, bool)):
            raw.dropped["non_text"] += 1
        elif not _text(value):
            raw.dropped["empty_text"] += 1
        else:
            raw.pairs.append((_text(value), ""))
    return _nonempty(raw, dataset_cfg, key)


def _nonempty(raw: RawPairs, dataset_cfg: DictConfig, key: str) -> RawPairs:
    """The documents, when there is at least one: loading's refusal, worded for text."""
    from medexp.data.loading import _usable

    return _usable(
        raw,
        dataset_cfg,
        key,
        holds="(dataset.kind=text) holds no text to pretrain on",
        none="has text",
        wanted="Give a .txt file with one document per line, or rows with a text column (dataset.text_field "
        "names it).",
    )


def prepare_text(
    raw: RawPairs, dataset_cfg: DictConfig, tokenizer: PreTrainedTokenizerBase, seed: int
) -> PreparedData:
    """Deduplicate, split by document (dataset.val_fraction), tokenize, and pack each split into blocks of
    dataset.max_tokens tokens: documents joined with EOS, a long one running over several blocks, the last
    block shorter. completion_mask is 1 everywhere: the loss is on every token."""
    import datasets

    from medexp.data.near_dup import drop_near_duplicates
    from medexp.data.prepare import PreparedData, SourceReport, drop_duplicates

    docs, dropped = raw.pairs, Counter(raw.dropped)
    if dataset_cfg.dedup:
        docs, dropped["duplicate"] = drop_duplicates(docs)
    if dataset_cfg.near_dup.threshold is not None:
        docs, dropped["near_duplicate"] = drop_near_duplicates(
            docs, float(dataset_cfg.near_dup.threshold), int(dataset_cfg.near_dup.num_perm)
        )
    docs = [d for d, _ in docs]
    random.Random(seed).shuffle(docs)
    if dataset_cfg.limit is not None and len(docs) > dataset_cfg.limit:
        dropped["over_limit"] = len(docs) - dataset_cfg.limit
        docs = docs[: dataset_cfg.limit]
    if len(docs) < 2:
        raise UserError(
            f"Only {len(docs)} distinct document(s) left of {raw.rows_in} rows; pretraining needs at least 2 "
            "(one held out for validation loss). Give more text, or turn deduplication off with dataset.dedup=false."
        )
    n_val = min(len(docs) - 1, max(1, round(len(docs) * dataset_cfg.val_fraction)))
    validation, train = docs[:n_val], docs[n_val:]
    block = int(dataset_cfg.max_tokens)

    def packed(split: list[str]) -> datasets.Dataset:
        ids = tokenizer(split, add_special_tokens=False)["input_ids"]
        stream = [t for doc in ids for t in [*doc, tokenizer.eos_token_id]]
        blocks = [stream[i : i + block] for i in range(0, len(stream), block)]
        return datasets.Dataset.from_dict(
            {"input_ids": blocks, "completion_mask": [[1] * len(b) for b in blocks]}
        )

    digest = hashlib.sha256()
    for split, chosen in (("train", train), ("validation", validation)):
        for doc in chosen:
            digest.update(f"\0{split}\0{doc}".encode())
    report = SourceReport(rows_in=raw.rows_in, rows_kept=len(docs), train_rows=len(train))
    report.dropped = +dropped
    data = PreparedData(
        train=packed(train),
        validation=packed(validation),
        train_pairs=[(d, "") for d in train],
        validation_pairs=[(d, "") for d in validation],
        train_sources=["dataset"] * len(train),
        validation_sources=["dataset"] * len(validation),
        rows_in=raw.rows_in,
        dropped=+dropped,
        fingerprint=digest.hexdigest()[:16],
        sources={"dataset": report},
        max_tokens=block,
    )
    log.info(
        "%s; packed into %d train / %d validation blocks of up to %d tokens (text column %r)",
        data.summary(),
        len(data.train),
        len(data.validation),
        block,
        raw.columns[0],
    )
    return data
