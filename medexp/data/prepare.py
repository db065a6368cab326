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
from medexp.data.loading import RawPairs, Source
from medexp.data.multiple_choice import match_key

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


@dataclass
class SourceReport:
    """What one source contributed: rows read and kept, training rows after its weight, drops by reason."""

    rows_in: int
    rows_kept: int = 0
    train_rows: int = 0
    weight: float = 1.0
    dropped: Counter[str] = field(default_factory=Counter)


@dataclass
class PreparedData:
    """Tokenized splits (input_ids + completion_mask, ready for TRL) and the report of what was kept."""

    train: datasets.Dataset
    validation: datasets.Dataset
    train_pairs: list[tuple[str, str]]  # distinct pairs in training (before weights repeat or thin them)
    validation_pairs: list[tuple[str, str]]
    rows_in: int
    train_sources: list[str] = field(default_factory=list)  # the source (Source.name) of each train pair
    validation_sources: list[str] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    fingerprint: str = ""
    leakage: int = 0  # validation questions also in train (0 by construction; reported as a check)
    sources: dict[str, SourceReport] = field(default_factory=dict)
    max_tokens: int = 0  # the main dataset's length limit, drawn on the length histogram
    lengths: dict[str, list[int]] = field(default_factory=dict)  # per split, when rows are not tokenized yet

    @property
    def rows_kept(self) -> int:
        return len(self.train_pairs) + len(self.validation_pairs)

    def token_lengths(self, split: str) -> list[int]:
        if split in self.lengths:
            return self.lengths[split]
        return [len(ids) for ids in getattr(self, split)["input_ids"]]

    def metrics(self) -> dict[str, float]:
        """Counts as MLflow metrics: data/rows_in, data/rows_kept, data/dropped/<reason>, split sizes, and
        per source of a mixture data/mix/<name>/{rows_in,rows_kept,train_rows,weight}."""
        out = {
            "data/rows_in": self.rows_in,
            "data/rows_kept": self.rows_kept,
            "data/train_rows": len(self.train),
            "data/validation_rows": len(self.validation),
            "data/leakage": self.leakage,
        }
        out.update({f"data/dropped/{reason}": n for reason, n in sorted(self.dropped.items())})
        if len(self.sources) > 1:
            for name, src in self.sources.items():
                for key in ("rows_in", "rows_kept", "train_rows", "weight"):
                    out[f"data/mix/{name}/{key}"] = getattr(src, key)
        return out

    def summary(self) -> str:
        dropped = ", ".join(f"{n} {reason}" for reason, n in sorted(self.dropped.items())) or "none"
        text = (
            f"data: read {self.rows_in} rows, kept {self.rows_kept} "
            f"({len(self.train)} train / {len(self.validation)} validation rows, {self.leakage} questions "
            f"in both); dropped: {dropped}"
        )
        if len(self.sources) > 1:
            text += "; mixture: " + ", ".join(
                f"{name} {s.rows_kept} kept x{s.weight:g} -> {s.train_rows} train"
                for name, s in self.sources.items()
            )
        return text


def chat_messages(system_prompt: str, question: str, answer: str | None = None) -> list[dict[str, str]]:
    """The conversation every pair becomes: system prompt, the question as user turn, the answer as reply. A
    question that ends a multi-turn conversation (a `Dialogue`) brings its earlier turns, and its own system
    message, when the data has one, wins over `system_prompt`."""
    from medexp.data.conversation import Dialogue

    if isinstance(question, Dialogue):
        system = question.system if question.system is not None else system_prompt
        messages = [{"role": "system", "content": system}, *question.turns]
    else:
        messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": question}]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return messages


def tokenize_pairs(
    tokenizer: PreTrainedTokenizerBase, system_prompt: str, pairs: list[tuple[str, str]]
) -> tuple[list[list[int]], list[list[int]]]:
    """input_ids of each whole conversation, and a mask that is 1 on the assistant tokens (the loss) only: the
    answer, and in a multi-turn conversation every earlier assistant turn too.

    Each assistant turn starts where the conversation rendered up to its generation prompt diverges from the
    whole (as in TRL) and ends where the conversation rendered through that turn does (its end-of-turn token
    included); the last turn runs to the end."""
    conversations = [chat_messages(system_prompt, q, a) for q, a in pairs]
    # Templates carry their own special tokens, so none are added here (as apply_chat_template does).
    texts: list[str] = []

    def render(messages: list[dict[str, str]], prompt: bool = False) -> int:  # its index in texts
        texts.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt))
        return len(texts) - 1

    spans = []  # per conversation: (whole, [(up to the turn's prompt, through the turn or None: the end)])
    for messages in conversations:
        last = len(messages) - 1
        turns = [
            (render(messages[:k], prompt=True), render(messages[: k + 1]) if k < last else None)
            for k, m in enumerate(messages)
            if m["role"] == "assistant"
        ]
        spans.append((render(messages), turns))
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    full_ids, masks = [], []
    for full_index, turns in spans:
        full = ids[full_index]
        mask = [0] * len(full)
        for prefix, end in turns:
            start = _common_prefix(ids[prefix], full)
            stop = len(full) if end is None else _common_prefix(ids[end], full)
            mask[start:stop] = [1] * (stop - start)
        full_ids.append(full)
        masks.append(mask)
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


