"""The OpenAI-compatible HTTP app that `python -m medexp.serve` runs: POST /v1/chat/completions (streamed as
server-sent events ending `data: [DONE]`, or not), GET /v1/models, GET /health. The training system prompt is
applied server-side; the body size, max_tokens and message size are capped; at most limits.max_concurrent
requests generate at once and limits.max_queue wait, the rest get a 503 with Retry-After at once; a client that
leaves stops its generation. Every refusal is an OpenAI-style {"error": {"message", "type", "param", "code"}}.

No `from __future__ import annotations` here: FastAPI and pydantic read the request models' annotations at
runtime, and models defined inside create_app cannot be resolved from strings."""

import asyncio
import json
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from omegaconf import DictConfig

from medexp.config import UserError
from medexp.serving.admission import BodyCap, Gate, error_body, until_disconnected

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


def create_app(assistant: Any, limits: DictConfig) -> Any:
    import anyio
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from pydantic import BaseModel, ConfigDict, Field
    from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
    from starlette.exceptions import HTTPException

    from medexp.serving.assistant import Sampling

    vocab = len(assistant.tokenizer)

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

    app = FastAPI(title="medexp", version="1")
    app.add_middleware(BodyCap, cap=int(limits.max_body_bytes))
    gate = Gate(int(limits.max_concurrent), int(limits.max_queue), float(limits.queue_timeout_s))

    def error(
        status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
        param: str | None = None, headers: dict[str, str] | None = None,
    ) -> JSONResponse:  # fmt: skip
        return JSONResponse(error_body(message, kind, code, param), status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        if first.get("type") == "json_invalid":
            return error(400, f"The request body is not valid JSON: {first.get('msg')}.", code="invalid_json")
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error(422, f"Invalid field {where or 'body'}: {first.get('msg')}.", param=where or None)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        """Unknown paths, wrong methods, unreadable bodies: the same error shape as everything else."""
        return error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def crashed(_: Request, exc: Exception) -> JSONResponse:
        return error(500, f"The server failed on this request: {type(exc).__name__}: {exc}", "server_error")

    @app.get("/health")
    def health() -> dict[str, Any]:
        load = {"generating": gate.generating, "waiting": gate.waiting}
        return {"status": "ok", "model": assistant.name} | load

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": assistant.name, "object": "model", "owned_by": "medexp"}]}

    def refusal(body: ChatRequest) -> JSONResponse | None:
        """The first reason this request cannot be answered as asked, or None."""
        if unsupported := unsupported_field(body.model_extra or {}, list(ChatRequest.model_fields)):
            return error(400, unsupported[1], code="unsupported_parameter", param=unsupported[0])
        if body.model and body.model != assistant.name:
            served = f"this server serves {assistant.name!r} (GET /v1/models lists it)"
            message = f"The model {body.model!r} does not exist here; {served}. Leave model out or send it."
            return error(404, message, code="model_not_found", param="model")
        if body.max_tokens and body.max_completion_tokens and body.max_tokens != body.max_completion_tokens:
            both = f"max_tokens={body.max_tokens} and max_completion_tokens={body.max_completion_tokens}"
            return error(400, f"{both} disagree; send one of them.", param="max_completion_tokens")
        asked = body.max_completion_tokens or body.max_tokens
        if asked is not None and asked > limits.max_tokens:
            field = "max_tokens" if body.max_tokens else "max_completion_tokens"
            message = f"{field}={asked} is over this server's cap of {limits.max_tokens} (limits.max_tokens)."
            return error(400, message, param=field)
        size = sum(len(m.content) for m in body.messages)
        if size > limits.max_message_chars:
            message = f"The messages hold {size} characters; this server accepts at most {limits.max_message_chars}."
            return error(413, message, param="messages")
        if body.messages[-1].role != "user":
            return error(400, "The last message must come from the user.", param="messages")
        return bad_bias(body.logit_bias or {})

    def bad_bias(logit_bias: dict[str, float]) -> JSONResponse | None:
        for token, bias in logit_bias.items():
            if not token.isdigit() or int(token) >= vocab:
                message = f"logit_bias key {token!r} is not a token id of this model (0 to {vocab - 1})."
                return error(400, message, param="logit_bias")
            if not -100 <= bias <= 100:
                return error(400, f"logit_bias[{token!r}]={bias} is outside -100 to 100.", param="logit_bias")
        return None

    def busy(reason: str) -> JSONResponse:
        wait = gate.retry_after()
        if reason == "timeout":
            why = f"this request waited {gate.timeout_s:g} s (limits.queue_timeout_s) for a generation slot"
        else:
            why = f"{gate.generating} generating and {gate.waiting} waiting, the most it takes"
            why += f" (limits.max_concurrent={gate.slots}, limits.max_queue={gate.queue})"
        message = f"The server is busy: {why}. Retry after {wait} s."
        return error(503, message, "server_error", "server_busy", headers={"Retry-After": str(wait)})

    class SlotStream(StreamingResponse):
        """A streamed answer that ends its generation and gives its slot back however the response ends: finished,
        failed, or abandoned by the client (Starlette then cancels the stream)."""

        def __init__(self, content: AsyncIterator[str], started: float) -> None:
            super().__init__(content, media_type="text/event-stream")
            self.started = started

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            try:
                await super().__call__(scope, receive, send)
            finally:
                with anyio.CancelScope(shield=True):
                    await self.body_iterator.aclose()  # runs events()'s cleanup now, not when collected
                gate.leave(time.monotonic() - self.started)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request) -> Any:
        if (refused := refusal(body)) is not None:
            return refused
        conversation = [m.model_dump() for m in body.messages]
        temperature = 0.7 if body.temperature is None else body.temperature
        sampling = Sampling(
            body.max_completion_tokens or body.max_tokens or limits.default_max_tokens,
            temperature, 1.0 if body.top_p is None else body.top_p,
            {int(t): b for t, b in (body.logit_bias or {}).items()},
        )  # fmt: skip
        gone = asyncio.ensure_future(until_disconnected(request.receive))
        if (reason := await gate.enter(gone)) is not None:
            gone.cancel()
            return busy(reason)
        started = time.monotonic()
        base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": assistant.name}
        if body.stream:
            gone.cancel()  # from here Starlette's own disconnect listener cancels the stream
            usage = body.stream_options is not None and body.stream_options.include_usage
            return SlotStream(events(conversation, sampling, base, usage), started)
        stop = threading.Event()
        gone.add_done_callback(lambda f: f.cancelled() or stop.set())
        try:
            text, n_prompt, n_new = await run_in_threadpool(assistant.complete, conversation, sampling, stop)
        finally:
            gone.cancel()
            gate.leave(time.monotonic() - started)
        return base | {
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason(n_new, sampling)}],
            "usage": token_usage(n_prompt, n_new),
        }  # fmt: skip

    async def events(
        conversation: list[dict[str, str]], sampling: Any, base: dict[str, Any], usage: bool
    ) -> AsyncIterator[str]:
        def chunk(choices: list[dict[str, Any]], **more: Any) -> str:
            return f"data: {json.dumps(base | {'object': 'chat.completion.chunk', 'choices': choices} | more)}\n\n"

        def delta(content: dict[str, str], finish: str | None = None) -> str:
            return chunk([{"index": 0, "delta": content, "finish_reason": finish}])

        info: dict[str, int] = {}
        stop = threading.Event()
        pieces = assistant.stream(conversation, sampling, info, stop)
        try:
            yield delta({"role": "assistant", "content": ""})
            async for piece in iterate_in_threadpool(pieces):
                yield delta({"content": piece})
            n_prompt, n_new = info.get("prompt_tokens", 0), info.get("completion_tokens", 0)
            yield delta({}, finish_reason(n_new, sampling))
            if usage:  # stream_options.include_usage: one more chunk, with no choices, as OpenAI sends it
                yield chunk([], usage=token_usage(n_prompt, n_new))
            yield "data: [DONE]\n\n"
        finally:
            stop.set()  # the client left, or the stream failed: end the generation at its next token
            with anyio.CancelScope(shield=True):
                await run_in_threadpool(pieces.close)  # returns once the generation thread has ended

    return app


