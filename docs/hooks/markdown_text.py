"""Config values and comment text as Markdown for the configuration reference's tables (see config_reference)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from schema_source import MISSING

ABSENT = object()  # no value here: the parent is null, or the key is a name you choose (<name>)
BELOW = object()  # a section whose keys follow as rows of their own


def code(text: Any) -> str:
    text = str(text)
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def show(value: Any) -> str:
    """A value as the YAML you would write, shortened for a table cell."""
    if value is ABSENT or value is BELOW:
        return "—" if value is ABSENT else "↓"
    if isinstance(value, dict) and value:  # one line per key: a search space, a sampler
        return "<br>".join(f"{code(k)}: {show(v)}" for k, v in value.items())
    if isinstance(value, dict | list):
        text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    else:
        text = yaml.safe_dump(value, default_style=None).strip().removesuffix("...").strip()
        text = '""' if value == "" else (value if isinstance(value, str) and value == MISSING else text)
    text = " ".join(text.split())
    return code(text if len(text) <= 60 else text[:57] + "…")


def description(path: Path) -> str:
    """The first sentence of a YAML file's leading comment."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text.startswith("@package"):
            continue
        if text.startswith("python ") or (lines and text[:1].isupper() and lines[-1][-1:] not in ",;:(-"):
            break  # a usage line, or a new sentence on a new line: the first sentence is complete
        lines.append(text)
    text = " ".join(lines).removesuffix(":")
    match = re.search(r"(?<!e\.g)(?<!i\.e)\.(\s|$)", text)
    return text[: match.start() + 1] if match else text


def cell(text: str) -> str:
    """A table cell: a pipe outside code spans is escaped (inside one, Python-Markdown's tables keep it)."""
    parts = text.replace("\n", " ").split("`")
    return "`".join(p.replace("|", "\\|") if i % 2 == 0 else p for i, p in enumerate(parts))


def prose(text: str) -> str:
    """Text from a comment as Markdown: `<name>` and `*` outside code spans are shown, not parsed."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):
        parts[i] = (
            parts[i].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("*", "\\*")
        )
    return "`".join(parts)


def grouped(values: dict[str, Any]) -> str:
    """Many options' values in one cell: each distinct value once, with the options that set it."""
    by_value: dict[str, list[str]] = {}
    for option, value in values.items():
        by_value.setdefault(show(value), []).append(option)
    if len(by_value) == 1:
        return next(iter(by_value))
    common = max(by_value, key=lambda v: len(by_value[v]))  # the most common value: "others"
    rest = [f"{value} ({', '.join(options)})" for value, options in by_value.items() if value != common]
    return "<br>".join([*rest, f"{common} (others)"])


def anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9_-]", "", title.lower().replace(" ", "-"))
