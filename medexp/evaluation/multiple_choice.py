"""Multiple-choice accuracy by log-likelihood: each candidate answer is scored as a continuation of the
question in the chat template; the highest-scoring one is the model's choice. No generated text is parsed."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from medexp.data.answer_text import final_line_format, without_answer_line
from medexp.data.loading import VERDICTS
from medexp.data.prepare import chat_messages

_OPTION = re.compile(r"^([A-Z])\. (.*)$")


@dataclass
class ChoiceItem:
    prompt: str  # the user turn, as in training
    candidates: list[str]  # each a complete answer start, exactly as the training targets are written
    correct: int


def choice_item(question: str, answer: str, source_cfg: DictConfig) -> ChoiceItem | None:
    """A scored item from a formatted pair: a multiple-choice pair ("Options:" block, "C. text" target), or a
    pair from a source with a decision field ("Yes. ..." answers); None for plain QA pairs."""
    from medexp.data.readers import reader_for

    if final_line_format(source_cfg):
        return _final_line_item(question, answer, source_cfg)
    if reader_for(str(source_cfg.kind)).lettered_options:
        matches = _options(question)
        if matches is None:
            return None
        candidates = [f"{m.group(1)}. {m.group(2)}" for m in matches]
        return ChoiceItem(question, candidates, candidates.index(answer)) if answer in candidates else None
    if source_cfg.decision_field:
        candidates = [f"{v.capitalize()}." for v in VERDICTS]
        verdict = answer.split(" ", 1)[0]
        return ChoiceItem(question, candidates, candidates.index(verdict)) if verdict in candidates else None
    return None


def _options(question: str) -> list[re.Match[str]] | None:
    """The lettered option lines of a question's "Options:" block; None without a block or with a line that is
    not an option."""
    _, sep, block = question.rpartition("\n\nOptions:\n")
    matches = [_OPTION.match(line) for line in block.splitlines()] if sep else []
    return matches if matches and all(matches) else None


def _final_line_item(question: str, answer: str, source_cfg: DictConfig) -> ChoiceItem | None:
    """A final_line pair (medexp.data.answer_line): each candidate is the answer line itself (`Answer: C`,
    `Answer: yes`), scored right after the question as if the model skipped its reasoning."""
    from medexp.data.answer_line import answer_kind, gold_of

    kind = answer_kind(source_cfg)
    if kind == "letter":
        matches = _options(without_answer_line((question, answer))[0])
        choices = [m.group(1) for m in matches or ()]
    else:
        choices = list(VERDICTS)
    gold = gold_of(answer, kind)
    candidates = [f"Answer: {c}" for c in choices]
    return ChoiceItem(question, candidates, choices.index(gold)) if gold in choices else None


def candidate_logprobs(
    model: Any, tokenizer: Any, system_prompt: str, item: ChoiceItem
) -> list[tuple[float, int]]:
    """(summed log-probability, characters) of each candidate after the item's prompt, in one batch."""
    import torch

    prefix = tokenizer.apply_chat_template(
        chat_messages(system_prompt, item.prompt), tokenize=False, add_generation_prompt=True
    )
    n_prefix = len(tokenizer(prefix, add_special_tokens=False)["input_ids"])
    rows = [tokenizer(prefix + c, add_special_tokens=False)["input_ids"] for c in item.candidates]
    width = max(len(r) for r in rows)
    device = next(model.parameters()).device
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    with torch.no_grad():
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
    logprobs = (
        torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1)
    )
    out = []
    for i, r in enumerate(rows):
        # positions n_prefix-1 .. len(r)-2 predict the candidate's tokens n_prefix .. len(r)-1
        out.append((float(logprobs[i, n_prefix - 1 : len(r) - 1].sum()), len(item.candidates[i])))
    return out


def accuracy(model: Any, tokenizer: Any, system_prompt: str, items: list[ChoiceItem]) -> dict[str, float]:
    """accuracy: the highest summed log-probability is correct; accuracy_norm: the same per character (less
    biased toward short options, as lm-evaluation-harness's acc_norm)."""
    model.eval()
    hits = hits_norm = 0
    for item in items:
        scores = candidate_logprobs(model, tokenizer, system_prompt, item)
        hits += max(range(len(scores)), key=lambda i: scores[i][0]) == item.correct
        hits_norm += (
            max(range(len(scores)), key=lambda i: scores[i][0] / max(scores[i][1], 1)) == item.correct
        )
    n = max(len(items), 1)
    return {"accuracy": hits / n, "accuracy_norm": hits_norm / n, "questions": len(items)}