def token_usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    total = prompt_tokens + completion_tokens
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": total}


def finish_reason(completion_tokens: int, sampling: Any) -> str:
    """ "length" when max_tokens cut the answer, as OpenAI reports it; else "stop"."""
    return "length" if completion_tokens >= sampling.max_new_tokens else "stop"


LIMIT_FLOORS = {"max_tokens": 1, "default_max_tokens": 1, "max_message_chars": 1, "max_body_bytes": 1,
                "max_concurrent": 1, "max_queue": 0}  # fmt: skip
LIMIT_MEANINGS = {
    "max_tokens": "the most tokens one request may ask for, e.g. 1024",
    "default_max_tokens": "the tokens a request without max_tokens gets, e.g. 256",
    "max_message_chars": "the most characters over all messages of a request, e.g. 16000",
    "max_body_bytes": "the largest request body read, in bytes, e.g. 262144",
    "max_concurrent": "how many requests generate at once, e.g. 1",
    "max_queue": "how many requests may wait for a generation slot (0: none wait), e.g. 16",
}


def check_settings(cfg: DictConfig) -> None:
    """The port and the limits, before the model is loaded."""
    port = cfg.port
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise UserError(f"port must be a whole number from 1 to 65535, got {port!r}. For example: port=8000.")
    for key, least in LIMIT_FLOORS.items():
        value = cfg.limits[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            kind = "a positive whole number" if least else "a whole number, 0 or more"
            raise UserError(f"limits.{key} must be {kind}, got {value!r}: {LIMIT_MEANINGS[key]}.")
    timeout = cfg.limits.queue_timeout_s
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < math.inf:
        raise UserError(
            f"limits.queue_timeout_s must be a positive number of seconds, got {timeout!r}: how long a request "
            "may wait for a generation slot before it gets a 503 with Retry-After. For example: 60."
        )
    if cfg.limits.default_max_tokens > cfg.limits.max_tokens:
        raise UserError(
            f"limits.default_max_tokens={cfg.limits.default_max_tokens} is over limits.max_tokens="
            f"{cfg.limits.max_tokens}: a request without max_tokens would ask for more than the cap."
        )
