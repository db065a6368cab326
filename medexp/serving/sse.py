"""Server-sent events as OpenAI streams them: `data: <json>` events ending with `data: [DONE]`, from a generator
read in worker threads (each token is a forward pass, which must not block the event loop)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anyio
from starlette.concurrency import run_in_threadpool

DONE = "data: [DONE]\n\n"


def event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload)}\n\n"


async def close(items: Iterator[Any]) -> None:
    """Close a generator read in worker threads, whatever ended the reading (a client that left: Starlette cancels
    the stream, and the generation stops at the token in progress)."""
    with anyio.CancelScope(shield=True):
        await run_in_threadpool(items.close)  # type: ignore[attr-defined]
