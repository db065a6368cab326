"""The cleaning every kind of record goes through: exact and near duplicates dropped (on every field of the
record), the seeded shuffle and `limit`, the split by question, and the fingerprint of what was kept."""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TypeVar

from omegaconf import DictConfig

from medexp.config import UserError
from medexp.data.multiple_choice import match_key
from medexp.data.near_dup import drop_near_duplicates

R = TypeVar("R", bound=tuple)
T = TypeVar("T")


def drop_duplicates(records: Sequence[R]) -> tuple[list[R], int]:
    """Records whose fields are all equal, after folding case, whitespace and punctuation, kept once."""
    seen: set[tuple[str, ...]] = set()
    unique = []
    for record in records:
        key = tuple(match_key(part) for part in record)
        if key not in seen:
            seen.add(key)
            unique.append(record)
    return unique, len(records) - len(unique)


def deduplicate(records: Sequence[R], dataset_cfg: DictConfig, dropped: Counter[str]) -> list[R]:
    """The source's records with exact (`dedup`) and near (`near_dup.threshold`) duplicates dropped, counted
    into `dropped`."""
    kept = list(records)
    if dataset_cfg.dedup:
        kept, dropped["duplicate"] = drop_duplicates(kept)
    if dataset_cfg.near_dup.threshold is not None:
        from medexp.data.answer_text import final_line_format, without_answer_line

        kept, dropped["near_duplicate"] = drop_near_duplicates(
            kept,
            float(dataset_cfg.near_dup.threshold),
            int(dataset_cfg.near_dup.num_perm),
            # the same instruction in every final_line row would make different questions look alike
            key=without_answer_line if final_line_format(dataset_cfg) else None,
        )
    return kept


def shuffle_and_limit(items: list[T], limit: int | None, seed: int) -> tuple[list[T], int]:
    """The items in a seeded order, the first `limit` of them (all with limit null); and how many the limit
    left out. Rows left out by the user's own limit are reported apart from drops (`unused_by_limit`)."""
    random.Random(seed).shuffle(items)
    if limit is None or len(items) <= limit:
        return items, 0
    return items[:limit], len(items) - limit


def split_by_question(order: list[int], pairs: Sequence[tuple], n_val: int) -> tuple[list[int], list[int]]:
    """(validation, train) indices: whole questions (a record's first field) go to validation until it holds
    n_val records, so no question (after folding case, whitespace and punctuation) is in both splits."""
    groups: dict[str, list[int]] = {}
    for i in order:
        groups.setdefault(match_key(pairs[i][0]), []).append(i)
    validation: list[int] = []
    train: list[int] = []
    for group in groups.values():
        (validation if len(validation) < n_val else train).extend(group)
    return validation, train


def split_by_prompt(
    records: Sequence[tuple],
    rows_in: int,
    dataset_cfg: DictConfig,
    dropped: Counter[str],
    what: str,
    stage: str,
) -> tuple[list[int], list[int]]:
    """(validation, train) indices of records keyed by their prompt (preference pairs, labelled completions),
    split by `split_by_question`; refused in one paragraph when fewer than 2 are usable or all share a prompt.
    `what` names one record ("preference pair"), `stage` the stage that needs them ("a preference stage")."""
    if len(records) < 2:
        raise UserError(
            f"Only {len(records)} usable {what}(s) left of {rows_in} rows (dropped: {dict(+dropped) or 'none'}); "
            f"{stage} needs at least 2 (one for validation). Give more rows, or raise dataset.max_tokens (now "
            f"{dataset_cfg.max_tokens})."
        )
    n_val = validation_size(len(records), dataset_cfg.val_fraction)
    validation, train = split_by_question(list(range(len(records))), records, n_val)
    if not train:
        raise UserError(
            f"All {len(records)} {what}s share one prompt, so no split keeps validation prompts out of training. "
            "Use data with more than one distinct prompt."
        )
    return validation, train


def validation_size(n: int, val_fraction: float) -> int:
    """Records held out for validation: the fraction of n, at least 1, and at least 1 left for training."""
    return min(n - 1, max(1, round(n * val_fraction)))


def fingerprint(splits: Iterable[tuple[str, Iterable[Sequence[str]]]]) -> str:
    """A short digest of what each split holds, field by field (NUL-separated), in order."""
    digest = hashlib.sha256()
    for split, rows in splits:
        for fields in rows:
            digest.update(("\0" + "\0".join((split, *fields))).encode())
    return digest.hexdigest()[:16]
