"""Preference data for DPO stages (`dataset.kind=preference`): rows of prompt, chosen and rejected answers.

Columns are detected like the QA ones (prompt / question / instruction ..., `chosen`, `rejected`) or named with
`dataset.question_field`, `dataset.chosen_field` and `dataset.rejected_field`. Rows are cleaned like QA pairs
(empty or non-text cells dropped by reason, a row whose two answers are the same dropped, exact and near
duplicates removed, `limit`), split by prompt, and kept as conversations: the prompt as system + user
messages, each answer as the assistant's reply, so TRL's DPOTrainer renders them with the same chat template
and system prompt as supervised stages.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections import Counter
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from medexp.config import UserError

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedTokenizerBase

    from medexp.data.loading import RawPairs
    from medexp.data.prepare import PreparedData

log = logging.getLogger(__name__)

PROMPT_NAMES = ("prompt", "question", "instruction", "input", "query")
CHOSEN_NAMES = ("chosen", "preferred", "accepted", "chosen_response")
REJECTED_NAMES = ("rejected", "dispreferred", "rejected_response")
SEP = "\0"  # joins chosen and rejected into one "answer", so the QA deduplication sees the whole row


def load_preferences(dataset_cfg: DictConfig, key: str) -> RawPairs:
    """The rows as (prompt, chosen + SEP + rejected) pairs, bad rows dropped by reason."""
    from medexp.data.loading import RawPairs, _pick, _text, _usable, read_rows

    frame = read_rows(dataset_cfg)
    columns = [str(c) for c in frame.columns]
    found = ", ".join(repr(c) for c in columns) or "none"
    if frame.empty:
        return _usable(RawPairs(pairs=[], rows_in=0, columns=("", "")), dataset_cfg, key)
    prompt = _pick(columns, dataset_cfg.question_field, PROMPT_NAMES, "question", found, key)
    chosen = _pick(columns, dataset_cfg.get("chosen_field"), CHOSEN_NAMES, "chosen", found, key)
    rejected = _pick(columns, dataset_cfg.get("rejected_field"), REJECTED_NAMES, "rejected", found, key)
    raw = RawPairs(pairs=[], rows_in=len(frame), columns=(prompt, f"{chosen}/{rejected}"))
    for row in frame.to_dict("records"):
        cells = [row[prompt], row[chosen], row[rejected]]
        texts = [_text(c) for c in cells]
        if any(isinstance(c, (list, dict, bool)) for c in cells):  # conversations here: not guessed at
            raw.dropped["non_text_cell"] += 1
        elif not texts[0]:
            raw.dropped["empty_prompt"] += 1
        elif not texts[1]:
            raw.dropped["empty_chosen"] += 1
        elif not texts[2]:
            raw.dropped["empty_rejected"] += 1
        elif texts[1] == texts[2]:
            raw.dropped["chosen_equals_rejected"] += 1
        else:
            raw.pairs.append((texts[0], texts[1] + SEP + texts[2]))
    return _usable(
        raw,
        dataset_cfg,
        key,
        holds="(dataset.kind=preference) holds no preference pairs",
        none="has a prompt, a chosen and a different rejected answer",
        wanted="Give rows with prompt, chosen and rejected text (dataset.chosen_field / rejected_field name "
        "other columns).",
    )


def prepare_preferences(
    raw: RawPairs, dataset_cfg: DictConfig, tokenizer: PreTrainedTokenizerBase, seed: int
) -> PreparedData:
    """Deduplicate, length-filter (the longer of the two conversations within dataset.max_tokens; its length is
    what the data report draws), limit, split
    by prompt; train / validation hold conversational prompt / chosen / rejected columns for DPOTrainer."""
    import datasets

    from medexp.data.multiple_choice import match_key
    from medexp.data.near_dup import drop_near_duplicates
    from medexp.data.prepare import (
        PreparedData,
        SourceReport,
        chat_messages,
        drop_duplicates,
        split_by_question,
    )

    rows, dropped = raw.pairs, Counter(raw.dropped)
    if dataset_cfg.dedup:
        rows, dropped["duplicate"] = drop_duplicates(rows)
    if dataset_cfg.near_dup.threshold is not None:
        rows, dropped["near_duplicate"] = drop_near_duplicates(
            rows, float(dataset_cfg.near_dup.threshold), int(dataset_cfg.near_dup.num_perm)
        )
    system = str(dataset_cfg.system_prompt).strip()
    triples = [(p, *answers.split(SEP, 1)) for p, answers in rows]
    lengths = [
        max(
            len(tokenizer.apply_chat_template(chat_messages(system, p, a), tokenize=True, return_dict=False))
            for a in (c, r)
        )
        for p, c, r in triples
    ]
    kept = [(*t, n) for t, n in zip(triples, lengths, strict=True) if n <= dataset_cfg.max_tokens]
    dropped["too_long"] = len(triples) - len(kept)
    random.Random(seed).shuffle(kept)
    if dataset_cfg.limit is not None and len(kept) > dataset_cfg.limit:
        dropped["over_limit"] = len(kept) - dataset_cfg.limit
        kept = kept[: dataset_cfg.limit]
    if len(kept) < 2:
        raise UserError(
            f"Only {len(kept)} usable preference pair(s) left of {raw.rows_in} rows (dropped: "
            f"{dict(+dropped) or 'none'}); a preference stage needs at least 2 (one for validation). Give more "
            f"rows, or raise dataset.max_tokens (now {dataset_cfg.max_tokens})."
        )
    n_val = min(len(kept) - 1, max(1, round(len(kept) * dataset_cfg.val_fraction)))
    validation, train = split_by_question(list(range(len(kept))), [(p, c) for p, c, _, _ in kept], n_val)
    if not train:
        raise UserError(
            f"All {len(kept)} preference pairs share one prompt, so no split keeps validation prompts out of "
            "training. Use data with more than one distinct prompt."
        )

    def build(indices: list[int]) -> datasets.Dataset:
        chosen = [kept[i] for i in indices]
        return datasets.Dataset.from_dict(
            {
                "prompt": [chat_messages(system, p) for p, _, _, _ in chosen],
                "chosen": [[{"role": "assistant", "content": c}] for _, c, _, _ in chosen],
                "rejected": [[{"role": "assistant", "content": r}] for _, _, r, _ in chosen],
            }
        )

    digest = hashlib.sha256()
    for split, indices in (("train", train), ("validation", validation)):
        for i in indices:
            digest.update(f"\0{split}\0{system}\0{SEP.join(kept[i][:3])}".encode())
    leaked = {match_key(kept[i][0]) for i in validation} & {match_key(kept[i][0]) for i in train}
    report = SourceReport(rows_in=raw.rows_in, rows_kept=len(kept), train_rows=len(train))
    report.dropped = +dropped
    data = PreparedData(
        train=build(train),
        validation=build(validation),
        train_pairs=[kept[i][:2] for i in train],  # (prompt, chosen): what evaluation compares answers with
        validation_pairs=[kept[i][:2] for i in validation],
        train_sources=["dataset"] * len(train),
        validation_sources=["dataset"] * len(validation),
        rows_in=raw.rows_in,
        dropped=+dropped,
        fingerprint=digest.hexdigest()[:16],
        leakage=len(leaked),
        sources={"dataset": report},
        max_tokens=int(dataset_cfg.max_tokens),
        lengths={"train": [kept[i][3] for i in train], "validation": [kept[i][3] for i in validation]},
    )
    log.info("%s (prompt column %r, chosen/rejected columns %r)", data.summary(), *raw.columns)
    return data
