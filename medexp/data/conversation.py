"""Multi-turn conversations: OpenAI `messages` ({"role", "content"}) and ShareGPT `conversations`
({"from", "value"}; human / gpt / system) as training pairs.

A conversation becomes one pair: its final assistant message is the answer, and the question is a `Dialogue`,
a string holding the transcript of everything before that answer (what deduplication, the split by question,
the data report and the judges read) that also carries the turns themselves. `chat_messages` renders a
Dialogue turn by turn, so the model is trained on the whole conversation with the loss on every assistant
turn (`tokenize_pairs`), and evaluation asks for the final answer after the earlier turns. A system message
in the data wins over the config's `system_prompt`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

# Role names as the two formats write them -> the chat template's roles.
ROLES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "model": "assistant",
    "bot": "assistant",
}
CONVERSATION_NAMES = ("messages", "conversations", "conversation")  # detected columns, any case


class Dialogue(str):
    """The question of a pair that ends a conversation. Its text is the transcript ("system: ...", "user: ...",
    "assistant: ..." lines); `turns` are the messages before the final answer, alternating user / assistant and
    ending with the user's; `system` is the data's own system message (None: the config's is used)."""

    turns: tuple[dict[str, str], ...]
    system: str | None

    def __new__(cls, turns: list[dict[str, str]], system: str | None = None) -> Dialogue:
        lines = ([f"system: {system}"] if system is not None else []) + [
            f"{t['role']}: {t['content']}" for t in turns
        ]
        obj = super().__new__(cls, "\n".join(lines))
        obj.turns, obj.system = tuple(dict(t) for t in turns), system
        return obj

    def __reduce__(self) -> tuple[Any, ...]:  # pickled (worker processes) with its turns, not as plain text
        return (Dialogue, ([dict(t) for t in self.turns], self.system))


def _content(value: Any) -> str | None:
    """A message's text: a string, or OpenAI's list of {"type": "text", "text": ...} parts; None otherwise."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    parts = list(value) if isinstance(value, (list, tuple)) or hasattr(value, "tolist") else None
    if parts is None or not all(isinstance(p, dict) and p.get("type") == "text" for p in parts):
        return None
    return "\n".join(str(p.get("text") or "").strip() for p in parts).strip()


def parse_conversation(value: Any) -> tuple[Dialogue, str] | str:
    """(question, answer) from one row's conversation, or the reason it is dropped: non_conversation (not a list
    of messages), unknown_role, non_text_turn, empty_turn, misplaced_system (a system message after the first),
    turns_not_alternating (user and assistant must alternate, starting with the user, as most chat templates
    require) or no_assistant_turn. User turns after the last assistant turn have nothing to learn and are cut."""
    import json

    if isinstance(value, str):  # a CSV cell holding the list as JSON
        try:
            value = json.loads(value)
        except ValueError:
            return "non_conversation"
    if hasattr(value, "tolist"):  # numpy array (parquet / datasets through pandas)
        value = value.tolist()
    if not isinstance(value, list) or not value or not all(isinstance(m, dict) for m in value):
        return "non_conversation"
    messages = []
    for message in value:
        raw_role = message.get("role", message.get("from"))
        role = ROLES.get(str(raw_role).strip().lower()) if raw_role is not None else None
        if role is None:
            return "unknown_role"
        content = _content(message.get("content", message.get("value")))
        if content is None:
            return "non_text_turn"
        if not content:
            return "empty_turn"
        messages.append({"role": role, "content": content})
    system = None
    if messages[0]["role"] == "system":
        system, messages = messages[0]["content"], messages[1:]
    if any(m["role"] == "system" for m in messages):
        return "misplaced_system"
    if any(m["role"] != ("user" if i % 2 == 0 else "assistant") for i, m in enumerate(messages)):
        return "turns_not_alternating"
    if len(messages) % 2:  # ends with a user turn: nothing answers it
        messages = messages[:-1]
    if not messages:
        return "no_assistant_turn"
    return Dialogue(messages[:-1], system), messages[-1]["content"]


def conversation_pairs(values: list[Any]) -> tuple[list[tuple[str, str]], Counter[str]]:
    """The pairs of a column of conversations, and the rows dropped by reason."""
    pairs: list[tuple[str, str]] = []
    dropped: Counter[str] = Counter()
    for value in values:
        parsed = parse_conversation(value)
        if isinstance(parsed, str):
            dropped[parsed] += 1
        else:
            pairs.append(parsed)
    return pairs, dropped
