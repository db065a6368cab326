"""Preference pairs to the conversational prompt / chosen / rejected columns TRL's preference trainers read:
cleaned like QA pairs (exact and near duplicates on the whole row, `limit`), length-filtered (the longer of the
two conversations within `dataset.max_tokens`), split by prompt. The prompt becomes the system + user messages
and each answer the assistant's reply, so the trainer renders them with the same chat template and system
prompt as supervised stages."""

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
from medexp.data.records import PreferencePair
from medexp.data.rows import RawRecords, Source

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


def prepare_preferences(
    raw: RawRecords,
    dataset_cfg: DictConfig,
    tokenizer: PreTrainedTokenizerBase,
    seed: int,
    mixture: Sequence[Source] = (),
) -> PreparedData:
    """Deduplicate, length-filter, limit, split by prompt; train / validation hold conversational prompt /
    chosen / rejected columns (a mixture is not mixed in). The token lengths drawn by the data report are each
    row's longer conversation."""
    dropped = Counter(raw.dropped)
    pairs = deduplicate(raw.records, dataset_cfg, dropped)
    system = str(dataset_cfg.system_prompt).strip()
    lengths = [_longer(tokenizer, system, pair) for pair in pairs]
    kept = [(pair, n) for pair, n in zip(pairs, lengths, strict=True) if n <= dataset_cfg.max_tokens]
    dropped["too_long"] = len(pairs) - len(kept)
    kept, unused = shuffle_and_limit(kept, dataset_cfg.limit, seed)
    validation, train = split_by_prompt(
        [pair for pair, _ in kept], raw.rows_in, dataset_cfg, dropped, "preference pair", "a preference stage"
    )
    report = SourceReport(rows_in=raw.rows_in, rows_kept=len(kept), train_rows=len(train))
    report.dropped, report.unused_by_limit = +dropped, unused
    leaked = {match_key(kept[i][0].prompt) for i in validation} & {
        match_key(kept[i][0].prompt) for i in train
    }
    data = PreparedData(
        train=_conversations(system, [kept[i][0] for i in train]),
        validation=_conversations(system, [kept[i][0] for i in validation]),
        train_pairs=[
            kept[i][0][:2] for i in train
        ],  # (prompt, chosen): what evaluation compares answers with
        validation_pairs=[kept[i][0][:2] for i in validation],
        train_sources=["dataset"] * len(train),
        validation_sources=["dataset"] * len(validation),
        rows_in=raw.rows_in,
        dropped=+dropped,
        fingerprint=fingerprint(
            (split, ((system, *kept[i][0]) for i in indices))
            for split, indices in (("train", train), ("validation", validation))
        ),
        leakage=len(leaked),
        sources={"dataset": report},
        max_tokens=int(dataset_cfg.max_tokens),
        lengths={"train": [kept[i][1] for i in train], "validation": [kept[i][1] for i in validation]},
    )
    log.info("%s (prompt column %r, chosen/rejected columns %r)", data.summary(), *raw.columns)
    return data


def _longer(tokenizer: PreTrainedTokenizerBase, system: str, pair: PreferencePair) -> int:
    """Tokens in the longer of the row's two conversations (prompt + chosen, prompt + rejected)."""
    return max(
        len(
            tokenizer.apply_chat_template(
                chat_messages(system, pair.prompt, answer), tokenize=True, return_dict=False
            )
        )
        for answer in (pair.chosen, pair.rejected)
    )


def _conversations(system: str, pairs: list[PreferencePair]) -> datasets.Dataset:
    import datasets

    return datasets.Dataset.from_dict(
        {
            "prompt": [chat_messages(system, pair.prompt) for pair in pairs],
            "chosen": [[{"role": "assistant", "content": pair.chosen}] for pair in pairs],
            "rejected": [[{"role": "assistant", "content": pair.rejected}] for pair in pairs],
        }
    )
