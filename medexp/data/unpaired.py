"""Labelled completions to the conversational prompt / completion / label columns TRL's KTOTrainer reads:
cleaned like preference pairs (exact and near duplicates on the whole row, `limit`), length-filtered (the
conversation within `dataset.max_tokens`), split by prompt. `unpair` turns preference pairs into such rows (the
chosen answer desirable, the rejected one not), so a KTO stage trains on a paired preference file too."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from medexp.data.chat import chat_messages
from medexp.data.cleaning import (
    deduplicate,
    fingerprint,
    shuffle_and_limit,
    split_by_prompt,
)
from medexp.data.multiple_choice import match_key
from medexp.data.prepared import PreparedData, SourceReport
from medexp.data.records import LabelledCompletion, PreferencePair
from medexp.data.rows import RawRecords, Source

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)
LABELS = {True: "desirable", False: "undesirable"}  # how a row's label reads where records are texts


def unpair(raw: RawRecords) -> RawRecords:
    """Preference pairs as labelled completions: each pair one desirable row (its chosen answer) and one
    undesirable row (its rejected answer). Other records pass through."""
    records: list[LabelledCompletion] = []
    for record in raw.records:
        if isinstance(record, PreferencePair):
            records += [
                LabelledCompletion(record.prompt, record.chosen, True),
                LabelledCompletion(record.prompt, record.rejected, False),
            ]
        else:
            records.append(record)
    return RawRecords(records=records, rows_in=raw.rows_in, columns=raw.columns, dropped=Counter(raw.dropped))


def prepare_unpaired(
    raw: RawRecords,
    dataset_cfg: DictConfig,
    tokenizer: PreTrainedTokenizerBase,
    seed: int,
    mixture: Sequence[Source] = (),
) -> PreparedData:
    """Deduplicate, length-filter, limit, split by prompt; train / validation hold conversational prompt /
    completion / label columns, in a seeded order (KTO samples them in order: its KL term pairs each row with
    its batch neighbours'). The pairs evaluation compares answers with are the desirable rows."""
    raw = unpair(raw)
    dropped = Counter(raw.dropped)
    rows = [
        LabelledCompletion(p, c, d == LABELS[True])
        for p, c, d in deduplicate(_texts(raw), dataset_cfg, dropped)
    ]
    system = str(dataset_cfg.system_prompt).strip()
    lengths = [
        len(
            tokenizer.apply_chat_template(
                chat_messages(system, row.prompt, row.completion), tokenize=True, return_dict=False
            )
        )
        for row in rows
    ]
    kept = [(row, n) for row, n in zip(rows, lengths, strict=True) if n <= dataset_cfg.max_tokens]
    dropped["too_long"] = len(rows) - len(kept)
    kept, unused = shuffle_and_limit(kept, dataset_cfg.limit, seed)
    validation, train = split_by_prompt(
        [row for row, _ in kept], raw.rows_in, dataset_cfg, dropped, "labelled completion", "a KTO stage"
    )
    report = SourceReport(rows_in=raw.rows_in, rows_kept=len(kept), train_rows=len(train))
    report.dropped, report.unused_by_limit = +dropped, unused

    def desirable(indices: list[int]) -> list[tuple[str, str]]:
        return [(kept[i][0].prompt, kept[i][0].completion) for i in indices if kept[i][0].desirable]

    train_pairs, validation_pairs = desirable(train), desirable(validation)
    data = PreparedData(
        train=_conversations(system, [kept[i][0] for i in train]),
        validation=_conversations(system, [kept[i][0] for i in validation]),
        train_pairs=train_pairs,
        validation_pairs=validation_pairs,
        train_sources=["dataset"] * len(train_pairs),
        validation_sources=["dataset"] * len(validation_pairs),
        rows_in=raw.rows_in,
        dropped=+dropped,
        fingerprint=fingerprint(
            (split, ((system, *_row_texts(kept[i][0])) for i in indices))
            for split, indices in (("train", train), ("validation", validation))
        ),
        leakage=len(
            {match_key(kept[i][0].prompt) for i in validation} & {match_key(kept[i][0].prompt) for i in train}
        ),
        sources={"dataset": report},
        max_tokens=int(dataset_cfg.max_tokens),
        lengths={"train": [kept[i][1] for i in train], "validation": [kept[i][1] for i in validation]},
        kept=len(kept),
    )
    n_desirable = sum(row.desirable for row, _ in kept)
    log.info(
        "%s: %d desirable, %d undesirable (prompt column %r, completion/label columns %r)",
        data.summary(),
        n_desirable,
        len(kept) - n_desirable,
        *raw.columns,
    )
    return data


def _row_texts(row: LabelledCompletion) -> tuple[str, str, str]:
    return row.prompt, row.completion, LABELS[row.desirable]


def _texts(raw: RawRecords) -> list[tuple[str, str, str]]:
    """The rows as texts, so the cleaning reads the label as one more field."""
    return [_row_texts(row) for row in raw.records]


def _conversations(system: str, rows: list[LabelledCompletion]) -> datasets.Dataset:
    import datasets

    return datasets.Dataset.from_dict(
        {
            "prompt": [chat_messages(system, row.prompt) for row in rows],
            "completion": [[{"role": "assistant", "content": row.completion}] for row in rows],
            "label": [row.desirable for row in rows],
        }
    )
