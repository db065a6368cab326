"""Question-answer pairs (and conversations, multiple-choice items) to tokenized train / validation sets: each
source cleaned, chat-formatted with its system prompt, length-filtered and limited; all split together by
question; each source's training rows weighted. What an sft stage trains on."""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from medexp.config import UserError
from medexp.data.chat import tokenize_pairs
from medexp.data.cleaning import (
    deduplicate,
    fingerprint,
    shuffle_and_limit,
    split_by_question,
    validation_size,
)
from medexp.data.multiple_choice import match_key
from medexp.data.prepared import PreparedData, SourceReport
from medexp.data.rows import RawRecords, Source

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


@dataclass
class Item:
    source: str
    system_prompt: str
    question: str
    answer: str
    input_ids: list[int]
    mask: list[int]


def prepare_pairs(
    raw: RawRecords,
    dataset_cfg: DictConfig,
    tokenizer: PreTrainedTokenizerBase,
    seed: int,
    mixture: Sequence[Source] = (),
) -> PreparedData:
    """Clean each source, chat-format with its system prompt, length-filter, limit; split all of them together
    by question (the main dataset's val_fraction); then weight each source's training rows. Validation rows
    are never weighted, so validation loss covers every source once. Deterministic for a given seed."""
    items: list[Item] = []
    reports: dict[str, SourceReport] = {}
    for source in [Source("dataset", dataset_cfg, raw), *mixture]:
        kept, reports[source.name] = _clean(source, tokenizer, seed)
        items.extend(kept)
    rng = random.Random(seed)
    validation, train = _split(items, reports, dataset_cfg, rng, interleave=bool(mixture))
    train_items = _weighted_train(items, train, reports, rng)
    validation_items = [items[i] for i in validation]
    leaked = {match_key(items[i].question) for i in validation} & {
        match_key(items[i].question) for i in train
    }
    data = PreparedData(
        train=_dataset(train_items),
        validation=_dataset(validation_items),
        train_pairs=[(items[i].question, items[i].answer) for i in train],
        validation_pairs=[(items[i].question, items[i].answer) for i in validation],
        train_sources=[items[i].source for i in train],
        validation_sources=[items[i].source for i in validation],
        rows_in=sum(r.rows_in for r in reports.values()),
        dropped=+sum((r.dropped for r in reports.values()), Counter()),
        fingerprint=fingerprint(
            (split, ((it.source, it.system_prompt, it.question, it.answer) for it in chosen))
            for split, chosen in (("train", train_items), ("validation", validation_items))
        ),
        leakage=len(leaked),
        sources=reports,
        max_tokens=int(dataset_cfg.max_tokens),
    )
    q_col, a_col = raw.columns
    columns = (
        f"conversation column {q_col!r}"
        if q_col == a_col
        else f"question column {q_col!r}, answer column {a_col!r}"
    )
    log.info("%s (%s)", data.summary(), columns)
    return data


def _clean(source: Source, tokenizer: PreTrainedTokenizerBase, seed: int) -> tuple[list[Item], SourceReport]:
    """One source's pairs deduplicated, near-deduplicated, tokenized, length-filtered, shuffled and limited."""
    cfg = source.cfg
    report = SourceReport(rows_in=source.raw.rows_in, weight=float(cfg.weight))
    report.dropped.update(source.raw.dropped)
    pairs = deduplicate(source.raw.records, cfg, report.dropped)
    system_prompt = str(cfg.system_prompt).strip()
    input_ids, masks = tokenize_pairs(tokenizer, system_prompt, pairs)
    items = [
        Item(source.name, system_prompt, q, a, ids, mask)
        for (q, a), ids, mask in zip(pairs, input_ids, masks, strict=True)
        if len(ids) <= cfg.max_tokens
    ]
    report.dropped["too_long"] = len(pairs) - len(items)
    items, report.unused_by_limit = shuffle_and_limit(items, cfg.limit, seed)
    report.dropped = +report.dropped  # drop zero counts
    report.rows_kept = len(items)
    return items, report


def _split(
    items: list[Item],
    reports: dict[str, SourceReport],
    dataset_cfg: DictConfig,
    rng: random.Random,
    interleave: bool,
) -> tuple[list[int], list[int]]:
    """(validation, train) indices, split by question; refused when too little is left to split."""
    if len(items) < 2:
        rows_in = sum(r.rows_in for r in reports.values())
        dropped = +sum((r.dropped for r in reports.values()), Counter())
        raise UserError(
            f"Only {len(items)} usable pair(s) left out of {rows_in} rows (dropped: {dict(dropped) or 'none'}); "
            "training needs at least 2 (one for validation). Check the question/answer columns, or raise "
            f"dataset.max_tokens (now {dataset_cfg.max_tokens})."
        )
    order = list(range(len(items)))
    if interleave:
        rng.shuffle(order)  # interleave the sources of a mixture, so validation draws from each
    n_val = validation_size(len(items), dataset_cfg.val_fraction)
    validation, train = split_by_question(order, [(it.question, it.answer) for it in items], n_val)
    if not train:
        raise UserError(
            f"All {len(items)} usable pairs share one question, so no split keeps validation questions out of "
            "training. Use data with more than one distinct question."
        )
    return validation, train


def _weighted_train(
    items: list[Item], train: list[int], reports: dict[str, SourceReport], rng: random.Random
) -> list[Item]:
    """Each source's training rows repeated by its weight: floor(weight) copies of every row, plus a seeded
    sample of the fractional part."""
    train_items: list[Item] = []
    for name, report in reports.items():
        own = [items[i] for i in train if items[i].source == name]
        whole, frac = divmod(report.weight, 1.0)
        weighted = own * int(whole) + rng.sample(own, round(len(own) * frac))
        report.train_rows = len(weighted)
        train_items.extend(weighted)
    if not train_items:
        raise UserError(
            "The mixture weights leave no training rows. Give at least one source a weight that keeps rows, "
            "e.g. dataset.weight=1."
        )
    return train_items


def _dataset(items: list[Item]) -> datasets.Dataset:
    import datasets

    return datasets.Dataset.from_dict(
        {"input_ids": [it.input_ids for it in items], "completion_mask": [it.mask for it in items]}
    )
