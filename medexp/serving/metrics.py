"""Prometheus metrics of one server (`GET /metrics`, through prometheus-client), in a registry of its own: requests
by endpoint and status, tokens in and out, requests generating and waiting, the batch size of each forward pass,
request latency and time to first token. Names follow vLLM's where it has one (prompt and generation tokens,
time to first token), with the `medexp_` prefix."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Endpoints named in the labels; any other path counts as "other", so that a scan of made-up paths cannot grow
# the label set without bound.
ENDPOINTS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics"})
LATENCY_BUCKETS = (
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
)  # seconds: a 1024-token answer on CPU
FIRST_TOKEN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class ServerMetrics:
    """The metrics of one app; `waiting` and `generating` are read from the admission gate when scraped."""

    def __init__(self, waiting: Callable[[], int], generating: Callable[[], int]) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter(
            "medexp_requests",
            "HTTP requests answered, by endpoint and status",
            ["endpoint", "status"],
            registry=registry,
        )
        self.prompt_tokens = Counter(
            "medexp_prompt_tokens", "Prompt tokens read (usage.prompt_tokens)", registry=registry
        )
        self.generation_tokens = Counter(
            "medexp_generation_tokens", "Tokens generated (usage.completion_tokens)", registry=registry
        )
        Gauge("medexp_queue_depth", "Requests waiting for a generation slot", registry=registry).set_function(
            waiting
        )
        Gauge("medexp_requests_running", "Requests generating", registry=registry).set_function(generating)
        self.batch_size = Histogram(
            "medexp_batch_size", "Sequences in each forward pass", buckets=BATCH_BUCKETS, registry=registry
        )
        self.latency = Histogram(
            "medexp_request_latency_seconds", "From a request's arrival to the end of its answer, by endpoint",
            ["endpoint"], buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.first_token = Histogram(
            "medexp_time_to_first_token_seconds", "From a request's arrival to its first generated token",
            buckets=FIRST_TOKEN_BUCKETS, registry=registry,
        )  # fmt: skip

    def answered(
        self, prompt_tokens: int, generated: int, arrived: float, first_token_at: float | None
    ) -> None:
        """One request's tokens, and its time to first token when it generated any."""
        self.prompt_tokens.inc(prompt_tokens)
        self.generation_tokens.inc(generated)
        if first_token_at is not None:
            self.first_token.observe(first_token_at - arrived)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetrics:
    """ASGI middleware: counts each HTTP request by endpoint and status and times it to its last byte (a streamed
    answer to its end). Outermost, so that bodies refused before parsing (413) and failures (500) count too."""

    def __init__(self, app: Any, metrics: ServerMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        endpoint = scope["path"] if scope["path"] in ENDPOINTS else "other"
        started, status = time.monotonic(), [500]

        async def send_noting_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            self.metrics.requests.labels(endpoint, str(status[0])).inc()
            self.metrics.latency.labels(endpoint).observe(time.monotonic() - started)
