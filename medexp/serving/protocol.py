"""The OpenAI chat-completions request as this server reads it: its pydantic models, which fields beyond the
implemented ones are accepted, what a request may not ask of this server (`refusal`), and the usage and
finish_reason of an answer. No HTTP here: `medexp.serving.app` turns a `Refusal` into a response."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from omegaconf import DictConfig
from pydantic import BaseModel, ConfigDict, Field

# OpenAI chat-completions fields medexp does not implement. Clients such as the official openai package or
# LangChain send some of them routinely, often with their do-nothing value, so refusing every field not
# implemented would break them; ignoring them all would hand back an answer that silently differs from the
# one asked for. So: IGNORED_FIELDS do not change the answer (accounting, caching, routing; seed is only
# best effort at OpenAI too) and are accepted and ignored. NEUTRAL_VALUES would change the answer in ways
# medexp does not implement (several choices, tools, log-probabilities, JSON mode, stop sequences,
# penalties): their do-nothing values pass, anything else is a 400 naming the field. A field OpenAI does not
# know either (a typo such as max_token) is a 400 listing what is accepted.
IGNORED_FIELDS = frozenset(
    {"user", "safety_identifier", "metadata", "store", "service_tier", "seed", "prompt_cache_key",
     "prompt_cache_retention", "parallel_tool_calls"}
)  # fmt: skip
NEUTRAL_VALUES: dict[str, tuple[Any, ...]] = {
    "n": (None, 1),
    "stop": (None, []),
    "frequency_penalty": (None, 0),
    "presence_penalty": (None, 0),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "response_format": (None, {"type": "text"}),
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "functions": (None, []),
    "function_call": (None, "none"),
    "modalities": (None, ["text"]),
    "audio": (None,),
    "prediction": (None,),
    "reasoning_effort": (None,),
    "verbosity": (None,),
    "web_search_options": (None,),
}


class Message(BaseModel):
    role: str = Field(pattern="^(system|user|assistant)$")
    content: str


class StreamOptions(BaseModel):
    include_usage: bool = Field(default=False, strict=True)


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # judged by unsupported_field, not silently dropped

    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, strict=True)
    max_completion_tokens: int | None = Field(default=None, ge=1, strict=True)  # newer name, same cap
    temperature: float | None = Field(default=None, ge=0, le=2, strict=True, allow_inf_nan=False)
    top_p: float | None = Field(default=None, gt=0, le=1, strict=True, allow_inf_nan=False)
    stream: bool | None = Field(default=None, strict=True)
    stream_options: StreamOptions | None = None
    logit_bias: dict[str, float] | None = None


class Refusal(NamedTuple):
    """Why a request is not answered: its HTTP status, one sentence, and OpenAI's `param` and `code`."""

    status: int
    message: str
    param: str | None = None
    code: str | None = None


def unsupported_field(extra: dict[str, Any], implemented: list[str]) -> tuple[str, str] | None:
    """(field, why) for the first of a request's fields beyond the `implemented` ones that cannot be honoured."""
    for name, value in extra.items():
        if name in IGNORED_FIELDS:
            continue
        if name not in NEUTRAL_VALUES:
            accepted = ", ".join([*implemented, *sorted(IGNORED_FIELDS), *NEUTRAL_VALUES])
            return name, f"Unknown field {name!r}. This server accepts: {accepted}."
        if value not in NEUTRAL_VALUES[name]:
            neutral = " or ".join(json.dumps(v) for v in NEUTRAL_VALUES[name])
            return (
                name,
                f"{name}={json.dumps(value)} is not supported by this server; leave it out or send {neutral}.",
            )
    return None


def refusal(body: ChatRequest, served: str, limits: DictConfig, vocab: int) -> Refusal | None:
    """The first reason this request cannot be answered as asked by the model named `served` (a tokenizer of
    `vocab` tokens) under `limits` (ServeLimits), or None."""
    if unsupported := unsupported_field(body.model_extra or {}, list(ChatRequest.model_fields)):
        return Refusal(400, unsupported[1], unsupported[0], "unsupported_parameter")
    if body.model and body.model != served:
        lists = f"this server serves {served!r} (GET /v1/models lists it)"
        message = f"The model {body.model!r} does not exist here; {lists}. Leave model out or send it."
        return Refusal(404, message, "model", "model_not_found")
    if body.max_tokens and body.max_completion_tokens and body.max_tokens != body.max_completion_tokens:
        both = f"max_tokens={body.max_tokens} and max_completion_tokens={body.max_completion_tokens}"
        return Refusal(400, f"{both} disagree; send one of them.", "max_completion_tokens")
    asked = body.max_completion_tokens or body.max_tokens
    if asked is not None and asked > limits.max_tokens:
        field = "max_tokens" if body.max_tokens else "max_completion_tokens"
        message = f"{field}={asked} is over this server's cap of {limits.max_tokens} (limits.max_tokens)."
        return Refusal(400, message, field)
    size, most = sum(len(m.content) for m in body.messages), limits.max_message_chars
    if size > most:
        message = f"The messages hold {size} characters; this server accepts at most {most}."
        return Refusal(413, message, "messages")
    if body.messages[-1].role != "user":
        return Refusal(400, "The last message must come from the user.", "messages")
    return bad_bias(body.logit_bias or {}, vocab)


def bad_bias(logit_bias: dict[str, float], vocab: int) -> Refusal | None:
    """A logit_bias key that is not a token id of a `vocab`-token model, or a bias outside OpenAI's range."""
    for token, bias in logit_bias.items():
        if not token.isdigit() or int(token) >= vocab:
            message = f"logit_bias key {token!r} is not a token id of this model (0 to {vocab - 1})."
            return Refusal(400, message, "logit_bias")
        if not -100 <= bias <= 100:
            return Refusal(400, f"logit_bias[{token!r}]={bias} is outside -100 to 100.", "logit_bias")
    return None


def token_usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    total = prompt_tokens + completion_tokens
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": total}


def finish_reason(completion_tokens: int, max_new_tokens: int) -> str:
    """ "length" when max_tokens cut the answer, as OpenAI reports it; else "stop"."""
    return "length" if completion_tokens >= max_new_tokens else "stop"
