"""The OpenAI-compatible HTTP app that `python -m medexp.serve` runs: POST /v1/chat/completions
(`medexp.serving.chat`), POST /v1/completions (`medexp.serving.completions`), GET /v1/models, GET /health and
GET /metrics (Prometheus). The body size, max_tokens, choices and message size are capped; at most
limits.max_concurrent requests generate at once, their sequences decoded together in batches of up to
limits.max_batch (`medexp.serving.batcher`), and limits.max_queue wait, the rest get a 503 with Retry-After at
once; a client that leaves stops its generation. Every refusal is an OpenAI-style {"error": {"message", "type",
"param", "code"}}.

What one app serves lives on its `app.state`: the `served` assistants (medexp.serving.adapters.Served: one
adapter, or several on one base, picked by the request's `model`), `assistant` (the default one), the `engine`
that decodes for them all, its `limits`
(ServeLimits), the admission `gate` (which counts the requests generating and waiting), its `metrics` and the
tokenizer's `vocab` size. The request models and what a request may not ask are `medexp.serving.protocol`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from omegaconf import DictConfig
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException

from medexp.serving import chat, completions
from medexp.serving.admission import BodyCap, Gate, error
from medexp.serving.engine import Engine
from medexp.serving.metrics import RequestMetrics, ServerMetrics

router = APIRouter()


def create_app(served: Any, limits: DictConfig) -> FastAPI:
    """The app serving `served` (medexp.serving.adapters.Served) under `limits` (ServeLimits)."""
    assistant = served.default
    app = FastAPI(title="medexp", version="1")
    gate = Gate(limits.max_concurrent, limits.max_queue, limits.queue_timeout_s)
    metrics = ServerMetrics(waiting=lambda: gate.waiting, generating=lambda: gate.generating)
    app.add_middleware(BodyCap, cap=limits.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics)  # added last: outermost, so 413s are counted too
    app.state.served, app.state.assistant = served, assistant
    app.state.engine = Engine(
        assistant.model, assistant.tokenizer, on_batch=metrics.batch_size.observe, max_batch=limits.max_batch
    )
    app.state.limits = limits
    app.state.vocab = len(assistant.tokenizer)
    app.state.gate = gate
    app.state.metrics = metrics
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, crashed)
    for routes in (router, chat.router, completions.router):
        app.include_router(routes)
    return app


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
    return {"object": "list", "data": request.app.state.served.listing()}


@router.get("/metrics")
def metrics(request: Request) -> Response:
    """Prometheus's text exposition of this server's metrics (medexp.serving.metrics)."""
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
