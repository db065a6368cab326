"""Near-duplicate removal: MinHash signatures of word shingles, candidates from LSH, first occurrence kept."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from medexp.config import UserError
from medexp.data.multiple_choice import match_key

R = TypeVar("R", bound=tuple)


def shingles(text: str, words: int) -> set[bytes]:
    """The set of `words`-word windows of the folded text (case, whitespace and punctuation folded)."""
    tokens = match_key(text).split()
    if len(tokens) <= words:
        return {" ".join(tokens).encode()}
    return {" ".join(tokens[i : i + words]).encode() for i in range(len(tokens) - words + 1)}


def jaccard(a: str, b: str, words: int = 3) -> float:
    """The exact Jaccard similarity of two texts' shingle sets (what MinHash estimates)."""
    sa, sb = shingles(a, words), shingles(b, words)
    return len(sa & sb) / len(sa | sb)


def drop_near_duplicates(
    records: Sequence[R],
    threshold: float,
    num_perm: int = 128,
    words: int = 3,
    key: Callable[[R], Sequence[str]] | None = None,
) -> tuple[list[R], int]:
    """Records (tuples of texts: a question and answer, a preference row, a document) whose texts together have
    a Jaccard similarity >= threshold to an earlier kept record are dropped. `key(record)`, when given, is the
    texts compared instead (e.g. without an instruction every question carries).

    MinHash LSH proposes candidates (pairs whose similarity is near or above the threshold are found with high
    probability; more num_perm, fewer misses); each candidate is confirmed on the exact Jaccard similarity of
    the shingle sets, so nothing below the threshold is ever dropped. Deterministic: fixed MinHash seed."""
    from datasketch import MinHash, MinHashLSH

    sets = [shingles(" ".join(key(record) if key else record), words) for record in records]
    signatures = MinHash.bulk(sets, num_perm=num_perm, seed=1)
    try:
        # Bands tuned for recall (false negatives weighted 0.95): candidates are confirmed exactly below, so a
        # false positive costs one set comparison. With 128 permutations a pair at the threshold is found ~90%
        # of the time, one 0.05 above it ~99.8%.
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(0.05, 0.95))
    except ValueError as err:  # datasketch cannot band num_perm hashes for a threshold this close to 1
        raise UserError(
            f"near_dup.threshold={threshold} is too close to 1 for near_dup.num_perm={num_perm} ({err}). Lower "
            "the threshold (0.9 is typical) or raise num_perm (e.g. 256); exact duplicates are already removed "
            "by dataset.dedup."
        ) from None
    kept: list[R] = []
    for i, (record, signature) in enumerate(zip(records, signatures, strict=True)):
        candidates = lsh.query(signature)
        if any(len(sets[i] & sets[j]) / len(sets[i] | sets[j]) >= threshold for j in candidates):
            continue
        lsh.insert(i, signature)
        kept.append(record)
    return kept, len(records) - len(kept)
