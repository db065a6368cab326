"""The OpenAI-compatible HTTP app that `python -m medexp.serve` runs: POST /v1/chat/completions (streamed as
server-sent events ending `data: [DONE]`, or not), GET /v1/models, GET /health. The training system prompt is
applied server-side; the body size, max_tokens and message size are capped; at most limits.max_concurrent
requests generate at once and limits.max_queue wait, the rest get a 503 with Retry-After at once; a client that
leaves stops its generation. Every refusal is an OpenAI-style {"error": {"message", "type", "param", "code"}}.

The handlers are module-level functions on `router`; what one app serves lives on its `app.state`: the
`assistant`, its `limits` (ServeLimits), the admission `gate` (which counts the requests generating and waiting)
and the tokenizer's `vocab` size. The request models and what a request may not ask are `medexp.serving.protocol`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from omegaconf import DictConfig
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.exceptions import HTTPException

from medexp.serving.admission import BodyCap, Gate, error_body, until_disconnected
from medexp.serving.assistant import Sampling
from medexp.serving.protocol import ChatRequest, finish_reason, refusal, token_usage

router = APIRouter()


def create_app(assistant: Any, limits: DictConfig) -> FastAPI:
    """The app serving `assistant` (a medexp.serving.assistant.Assistant) under `limits` (ServeLimits)."""
    app = FastAPI(title="medexp", version="1")
    app.add_middleware(BodyCap, cap=limits.max_body_bytes)
    app.state.assistant = assistant
    app.state.limits = limits
    app.state.vocab = len(assistant.tokenizer)
    app.state.gate = Gate(limits.max_concurrent, limits.max_queue, limits.queue_timeout_s)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, crashed)
    app.include_router(router)
    return app


def error(
    status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
    param: str | None = None, headers: dict[str, str] | None = None,
) -> JSONResponse:  # fmt: skip
    return JSONResponse(error_body(message, kind, code, param), status_code=status, headers=headers)


async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0]
    if first.get("type") == "json_invalid":
        return error(400, f"The request body is not valid JSON: {first.get('msg')}.", code="invalid_json")
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    return error(422, f"Invalid field {where or 'body'}: {first.get('msg')}.", param=where or None)


async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
    """Unknown paths, wrong methods, unreadable bodies: the same error shape as everything else."""
    return error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))


async def crashed(_: Request, exc: Exception) -> JSONResponse:
    return error(500, f"The server failed on this request: {type(exc).__name__}: {exc}", "server_error")


@router.get("/health")
def health(request: Request) -> dict[str, Any]:
    state = request.app.state
    load = {"generating": state.gate.generating, "waiting": state.gate.waiting}
    return {"status": "ok", "model": state.assistant.name} | load


@router.get("/v1/models")
def models(request: Request) -> dict[str, Any]:
    name = request.app.state.assistant.name
    return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "medexp"}]}


def busy(gate: Gate, reason: str) -> JSONResponse:
    """The 503 for a request the gate turned away: full, or waited too long."""
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

    def __init__(self, content: AsyncIterator[str], gate: Gate, started: float) -> None:
        super().__init__(content, media_type="text/event-stream")
        self.gate, self.started = gate, started

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()  # runs events()'s cleanup now, not when collected
            self.gate.leave(time.monotonic() - self.started)


def sampling_for(body: ChatRequest, limits: DictConfig) -> Sampling:
    """What the request asks of the generation; OpenAI's defaults where it asks nothing."""
    return Sampling(
        body.max_completion_tokens or body.max_tokens or limits.default_max_tokens,
        0.7 if body.temperature is None else body.temperature,
        1.0 if body.top_p is None else body.top_p,
        {int(t): b for t, b in (body.logit_bias or {}).items()},
    )


@router.post("/v1/chat/completions")
async def chat(body: ChatRequest, request: Request) -> Any:
    state = request.app.state
    assistant, gate = state.assistant, state.gate
    if (refused := refusal(body, assistant.name, state.limits, state.vocab)) is not None:
        return error(refused.status, refused.message, code=refused.code, param=refused.param)
    conversation = [m.model_dump() for m in body.messages]
    sampling = sampling_for(body, state.limits)
    gone = asyncio.ensure_future(until_disconnected(request.receive))
    if (reason := await gate.enter(gone)) is not None:
        gone.cancel()
        return busy(gate, reason)
    started = time.monotonic()
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": assistant.name}
    if body.stream:
        gone.cancel()  # from here Starlette's own disconnect listener cancels the stream
        usage = body.stream_options is not None and body.stream_options.include_usage
        return SlotStream(events(assistant, conversation, sampling, base, usage), gate, started)
    stop = threading.Event()
    gone.add_done_callback(lambda f: f.cancelled() or stop.set())
    try:
        text, n_prompt, n_new = await run_in_threadpool(assistant.complete, conversation, sampling, stop)
    finally:
        gone.cancel()
        gate.leave(time.monotonic() - started)
    finish = finish_reason(n_new, sampling.max_new_tokens)
    return base | {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": token_usage(n_prompt, n_new),
    }  # fmt: skip


async def events(
    assistant: Any, conversation: list[dict[str, str]], sampling: Sampling, base: dict[str, Any], usage: bool
) -> AsyncIterator[str]:
    """The streamed answer as server-sent events: a role chunk, one chunk per piece of text, the finish reason,
    the usage when asked, then `[DONE]`."""

    def chunk(choices: list[dict[str, Any]], **more: Any) -> str:
        payload = base | {"object": "chat.completion.chunk", "choices": choices} | more
        return f"data: {json.dumps(payload)}\n\n"

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
        yield delta({}, finish_reason(n_new, sampling.max_new_tokens))
        if usage:  # stream_options.include_usage: one more chunk, with no choices, as OpenAI sends it
            yield chunk([], usage=token_usage(n_prompt, n_new))
        yield "data: [DONE]\n\n"
    finally:
        stop.set()  # the client left, or the stream failed: end the generation at its next token
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(pieces.close)  # returns once the generation thread has ended
