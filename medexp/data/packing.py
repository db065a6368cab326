"""Plain text to packed blocks, for continued pretraining: documents deduplicated, split by document, then
packed into blocks of `dataset.max_tokens` tokens with EOS between documents and the loss on every token."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from medexp.config import UserError
from medexp.data.cleaning import deduplicate, fingerprint, shuffle_and_limit, validation_size
from medexp.data.prepared import PreparedData, SourceReport
from medexp.data.rows import RawRecords, Source

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


def prepare_text(
    raw: RawRecords,
    dataset_cfg: DictConfig,
    tokenizer: PreTrainedTokenizerBase,
    seed: int,
    mixture: Sequence[Source] = (),
) -> PreparedData:
    """Deduplicate, split by document (dataset.val_fraction), tokenize, and pack each split into blocks of
    dataset.max_tokens tokens: documents joined with EOS, a long one running over several blocks, the last
    block shorter. completion_mask is 1 everywhere: the loss is on every token. A mixture is not packed in."""
    dropped = Counter(raw.dropped)
    docs = [doc.text for doc in deduplicate(raw.records, dataset_cfg, dropped)]
    docs, unused = shuffle_and_limit(docs, dataset_cfg.limit, seed)
    if len(docs) < 2:
        raise UserError(
            f"Only {len(docs)} distinct document(s) left of {raw.rows_in} rows; pretraining needs at least 2 "
            "(one held out for validation loss). Give more text, or turn deduplication off with dataset.dedup=false."
        )
    n_val = validation_size(len(docs), dataset_cfg.val_fraction)
    validation, train = docs[:n_val], docs[n_val:]
    block = int(dataset_cfg.max_tokens)
    report = SourceReport(rows_in=raw.rows_in, rows_kept=len(docs), train_rows=len(train))
    report.dropped, report.unused_by_limit = +dropped, unused
    data = PreparedData(
        train=_packed(tokenizer, train, block),
        validation=_packed(tokenizer, validation, block),
        train_pairs=[(d, "") for d in train],
        validation_pairs=[(d, "") for d in validation],
        train_sources=["dataset"] * len(train),
        validation_sources=["dataset"] * len(validation),
        rows_in=raw.rows_in,
        dropped=+dropped,
        fingerprint=fingerprint(
            (split, ((doc,) for doc in chosen))
            for split, chosen in (("train", train), ("validation", validation))
        ),
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


def _packed(tokenizer: PreTrainedTokenizerBase, docs: list[str], block: int) -> datasets.Dataset:
    import datasets

    ids = tokenizer(docs, add_special_tokens=False)["input_ids"]
    stream = [t for doc in ids for t in [*doc, tokenizer.eos_token_id]]
    blocks = [stream[i : i + block] for i in range(0, len(stream), block)]
    return datasets.Dataset.from_dict(
        {"input_ids": blocks, "completion_mask": [[1] * len(b) for b in blocks]}
    )
