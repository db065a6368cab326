"""From a source's records to tokenized train / validation sets, as its data kind prepares them by default
(medexp.data.readers): question-answer pairs chat-formatted with a mixture (medexp.data.pairs), plain text
packed (medexp.data.packing), preference pairs as conversations (medexp.data.preference)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from medexp.data.chat import chat_messages, tokenize_pairs
from medexp.data.prepared import PreparedData
from medexp.data.readers import reader_for
from medexp.data.rows import RawRecords, Source

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


def prepare_data(
    raw: RawRecords,
    dataset_cfg: DictConfig,
    tokenizer: PreTrainedTokenizerBase,
    seed: int,
    mixture: Sequence[Source] = (),
) -> PreparedData:
    """The source's records prepared by its reader; a mixture joins only data whose records are pairs (the
    others are said to skip it). Deterministic for a given seed."""
    reader = reader_for(dataset_cfg.kind)
    if mixture and not reader.mixable:
        log.info(
            "the mixture (%s) is not trained in a %s stage: it joins the SFT stages only",
            ", ".join(s.name for s in mixture),
            reader.stage,
        )
        mixture = ()
    return reader.prepare(raw, dataset_cfg, tokenizer, seed, mixture)


__all__ = ["PreparedData", "chat_messages", "prepare_data", "tokenize_pairs"]
