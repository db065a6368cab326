"""The OpenAI chat-completions and completions requests as this server reads them: their pydantic models, which
fields beyond the implemented ones are accepted, what a request may not ask of this server (`refusal`,
`completion_refusal`), and the usage of an answer. No HTTP here: the handlers turn a `Refusal` into a response."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from omegaconf import DictConfig
from pydantic import BaseModel, ConfigDict, Field

# OpenAI fields medexp does not implement. Clients such as the official openai package or LangChain send some
# of them routinely, often with their do-nothing value, so refusing every field not implemented would break
# them; ignoring them all would hand back an answer that silently differs from the one asked for. So:
# IGNORED_FIELDS do not change the answer (accounting, caching, routing) and are accepted and ignored.
# NEUTRAL_VALUES would change the answer in ways medexp does not implement (tools, JSON mode, penalties, a
# suffix): their do-nothing values pass, anything else is a 400 naming the field. A field OpenAI does not know
# either (a typo such as max_token) is a 400 listing what is accepted.
IGNORED_FIELDS = frozenset(
    {"user", "safety_identifier", "metadata", "store", "service_tier", "prompt_cache_key",
     "prompt_cache_retention", "parallel_tool_calls"}
)  # fmt: skip
NEUTRAL_VALUES: dict[str, tuple[Any, ...]] = {
    "frequency_penalty": (None, 0),
    "presence_penalty": (None, 0),
    "response_format": (None, {"type": "text"}),
    "suffix": (None, ""),  # completions: text after the insertion point
    "best_of": (None, 1),  # completions: several answers generated, the best returned
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
MAX_STOPS = 4  # stop sequences one request may give: OpenAI's limit
MAX_LOGPROBS = (
    20  # likeliest tokens listed per position: OpenAI's top_logprobs cap, and vLLM's default max_logprobs
)


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
    stop: str | list[str] | None = None
    n: int | None = Field(default=None, ge=1, strict=True)
    seed: int | None = Field(default=None, strict=True)
    logprobs: bool | None = Field(default=None, strict=True)
    top_logprobs: int | None = Field(default=None, strict=True)


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    # text, several texts, token ids, or several lists of token ids (as lm-evaluation-harness sends them)
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(default=None, ge=0, strict=True)  # 0 with echo: score the prompt only
    temperature: float | None = Field(default=None, ge=0, le=2, strict=True, allow_inf_nan=False)
    top_p: float | None = Field(default=None, gt=0, le=1, strict=True, allow_inf_nan=False)
    stream: bool | None = Field(default=None, strict=True)
    stream_options: StreamOptions | None = None
    logit_bias: dict[str, float] | None = None
    stop: str | list[str] | None = None
    n: int | None = Field(default=None, ge=1, strict=True)
    seed: int | None = Field(default=None, strict=True)
    logprobs: int | None = Field(default=None, strict=True)
    echo: bool | None = Field(default=None, strict=True)


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


def refusal(body: ChatRequest, served: list[str], limits: DictConfig, vocab: int) -> Refusal | None:
    """The first reason this chat request cannot be answered as asked by the models named `served` (a tokenizer
    of `vocab` tokens) under `limits` (ServeLimits), or None."""
    if (refused := common_refusal(body, ChatRequest, served, limits, vocab, 1)) is not None:
        return refused
    if body.max_tokens and body.max_completion_tokens and body.max_tokens != body.max_completion_tokens:
        both = f"max_tokens={body.max_tokens} and max_completion_tokens={body.max_completion_tokens}"
        return Refusal(400, f"{both} disagree; send one of them.", "max_completion_tokens")
    asked = body.max_completion_tokens or body.max_tokens
    if asked is not None and asked > limits.max_tokens:
        field = "max_tokens" if body.max_tokens else "max_completion_tokens"
        message = f"{field}={asked} is over this server's cap of {limits.max_tokens} (limits.max_tokens)."
        return Refusal(400, message, field)
    if body.top_logprobs is not None and not body.logprobs:
        return Refusal(400, "top_logprobs needs logprobs=true.", "top_logprobs")
    if (bad := bad_logprobs("top_logprobs", body.top_logprobs)) is not None:
        return bad
    size, most = sum(len(m.content) for m in body.messages), limits.max_message_chars
    if size > most:
        message = f"The messages hold {size} characters; this server accepts at most {most}."
        return Refusal(413, message, "messages")
    if body.messages[-1].role != "user":
        return Refusal(400, "The last message must come from the user.", "messages")
    return None


def completion_refusal(
    body: CompletionRequest, served: list[str], limits: DictConfig, vocab: int
) -> Refusal | None:
    """The first reason this completions request cannot be answered as asked, or None; the prompt's length in
    tokens is judged once it is tokenized (`too_long`)."""
    prompts = body.prompt if isinstance(body.prompt, list) and body.prompt else [body.prompt]
    if body.prompt == [] or any(p == [] for p in prompts):
        return Refusal(400, "The prompt is empty; send text, or token ids.", "prompt")
    if isinstance(prompts[0], int):
        prompts = [prompts]
    if (refused := common_refusal(body, CompletionRequest, served, limits, vocab, len(prompts))) is not None:
        return refused
    if body.max_tokens is not None and body.max_tokens > limits.max_tokens:
        message = f"max_tokens={body.max_tokens} is over this server's cap of {limits.max_tokens} (limits.max_tokens)."
        return Refusal(400, message, "max_tokens")
    if body.max_tokens == 0 and not body.echo:
        message = "max_tokens=0 generates nothing: it scores the prompt, with echo=true (and logprobs for the scores)."
        return Refusal(400, message, "max_tokens")
    if (bad := bad_logprobs("logprobs", body.logprobs)) is not None:
        return bad
    size, most = sum(len(p) for p in prompts if isinstance(p, str)), limits.max_message_chars
    if size > most:
        return Refusal(
            413, f"The prompt holds {size} characters; this server accepts at most {most}.", "prompt"
        )
    for ids in (p for p in prompts if isinstance(p, list)):
        if (wrong := next((t for t in ids if not 0 <= t < vocab), None)) is not None:
            return Refusal(
                400, f"The prompt's token id {wrong} is not one of this model's (0 to {vocab - 1}).", "prompt"
            )
    return None


def common_refusal(
    body: Any, model: type[BaseModel], served: list[str], limits: DictConfig, vocab: int, prompts: int
) -> Refusal | None:
    """What chat and completions requests may not ask alike: an unknown field, another model, too many choices,
    stop sequences beyond OpenAI's, a bad logit_bias."""
    if unsupported := unsupported_field(body.model_extra or {}, list(model.model_fields)):
        return Refusal(400, unsupported[1], unsupported[0], "unsupported_parameter")
    if body.model and body.model not in served:
        listed = ", ".join(repr(n) for n in served)
        lists = f"this server serves {listed} (GET /v1/models lists {'them' if len(served) > 1 else 'it'})"
        message = (
            f"The model {body.model!r} does not exist here; {lists}. Leave model out or send one of them."
        )
        return Refusal(404, message, "model", "model_not_found")
    choices = (body.n or 1) * prompts
    if choices > limits.max_n:
        asked = f"n={body.n or 1}" + (
            f" for each of {prompts} prompts asks for {choices} choices," if prompts > 1 else ""
        )
        return Refusal(400, f"{asked} over this server's cap of {limits.max_n} (limits.max_n).", "n")
    if (bad := bad_stop(body.stop)) is not None:
        return bad
    return bad_bias(body.logit_bias or {}, vocab)


