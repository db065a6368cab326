"""POST /v1/chat/completions: the training system prompt and chat template applied server-side; `n` choices,
`stop` sequences, `seed`, `logprobs` / `top_logprobs` in OpenAI chat's format; streamed as server-sent events
ending `data: [DONE]`, or not."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import iterate_in_threadpool

from medexp.serving.admission import admitted, error
from medexp.serving.answers import Job, answer_all, chat_logprobs, stream_answers
from medexp.serving.engine import Decoding
from medexp.serving.protocol import ChatRequest, refusal, stop_list, token_usage, too_long
from medexp.serving.sse import DONE, close, event
from medexp.serving.text import Timing

router = APIRouter()


def decoding_for(body: ChatRequest, default_max_tokens: int) -> Decoding:
    """What the request asks of the generation; OpenAI's defaults where it asks nothing."""
    return Decoding(
        max_new_tokens=body.max_completion_tokens or body.max_tokens or default_max_tokens,
        temperature=0.7 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        logit_bias={int(t): b for t, b in (body.logit_bias or {}).items()},
        top_logprobs=body.top_logprobs or 0,
        seed=body.seed,
    )


@router.post("/v1/chat/completions")
async def chat(body: ChatRequest, request: Request) -> Any:
    arrived = time.monotonic()
    state = request.app.state
    assistant, engine, metrics = state.served.pick(body.model), state.engine, state.metrics
    if (refused := refusal(body, list(state.served.assistants), state.limits, state.vocab)) is not None:
        return error(refused.status, refused.message, code=refused.code, param=refused.param)
    prompt = assistant.prompt_ids([m.model_dump() for m in body.messages])
    decoding = decoding_for(body, state.limits.default_max_tokens)
    decoding.adapter = assistant.adapter  # the model the request names: its adapter answers
    if (refused := too_long(len(prompt), decoding.max_new_tokens, engine.context)) is not None:
        return error(refused.status, refused.message, code=refused.code, param=refused.param)
    job = Job([prompt], decoding, stop_list(body.stop), body.n or 1)
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": assistant.name}
    timing = Timing()

    def work(cancel: Any) -> dict[str, Any]:
        answers = answer_all(engine, job, timing, cancel)
        metrics.answered(len(prompt), timing.tokens, arrived, timing.first_token_at)
        choices = []
        for index, answer in enumerate(answers):
            listed = (
                {"content": chat_logprobs(engine.tokenizer, answer.steps, prompt)} if body.logprobs else None
            )
            message = {"role": "assistant", "content": answer.text.strip()}
            choices.append(
                {"index": index, "message": message, "logprobs": listed, "finish_reason": answer.finish}
            )
        usage = token_usage(len(prompt), timing.tokens)
        return base | {"object": "chat.completion", "choices": choices, "usage": usage}

    if not body.stream:
        return await admitted(request, work)
    usage = body.stream_options is not None and body.stream_options.include_usage
    return await admitted(
        request, work, lambda: events(state, job, base, body.logprobs or False, usage, arrived)
    )


async def events(
    state: Any, job: Job, base: dict[str, Any], logprobs: bool, usage: bool, arrived: float
) -> AsyncIterator[str]:
    """The streamed answer: for each choice a role chunk, one chunk per piece of text (with its tokens'
    log-probabilities when asked), the finish reason; the usage when asked; then `[DONE]`."""
    engine, timing = state.engine, Timing()
    prompt = job.prompts[0]

    def chunk(choices: list[dict[str, Any]], **more: Any) -> str:
        return event(base | {"object": "chat.completion.chunk", "choices": choices} | more)

    items = stream_answers(engine, job, timing)
    said: dict[int, list[int]] = {}  # each choice's tokens so far: what a token's text reads after
    try:
        async for index, piece in iterate_in_threadpool(items):
            if index not in said:
                said[index] = list(prompt)
                yield chunk(
                    [{"index": index, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
                )
            choice: dict[str, Any] = {"index": index, "delta": {"content": piece.text} if piece.text else {}}
            if logprobs:
                steps = [s for s in piece.steps if s.token not in engine.stop_ids]
                choice["logprobs"] = {"content": chat_logprobs(engine.tokenizer, steps, said[index])}
            said[index] += [s.token for s in piece.steps]
            if piece.text or piece.steps or piece.finish:
                yield chunk([choice | {"finish_reason": piece.finish}])
        if usage:  # stream_options.include_usage: one more chunk, with no choices, as OpenAI sends it
            yield chunk([], usage=token_usage(len(prompt), timing.tokens))
        yield DONE
    finally:
        await close(items)
        state.metrics.answered(len(prompt), timing.tokens, arrived, timing.first_token_at)
