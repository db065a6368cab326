"""The Ollama Modelfile written beside an exported GGUF: FROM (and ADAPTER for a GGUF LoRA), a TEMPLATE that renders
a conversation exactly as the run's Hugging Face chat template does, the run's system prompt as SYSTEM, stop
strings and generation defaults.

Ollama cannot run a Jinja chat template, and a model imported without TEMPLATE is prompted with the bare text
(`{{ .Prompt }}`), which a fine-tuned chat model answers badly. The TEMPLATE is found by example: the chat
template renders conversations made of marker strings, and what surrounds each marker is that role's prefix and
suffix. The Go template built from them is then rendered (medexp.serving.gotemplate, Ollama's semantics: the
SYSTEM prompt is the first message) beside the chat template on other conversations; where any differ, the
chat template is not a per-role one (Llama 2's system-inside-the-first-turn, say) and no TEMPLATE is written.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from medexp.config import UserError
from medexp.serving.gotemplate import render as render_go

log = logging.getLogger("medexp.export")

SYSTEM, USER, ASSISTANT = "MEDEXPMARKSYSTEM", "MEDEXPMARKUSER", "MEDEXPMARKASSISTANT"
CHECKS = [  # conversations the TEMPLATE must render as the chat template does: one turn, several, a long system
    [("system", "S"), ("user", "What is anemia?")],
    [("system", "Answer briefly."), ("user", "Hi"), ("assistant", "Hello."), ("user", "Fever?")],
    [("system", "a\nb"), ("user", "x"), ("assistant", "y"), ("user", "z"), ("assistant", "w"), ("user", "v")],
]


def _chat(tokenizer: Any, turns: list[tuple[str, str]], generation: bool) -> str:
    messages = [{"role": r, "content": c} for r, c in turns]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)


def template_pieces(tokenizer: Any) -> dict[str, str] | None:
    """Each role's prefix and suffix, and the generation prompt, read off renders of marker conversations;
    None where the chat template does not render as concatenated per-role pieces."""
    try:
        only_system = _chat(tokenizer, [("system", SYSTEM)], False)
        one_turn = _chat(tokenizer, [("system", SYSTEM), ("user", USER)], False)
        answered = _chat(tokenizer, [("system", SYSTEM), ("user", USER), ("assistant", ASSISTANT)], False)
        prompted = _chat(tokenizer, [("system", SYSTEM), ("user", USER)], True)
    except Exception as err:  # noqa: BLE001 - a template that raises on these conversations is not one this can follow
        log.warning("the chat template does not render marker conversations (%s)", err)
        return None
    if not (
        one_turn.startswith(only_system) and answered.startswith(one_turn) and prompted.startswith(one_turn)
    ):
        return None
    parts = [only_system.split(SYSTEM), one_turn[len(only_system) :].split(USER)]
    parts.append(answered[len(one_turn) :].split(ASSISTANT))
    if any(len(p) != 2 for p in parts):
        return None
    (sp, ss), (up, us), (ap, as_) = parts
    bos = getattr(tokenizer, "bos_token", None)
    # llama.cpp adds the BOS token itself where the GGUF says so; the template must not add a second one
    if bos and sp.startswith(bos) and getattr(tokenizer, "add_bos_token", False):
        sp = sp[len(bos) :]
    return {
        "system_pre": sp, "system_post": ss, "user_pre": up, "user_post": us,
        "assistant_pre": ap, "assistant_post": as_, "generation": prompted[len(one_turn) :],
    }  # fmt: skip


def _literal(text: str) -> str:
    """Text for a Go template: verbatim, except `{{`, which would open an action."""
    return text.replace("{{", '{{ "{{" }}')


def go_template(pieces: dict[str, str]) -> str:
    """One line of Go template: each message with its role's prefix and suffix, then the generation prompt."""
    branches = "".join(
        f'{{{{ {"if" if i == 0 else "else if"} eq .Role "{role}" }}}}'
        f"{_literal(pieces[role + '_pre'])}{{{{ .Content }}}}{_literal(pieces[role + '_post'])}"
        for i, role in enumerate(("system", "user", "assistant"))
    )
    return f"{{{{ range .Messages }}}}{branches}{{{{ end }}}}{{{{ end }}}}{_literal(pieces['generation'])}"


