"""What the server lets in: `BodyCap` refuses a body over the size cap before anything parses it, `Gate` bounds
how many requests generate and wait at once (the rest get a 503 with Retry-After at once), and `admitted` runs a
handler's work once the gate lets it in, giving the slot back however the answer ends."""

import asyncio
import json
import math
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool


def error_body(message: str, kind: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class BodyCap:
    """ASGI middleware: a request body over `cap` bytes is a 413 before anything parses it, judged from
    Content-Length when the client declares one and by counting while reading otherwise (a chunked upload)."""

    def __init__(self, app: Any, cap: int) -> None:
        self.app, self.cap = app, cap
        # Clients such as urllib and requests send the whole body before reading the answer: the rest of a body
        # up to this size is read and dropped first, so that they get the 413 rather than a reset connection.
        self.drained = 16 * cap

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"").decode("latin-1")
        if declared.isdigit() and int(declared) > self.cap:
            if int(declared) <= self.drained:
                await self.drain(receive, self.drained)
            return await self.refuse(send, f"{int(declared)} bytes")
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before sending its whole body
            body += message.get("body", b"")
            if len(body) > self.cap:
                more = message.get("more_body", False)
                await self.drain(receive, self.drained - len(body) if more else 0)
                return await self.refuse(send, f"more than {self.cap} bytes")
            if not message.get("more_body", False):
                break
        await self.app(scope, replay(bytes(body), receive), send)

    @staticmethod
    async def drain(receive: Callable, left: int) -> None:
        """Read and drop the rest of the body, up to `left` bytes."""
        while left > 0:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                return
            left -= len(message.get("body", b""))

    async def refuse(self, send: Callable, size: str) -> None:
        message = f"The request body is {size}; this server reads at most {self.cap} (limits.max_body_bytes)."
        payload = json.dumps(error_body(message, "invalid_request_error", "request_too_large")).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def replay(body: bytes, receive: Callable) -> Callable[[], Awaitable[dict[str, Any]]]:
    """An ASGI receive that hands over the already-read body once, then the client's own events (disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive_again() -> dict[str, Any]:
        return pending.pop() if pending else await receive()

    return receive_again


async def until_disconnected(receive: Callable) -> None:
    """Returns when the client has gone (its body is already read, so nothing else arrives)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class Gate:
    """At most `slots` requests generate at once and at most `queue` more wait, each for at most `timeout_s`
    seconds; a request beyond that is turned away at once. Used from the server's event loop only."""

    def __init__(self, slots: int, queue: int, timeout_s: float) -> None:
        self.slots, self.queue, self.timeout_s = slots, queue, timeout_s
        self.generating = self.waiting = 0
        self._free = asyncio.Semaphore(slots)
        self._held_s = 1.0  # running mean of how long a request holds a slot, for Retry-After

    async def enter(self, gone: "asyncio.Future[None]") -> str | None:
        """Wait for a slot: None once one is held, else why not ("full", "timeout", or "gone": the client left)."""
        if self._free.locked() and self.waiting >= self.queue:
            return "full"
        self.waiting += 1
        slot = asyncio.ensure_future(self._free.acquire())
        try:
            await asyncio.wait({slot, gone}, timeout=self.timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.waiting -= 1
        if not slot.done():
            slot.cancel()  # a slot granted meanwhile is handed on by Semaphore.acquire's cancellation path
            return "gone" if gone.done() else "timeout"
        if gone.done():
            self._free.release()
            return "gone"
        self.generating += 1
        return None

    def leave(self, held_s: float) -> None:
        self.generating -= 1
        self._held_s = 0.7 * self._held_s + 0.3 * held_s
        self._free.release()

    def retry_after(self) -> int:
        """Seconds until a retry is likely to find room: the mean slot time for each round of the queue ahead."""
        return max(1, math.ceil(self._held_s * (self.waiting // self.slots + 1)))


def error(
    status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
    param: str | None = None, headers: dict[str, str] | None = None,
) -> JSONResponse:  # fmt: skip
    return JSONResponse(error_body(message, kind, code, param), status_code=status, headers=headers)


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
                await self.body_iterator.aclose()  # runs the events' cleanup now, not when collected
            self.gate.leave(time.monotonic() - self.started)


async def admitted(
    request: Request,
    work: Callable[[threading.Event], Any],
    events: Callable[[], AsyncIterator[str]] | None = None,
) -> Any:
    """Once the gate lets this request in: the streamed `events()` when given, else `work(cancel)` run in a worker
    thread (`cancel` is set when the client leaves). A 503 with Retry-After when the gate turns it away."""
    gate = request.app.state.gate
    gone = asyncio.ensure_future(until_disconnected(request.receive))
    if (reason := await gate.enter(gone)) is not None:
        gone.cancel()
        return busy(gate, reason)
    started = time.monotonic()
    if events is not None:
        gone.cancel()  # from here Starlette's own disconnect listener cancels the stream
        return SlotStream(events(), gate, started)
    cancel = threading.Event()
    gone.add_done_callback(lambda f: f.cancelled() or cancel.set())
    try:
        return await run_in_threadpool(work, cancel)
    finally:
        gone.cancel()
        gate.leave(time.monotonic() - started)