def _clean(source: Source, tokenizer: PreTrainedTokenizerBase, seed: int) -> tuple[list[Item], SourceReport]:
    """One source's pairs deduplicated, near-deduplicated, tokenized, length-filtered, shuffled and limited."""
    from medexp.data.near_dup import drop_near_duplicates

    cfg = source.cfg
    pairs, report = source.raw.pairs, SourceReport(rows_in=source.raw.rows_in, weight=float(cfg.weight))
    report.dropped.update(source.raw.dropped)
    if cfg.dedup:
        pairs, report.dropped["duplicate"] = drop_duplicates(pairs)
    if cfg.near_dup.threshold is not None:
        pairs, report.dropped["near_duplicate"] = drop_near_duplicates(
            pairs, float(cfg.near_dup.threshold), int(cfg.near_dup.num_perm)
        )
    system_prompt = str(cfg.system_prompt).strip()
    input_ids, masks = tokenize_pairs(tokenizer, system_prompt, pairs)
    items = [
        Item(source.name, system_prompt, q, a, ids, mask)
        for (q, a), ids, mask in zip(pairs, input_ids, masks, strict=True)
        if len(ids) <= cfg.max_tokens
    ]
    report.dropped["too_long"] = len(pairs) - len(items)
    random.Random(seed).shuffle(items)
    if cfg.limit is not None and len(items) > cfg.limit:
        report.dropped["over_limit"] = len(items) - cfg.limit
        items = items[: cfg.limit]
    report.dropped = +report.dropped  # drop zero counts
    report.rows_kept = len(items)
    return items, report


@dataclass
class Item:
    source: str
    system_prompt: str
    question: str
    answer: str
    input_ids: list[int]
    mask: list[int]


def _weighted(items: list[Item], weight: float, rng: random.Random) -> list[Item]:
    """floor(weight) copies of every item, plus a seeded sample of the fractional part."""
    whole, frac = divmod(weight, 1.0)
    extra = rng.sample(items, round(len(items) * frac))
    return items * int(whole) + extra


def prepare_data(
    raw: RawPairs,
    dataset_cfg: DictConfig,
    tokenizer: PreTrainedTokenizerBase,
    seed: int,
    mixture: list[Source] | tuple[Source, ...] = (),
) -> PreparedData:
    """Clean each source, chat-format with its system prompt, length-filter, limit; split all of them together
    by question (the main dataset's val_fraction); then weight each source's training rows. Validation rows
    are never weighted, so validation loss covers every source once. Deterministic for a given seed."""
    import datasets

    if mixture and dataset_cfg.kind in ("text", "preference"):
        log.info(
            "the mixture (%s) is not trained in a %s stage: it joins the SFT stages only",
            ", ".join(s.name for s in mixture),
            "pretraining" if dataset_cfg.kind == "text" else "preference",
        )
    if dataset_cfg.kind == "text":  # continued pretraining: packed blocks; a QA mixture is for SFT stages
        from medexp.data.text import prepare_text

        return prepare_text(raw, dataset_cfg, tokenizer, seed)
    if dataset_cfg.kind == "preference":  # DPO: conversational prompt / chosen / rejected, no mixture
        from medexp.data.preference import prepare_preferences

        return prepare_preferences(raw, dataset_cfg, tokenizer, seed)
    sources = [Source("dataset", dataset_cfg, raw), *mixture]
    items: list[Item] = []
    reports: dict[str, SourceReport] = {}
    for source in sources:
        kept, reports[source.name] = _clean(source, tokenizer, seed)
        items.extend(kept)
    rows_in = sum(r.rows_in for r in reports.values())
    dropped: Counter[str] = sum((r.dropped for r in reports.values()), Counter())

    if len(items) < 2:
        raise UserError(
            f"Only {len(items)} usable pair(s) left out of {rows_in} rows (dropped: {dict(dropped) or 'none'}); "
            "training needs at least 2 (one for validation). Check the question/answer columns, or raise "
            f"dataset.max_tokens (now {dataset_cfg.max_tokens})."
        )
    rng = random.Random(seed)
    order = list(range(len(items)))
    if mixture:
        rng.shuffle(order)  # interleave the sources, so validation draws from each
    n_val = min(len(items) - 1, max(1, round(len(items) * dataset_cfg.val_fraction)))
    questions = [(item.question, item.answer) for item in items]
    validation, train = split_by_question(order, questions, n_val)
    if not train:
        raise UserError(
            f"All {len(items)} usable pairs share one question, so no split keeps validation questions out of "
            "training. Use data with more than one distinct question."
        )
    leaked = {match_key(items[i].question) for i in validation} & {
        match_key(items[i].question) for i in train
    }

    train_items: list[Item] = []
    for name, report in reports.items():
        own = [items[i] for i in train if items[i].source == name]
        weighted = _weighted(own, report.weight, rng)
        report.train_rows = len(weighted)
        train_items.extend(weighted)
    if not train_items:
        raise UserError(
            "The mixture weights leave no training rows. Give at least one source a weight that keeps rows, "
            "e.g. dataset.weight=1."
        )

    def build(chosen: list[Item]) -> datasets.Dataset:
        return datasets.Dataset.from_dict(
            {"input_ids": [it.input_ids for it in chosen], "completion_mask": [it.mask for it in chosen]}
        )

    validation_items = [items[i] for i in validation]
    digest = hashlib.sha256()
    for split, chosen in (("train", train_items), ("validation", validation_items)):
        for it in chosen:
            digest.update(f"\0{split}\0{it.source}\0{it.system_prompt}\0{it.question}\0{it.answer}".encode())
    data = PreparedData(
        train=build(train_items),
        validation=build(validation_items),
        train_pairs=[(items[i].question, items[i].answer) for i in train],
        validation_pairs=[(items[i].question, items[i].answer) for i in validation],
        train_sources=[items[i].source for i in train],
        validation_sources=[items[i].source for i in validation],
        rows_in=rows_in,
        dropped=+dropped,
        fingerprint=digest.hexdigest()[:16],
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