def template_mismatch(tokenizer: Any, template: str) -> str | None:
    """The first check conversation that the Go template renders differently from the chat template, or None."""
    for turns in CHECKS:
        expected = _chat(tokenizer, turns, True)
        if render_go(template, [{"role": r, "content": c} for r, c in turns]) != expected:
            return json.dumps(turns)
    return None


def _quoted(text: str) -> str:
    if '"""' in text:  # Ollama's Modelfile has no escape for it
        raise UserError(
            'The Modelfile cannot hold this text: it contains """, which ends a Modelfile value. Take it out of '
            f"the system prompt (or chat template), or export with gguf.modelfile=false: {text[:80]!r}..."
        )
    return f'"""{text}"""'


def modelfile(
    tokenizer: Any,
    source: str,
    system_prompt: str,
    parameters: dict[str, Any],
    adapter: str | None = None,
) -> str:
    """The Modelfile's text: FROM source (and ADAPTER adapter), TEMPLATE, SYSTEM, PARAMETER lines."""
    lines = ["# Written by medexp.export: `ollama create <name> -f Modelfile`, then `ollama run <name>`.", ""]
    if adapter:
        lines += [
            "# FROM: the base model the adapter was trained on (its safetensors folder, or a GGUF of it)."
        ]
    lines += [f"FROM {source}"] + ([f"ADAPTER {adapter}"] if adapter else [])
    pieces = template_pieces(tokenizer)
    template = go_template(pieces) if pieces else None
    mismatch = template_mismatch(tokenizer, template) if template else "marker conversations"
    if mismatch is None:
        lines += ["", "# The run's chat template, in Go template syntax (checked to render identically).", ""]
        lines.append(f"TEMPLATE {_quoted(template)}")
    else:
        log.warning(
            "No TEMPLATE in the Modelfile: the chat template is not one of per-role prefixes and suffixes "
            "(it differs on %s). Write TEMPLATE by hand before `ollama create`, or Ollama prompts with bare text.",
            mismatch,
        )
    lines += ["", f"SYSTEM {_quoted(system_prompt)}", ""]
    stops = [tokenizer.eos_token, (pieces or {}).get("assistant_post", "").strip()]
    stops.append((pieces or {}).get("user_pre", "").strip())
    for stop in dict.fromkeys(s for s in stops if s):
        lines.append(f"PARAMETER stop {json.dumps(stop, ensure_ascii=False)}")
    lines += [f"PARAMETER {key} {value}" for key, value in parameters.items()]
    return "\n".join(lines) + "\n"


def generation_parameters(model_dir: Path, context: int) -> dict[str, Any]:
    """temperature and top_p from the model's generation_config.json where it sets them, else `medexp.chat`'s
    defaults (conf/chat.yaml); num_predict as chat's max_new_tokens; num_ctx the model's context, at most 8192
    (Ollama allocates the whole context's KV cache up front)."""
    from importlib.resources import files

    from omegaconf import OmegaConf

    chat = OmegaConf.load(str(files("medexp.conf") / "chat.yaml"))
    path = model_dir / "generation_config.json"
    generation = json.loads(path.read_text()) if path.is_file() else {}
    return {
        "temperature": generation.get("temperature", chat.temperature),
        "top_p": generation.get("top_p", chat.top_p),
        "num_predict": chat.max_new_tokens,
        "num_ctx": min(int(context), 8192),
    }


def write(
    folder: Path,
    tokenizer_dir: Path,
    model_dir: Path,
    source: str,
    system_prompt: str,
    adapter: str | None = None,
) -> Path:
    """folder/Modelfile for the run: its tokenizer's chat template (tokenizer_dir), the context from model_dir."""
    from transformers import AutoTokenizer

    config = model_dir / "config.json"
    context = (
        json.loads(config.read_text()).get("max_position_embeddings", 4096) if config.is_file() else 4096
    )
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    text = modelfile(tokenizer, source, system_prompt, generation_parameters(model_dir, context), adapter)
    (folder / "Modelfile").write_text(text)
    return folder / "Modelfile"
