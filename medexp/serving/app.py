"""The OpenAI-compatible HTTP app that `python -m medexp.serve` runs: POST /v1/chat/completions (streamed as
server-sent events ending `data: [DONE]`, or not), GET /v1/models, GET /health. The training system prompt is
applied server-side; max_tokens and message size are capped; bad requests get a 4xx with an OpenAI-style
{"error": {...}} body.

No `from __future__ import annotations` here: FastAPI and pydantic read the request models' annotations at
runtime, and models defined inside create_app cannot be resolved from strings."""

import json
import time
import uuid
from typing import Any

from omegaconf import DictConfig

from medexp.config import UserError


def create_app(assistant: Any, limits: DictConfig) -> Any:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from pydantic import BaseModel, Field
    from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

    from medexp.serving.assistant import Sampling

    class Message(BaseModel):
        role: str = Field(pattern="^(system|user|assistant)$")
        content: str

    class ChatRequest(BaseModel):
        model: str | None = None
        messages: list[Message] = Field(min_length=1)
        max_tokens: int | None = Field(default=None, ge=1)
        temperature: float = Field(default=0.7, ge=0, le=2)
        top_p: float = Field(default=1.0, gt=0, le=1)
        stream: bool = False

    app = FastAPI(title="medexp", version="1")

    def error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        if first.get("type") == "json_invalid":
            return error(400, f"The request body is not valid JSON: {first.get('msg')}.")
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error(422, f"Invalid field {where or 'body'}: {first.get('msg')}.")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "model": assistant.name}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": assistant.name, "object": "model", "owned_by": "medexp"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: ChatRequest) -> Any:
        if request.max_tokens is not None and request.max_tokens > limits.max_tokens:
            return error(
                400, f"max_tokens={request.max_tokens} is over this server's cap of {limits.max_tokens}."
            )
        size = sum(len(m.content) for m in request.messages)
        if size > limits.max_message_chars:
            return error(
                413,
                f"The messages hold {size} characters; this server accepts at most {limits.max_message_chars}.",
            )
        if request.messages[-1].role != "user":
            return error(400, "The last message must come from the user.")
        conversation = [m.model_dump() for m in request.messages]
        sampling = Sampling(
            request.max_tokens or limits.default_max_tokens, request.temperature, request.top_p
        )
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def finish_reason(completion_tokens: int) -> str:
            """ "length" when max_tokens cut the answer, as OpenAI reports it; else "stop"."""
            return "length" if completion_tokens >= sampling.max_new_tokens else "stop"

        base = {"id": rid, "created": created, "model": assistant.name}
        if not request.stream:
            text, n_prompt, n_new = await run_in_threadpool(assistant.complete, conversation, sampling)
            return base | {
                "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason(n_new)}],
                "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_new, "total_tokens": n_prompt + n_new},
            }  # fmt: skip

        def chunk(delta: dict[str, str], finish: str | None = None) -> str:
            body = base | {
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(body)}\n\n"

        async def events():
            yield chunk({"role": "assistant", "content": ""})
            info: dict[str, int] = {}
            async for piece in iterate_in_threadpool(assistant.stream(conversation, sampling, info)):
                yield chunk({"content": piece})
            yield chunk({}, finish_reason(info.get("completion_tokens", 0)))
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def check_settings(cfg: DictConfig) -> None:
    """The port and the limits, before the model is loaded."""
    port = cfg.port
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise UserError(f"port must be a whole number from 1 to 65535, got {port!r}. For example: port=8000.")
    for key in ("max_tokens", "default_max_tokens", "max_message_chars"):
        value = cfg.limits[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"limits.{key} must be a positive whole number, got {value!r}.")
    if cfg.limits.default_max_tokens > cfg.limits.max_tokens:
        raise UserError(
            f"limits.default_max_tokens={cfg.limits.default_max_tokens} is over limits.max_tokens="
            f"{cfg.limits.max_tokens}: a request without max_tokens would ask for more than the cap."
        )