def too_long(prompt_tokens: int, max_new_tokens: int, context: int) -> Refusal | None:
    """A prompt that, with the tokens asked for after it, does not fit the model's context."""
    if prompt_tokens + max_new_tokens <= context:
        return None
    asked = (
        f" and max_tokens={max_new_tokens} asks for {prompt_tokens + max_new_tokens} in all,"
        if max_new_tokens
        else ","
    )
    message = (
        f"The prompt is {prompt_tokens} tokens{asked} over the model's context of {context} tokens. "
        "Shorten the prompt" + (" or lower max_tokens." if max_new_tokens else ".")
    )
    return Refusal(400, message, "prompt" if not max_new_tokens else "max_tokens", "context_length_exceeded")


def stop_list(stop: str | list[str] | None) -> list[str]:
    return [stop] if isinstance(stop, str) else list(stop or [])


def bad_stop(stop: str | list[str] | None) -> Refusal | None:
    """More stop sequences than OpenAI takes, or an empty one (it would stop before the first token)."""
    stops = stop_list(stop)
    if len(stops) > MAX_STOPS:
        return Refusal(
            400, f"stop lists {len(stops)} sequences; this server takes at most {MAX_STOPS}.", "stop"
        )
    if "" in stops:
        return Refusal(
            400, "stop holds an empty string, which would end every answer before it starts.", "stop"
        )
    return None


def bad_logprobs(field: str, asked: int | None) -> Refusal | None:
    if asked is not None and not 0 <= asked <= MAX_LOGPROBS:
        message = f"{field}={asked} is outside 0 to {MAX_LOGPROBS}: how many likeliest tokens to list at each position."
        return Refusal(400, message, field)
    return None


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
