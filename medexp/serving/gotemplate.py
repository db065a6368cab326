"""The subset of Go's text/template that medexp's Modelfiles use (medexp/serving/modelfile.py), rendered as Ollama
renders a chat template: text, `{{ .Content }}`, `{{ .System }}`, string constants `{{ "..." }}`,
`{{ range .Messages }}`, `{{ if eq .Role "user" }} ... {{ else if ... }} ... {{ else }} ... {{ end }}`.

It exists to check a Modelfile's TEMPLATE against the Hugging Face chat template it stands for (at export, and
in tests/serving/test_gguf.py); anything outside the subset raises ValueError rather than rendering wrongly.
"""

from __future__ import annotations

import json
import re
from typing import Any

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


def _tokens(template: str) -> list[tuple[str, str]]:
    """("text", literal) and ("action", body) pieces, with Go's `{{-` / `-}}` trimming applied."""
    out: list[tuple[str, str]] = []
    pos, trim_next = 0, False
    for m in _ACTION.finditer(template):
        text = template[pos : m.start()]
        if trim_next:
            text = text.lstrip(" \t\r\n")
        if m.group(1):
            text = text.rstrip(" \t\r\n")
        out += [("text", text), ("action", m.group(2))]
        pos, trim_next = m.end(), bool(m.group(3))
    tail = template[pos:]
    return [*out, ("text", tail.lstrip(" \t\r\n") if trim_next else tail)]


def _parse(tokens: list[tuple[str, str]], i: int, stops: tuple[str, ...]) -> tuple[list, int]:
    """Nodes up to one of `stops` (an action starting with it); returns (nodes, index of the stop)."""
    nodes: list[Any] = []
    while i < len(tokens):
        kind, body = tokens[i]
        if kind == "text":
            nodes.append(("text", body))
        elif body.startswith(stops):
            return nodes, i
        elif body == "range .Messages":
            inner, i = _parse(tokens, i + 1, ("end",))
            nodes.append(("range", inner))
        elif body.startswith("if "):
            branches, i = _branches(tokens, i)
            nodes.append(("if", branches))
        else:
            nodes.append(("value", body))
        i += 1
    if stops:
        raise ValueError(f"template: no {stops[0]!r} to close a block")
    return nodes, i


def _branches(tokens: list[tuple[str, str]], i: int) -> tuple[list, int]:
    """[(condition or None for else, nodes)], and the index of the closing `end`."""
    branches, condition = [], tokens[i][1][3:]
    while True:
        inner, i = _parse(tokens, i + 1, ("else", "end"))
        branches.append((condition, inner))
        body = tokens[i][1]
        if body == "end":
            return branches, i
        condition = body[8:] if body.startswith("else if ") else None


def _value(expr: str, scope: dict) -> Any:
    if expr.startswith('"'):
        return json.loads(expr)
    if re.fullmatch(r"\.[A-Z][A-Za-z]*", expr):
        return scope.get(expr[1:], "")
    match = re.fullmatch(r'eq (\.[A-Z][A-Za-z]*) ("(?:[^"\\]|\\.)*")', expr)
    if match:
        return _value(match.group(1), scope) == json.loads(match.group(2))
    raise ValueError(f"template: {expr!r} is outside the subset medexp renders")


def _run(nodes: list, scope: dict, top: dict) -> str:
    out = []
    for kind, arg in nodes:
        if kind == "text":
            out.append(arg)
        elif kind == "value":
            out.append(str(_value(arg, scope)))
        elif kind == "range":
            out += [_run(arg, {**top, **message}, top) for message in top["Messages"]]
        else:
            for condition, inner in arg:
                if condition is None or _value(condition, scope):
                    out.append(_run(inner, scope, top))
                    break
    return "".join(out)


def render(template: str, messages: list[dict[str, str]]) -> str:
    """The prompt Ollama builds from `messages` (role, content): system messages stay in .Messages, and their
    contents joined by a blank line are .System, as Ollama's template.Execute passes them (after its collate)."""
    nodes, _ = _parse(_tokens(template), 0, ())
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    listed: list[dict[str, str]] = []
    for (
        m
    ) in messages:  # Ollama's collate: consecutive messages of one role become one (tool messages excepted)
        if listed and listed[-1]["Role"] == m["role"] != "tool":
            listed[-1]["Content"] += "\n\n" + m["content"]
        else:
            listed.append({"Role": m["role"], "Content": m["content"]})
    top = {"Messages": listed, "System": system}
    return _run(nodes, top, top)
