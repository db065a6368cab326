"""From raw rows to tokenized train / validation sets: clean, chat-format, length-filter, limit, split."""

from __future__ import annotations

import hashlib
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from medexp.config import UserError
from medexp.data.loading import RawPairs
from medexp.data.multiple_choice import match_key

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """Tokenized splits (input_ids + completion_mask, ready for TRL) and the report of what was kept."""

    train: datasets.Dataset
    validation: datasets.Dataset
    train_pairs: list[tuple[str, str]]
    validation_pairs: list[tuple[str, str]]
    rows_in: int
    dropped: Counter[str] = field(default_factory=Counter)
    fingerprint: str = ""
    leakage: int = 0  # validation questions also in train (0 by construction; reported as a check)

    @property
    def rows_kept(self) -> int:
        return len(self.train_pairs) + len(self.validation_pairs)

    def metrics(self) -> dict[str, float]:
        """Counts as MLflow metrics: data/rows_in, data/rows_kept, data/dropped/<reason>, split sizes."""
        out = {
            "data/rows_in": self.rows_in,
            "data/rows_kept": self.rows_kept,
            "data/train_rows": len(self.train_pairs),
            "data/validation_rows": len(self.validation_pairs),
            "data/leakage": self.leakage,
        }
        out.update({f"data/dropped/{reason}": n for reason, n in sorted(self.dropped.items())})
        return out

    def summary(self) -> str:
        dropped = ", ".join(f"{n} {reason}" for reason, n in sorted(self.dropped.items())) or "none"
        return (
            f"data: read {self.rows_in} rows, kept {self.rows_kept} "
            f"({len(self.train_pairs)} train / {len(self.validation_pairs)} validation, {self.leakage} questions "
            f"in both); dropped: {dropped}"
        )


def chat_messages(system_prompt: str, question: str, answer: str | None = None) -> list[dict[str, str]]:
    """The conversation every pair becomes: system prompt, the question as user turn, the answer as reply."""
    messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": question}]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return messages


def tokenize_pairs(
    tokenizer: PreTrainedTokenizerBase, system_prompt: str, pairs: list[tuple[str, str]]
) -> tuple[list[list[int]], list[list[int]]]:
    """input_ids of each whole conversation, and a mask that is 1 on the answer tokens (the loss) only."""
    prompts = [
        tokenizer.apply_chat_template(
            chat_messages(system_prompt, q), tokenize=False, add_generation_prompt=True
        )
        for q, _ in pairs
    ]
    fulls = [
        tokenizer.apply_chat_template(chat_messages(system_prompt, q, a), tokenize=False) for q, a in pairs
    ]
    # Templates carry their own special tokens, so none are added here (as apply_chat_template does).
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(fulls, add_special_tokens=False)["input_ids"]
    masks = []
    for p, f in zip(prompt_ids, full_ids, strict=True):
        n = _common_prefix(p, f)  # the answer starts where the two diverge, as in TRL
        masks.append([0] * n + [1] * (len(f) - n))
    return full_ids, masks


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def drop_duplicates(pairs: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], int]:
    """Pairs with a question and answer equal, after folding case, whitespace and punctuation, kept once."""
    seen: set[tuple[str, str]] = set()
    unique = []
    for question, answer in pairs:
        key = (match_key(question), match_key(answer))
        if key not in seen:
            seen.add(key)
            unique.append((question, answer))
    return unique, len(pairs) - len(unique)


def split_by_question(
    order: list[int], pairs: list[tuple[str, str]], n_val: int
) -> tuple[list[int], list[int]]:
    """(validation, train) indices: whole questions go to validation until it holds n_val pairs, so no
    question (after folding case, whitespace and punctuation) is in both splits."""
    groups: dict[str, list[int]] = {}
    for i in order:
        groups.setdefault(match_key(pairs[i][0]), []).append(i)
    validation: list[int] = []
    train: list[int] = []
    for group in groups.values():
        (validation if len(validation) < n_val else train).extend(group)
    return validation, train


def prepare_data(
    raw: RawPairs, dataset_cfg: DictConfig, tokenizer: PreTrainedTokenizerBase, seed: int
) -> PreparedData:
    """Chat-format, length-filter, limit and split cleaned pairs. Deterministic for a given seed."""
    import datasets

    pairs, rows_in, dropped = raw.pairs, raw.rows_in, Counter(raw.dropped)
    if dataset_cfg.dedup:
        pairs, dropped["duplicate"] = drop_duplicates(pairs)

    system_prompt = str(dataset_cfg.system_prompt).strip()
    input_ids, masks = tokenize_pairs(tokenizer, system_prompt, pairs)
    keep = [i for i, ids in enumerate(input_ids) if len(ids) <= dataset_cfg.max_tokens]
    dropped["too_long"] = len(pairs) - len(keep)

    rng = random.Random(seed)
    rng.shuffle(keep)
    if dataset_cfg.limit is not None and len(keep) > dataset_cfg.limit:
        dropped["over_limit"] = len(keep) - dataset_cfg.limit
        keep = keep[: dataset_cfg.limit]
    dropped = +dropped  # drop zero counts

    if len(keep) < 2:
        raise UserError(
            f"Only {len(keep)} usable pair(s) left out of {rows_in} rows (dropped: {dict(dropped) or 'none'}); "
            "training needs at least 2 (one for validation). Check the question/answer columns, or raise "
            f"dataset.max_tokens (now {dataset_cfg.max_tokens})."
        )
    n_val = min(len(keep) - 1, max(1, round(len(keep) * dataset_cfg.val_fraction)))
    validation, train = split_by_question(keep, pairs, n_val)
    if not train:
        raise UserError(
            f"All {len(keep)} usable pairs share one question, so no split keeps validation questions out of "
            "training. Use data with more than one distinct question."
        )
    splits = {"validation": validation, "train": train}
    leaked = {match_key(pairs[i][0]) for i in validation} & {match_key(pairs[i][0]) for i in train}

    def build(idx: list[int]) -> datasets.Dataset:
        return datasets.Dataset.from_dict(
            {"input_ids": [input_ids[i] for i in idx], "completion_mask": [masks[i] for i in idx]}
        )

    digest = hashlib.sha256(system_prompt.encode())
    for name in ("train", "validation"):
        for i in splits[name]:
            digest.update(f"\0{name}\0{pairs[i][0]}\0{pairs[i][1]}".encode())
    data = PreparedData(
        train=build(splits["train"]),
        validation=build(splits["validation"]),
        train_pairs=[pairs[i] for i in splits["train"]],
        validation_pairs=[pairs[i] for i in splits["validation"]],
        rows_in=rows_in,
        dropped=dropped,
        fingerprint=digest.hexdigest()[:16],
        leakage=len(leaked),
    )
    log.info("%s (question column %r, answer column %r)", data.summary(), *raw.columns)
    return data
