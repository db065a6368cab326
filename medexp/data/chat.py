"""Chat formatting: the conversation every question-answer pair becomes, and its tokens with the loss mask on
the assistant turns."""

from __future__ import annotations

from typing import TYPE_CHECKING

from medexp.data.records import Dialogue

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def chat_messages(system_prompt: str, question: str, answer: str | None = None) -> list[dict[str, str]]:
    """The conversation every pair becomes: system prompt, the question as user turn, the answer as reply. A
    question that ends a multi-turn conversation (a `Dialogue`) brings its earlier turns, and its own system
    message, when the data has one, wins over `system_prompt`."""
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
