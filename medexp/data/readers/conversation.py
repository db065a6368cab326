"""Multi-turn conversations (`dataset.kind=conversation`, or detected in `qa` data): OpenAI `messages`
({"role", "content"}) and ShareGPT `conversations` ({"from", "value"}; human / gpt / system) as training pairs.

A conversation becomes one pair: its final assistant message is the answer, and the question is a `Dialogue`
(medexp.data.records), a string holding the transcript of everything before that answer (what deduplication,
the split by question, the data report and the judges read) that also carries the turns themselves.
`chat_messages` renders a Dialogue turn by turn, so the model is trained on the whole conversation with the loss
on every assistant turn (`tokenize_pairs`), and evaluation asks for the final answer after the earlier turns. A
system message in the data wins over the config's `system_prompt`.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from medexp.data.pairs import prepare_pairs
from medexp.data.readers.base import Reader
from medexp.data.records import Dialogue, QAPair
from medexp.data.rows import RawRecords, listed, pick, read_rows, usable

if TYPE_CHECKING:
    import pandas as pd

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


def read_conversations(dataset_cfg: DictConfig, key: str = "dataset") -> RawRecords:
    """The source's conversations (its `messages_field`, or a detected messages / conversations column) as
    pairs, rows that are not usable conversations dropped by reason."""
    frame = read_rows(dataset_cfg)
    if frame.empty:
        return usable(RawRecords(records=[], rows_in=0, columns=("", "")), dataset_cfg, key)
    columns = [str(c) for c in frame.columns]
    column = conversation_column(columns, dataset_cfg, key, detect=True)
    if column is None:  # none of the usual names: refused, naming messages_field
        column = pick(columns, None, CONVERSATION_NAMES, "messages", listed(columns), key)
    return conversation_records(frame, column, dataset_cfg, key)


def conversation_column(columns: list[str], dataset_cfg: DictConfig, key: str, detect: bool) -> str | None:
    """The column of multi-turn conversations: the configured `messages_field`, else (with `detect`) the first
    of the usual names present, else None."""
    if dataset_cfg.messages_field is not None:
        return pick(columns, dataset_cfg.messages_field, (), "messages", listed(columns), key)
    if not detect:
        return None
    by_lower = {c.strip().lower(): c for c in columns}
    return next((by_lower[n] for n in CONVERSATION_NAMES if n in by_lower), None)


def conversation_records(frame: pd.DataFrame, column: str, dataset_cfg: DictConfig, key: str) -> RawRecords:
    """The pairs of a column of conversations, the rows that are not usable conversations dropped by reason."""
    raw = RawRecords(records=[], rows_in=len(frame), columns=(column, column))
    raw.records, raw.dropped = conversation_pairs(frame[column].tolist())
    return usable(
        raw,
        dataset_cfg,
        key,
        wanted="Give conversations that alternate user and assistant turns and hold at least one assistant turn.",
    )


def conversation_pairs(values: list[Any]) -> tuple[list[QAPair], Counter[str]]:
    """The pairs of a column of conversations, and the rows dropped by reason."""
    pairs: list[QAPair] = []
    dropped: Counter[str] = Counter()
    for value in values:
        parsed = parse_conversation(value)
        if isinstance(parsed, str):
            dropped[parsed] += 1
        else:
            pairs.append(parsed)
    return pairs, dropped


def parse_conversation(value: Any) -> QAPair | str:
    """(question, answer) from one row's conversation, or the reason it is dropped: non_conversation (not a list
    of messages), unknown_role, non_text_turn, empty_turn, misplaced_system (a system message after the first),
    turns_not_alternating (user and assistant must alternate, starting with the user, as most chat templates
    require) or no_assistant_turn. User turns after the last assistant turn have nothing to learn and are cut."""
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
    return QAPair(Dialogue(messages[:-1], system), messages[-1]["content"])


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


READER = Reader(
    kind="conversation",
    record=QAPair,
    read=read_conversations,
    prepare=prepare_pairs,
    describe="conversations",
    mixable=True,
)
