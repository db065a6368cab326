"""POST /v1/completions, OpenAI's legacy text completions: the prompt taken as it is (no chat template, no system
prompt), as text, several texts, token ids or several lists of them; `n`, `stop`, `seed`, `logprobs` (tokens,
token_logprobs, top_logprobs, text_offset), `echo`, and `max_tokens=0` with `echo` to score a prompt's own tokens
(the first one's log-probability is null: nothing precedes it), which is what lm-evaluation-harness's
`local-completions` model asks for its log-likelihoods. Streamed as server-sent events, or not."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import iterate_in_threadpool

from medexp.serving.admission import admitted, error
from medexp.serving.answers import Job, join_logprobs, legacy_logprobs, stream_answers
from medexp.serving.engine import Decoding, Engine
from medexp.serving.protocol import CompletionRequest, completion_refusal, stop_list, token_usage, too_long
from medexp.serving.sse import DONE, close, event
from medexp.serving.text import Timing

router = APIRouter()


def prompts_of(body: CompletionRequest, tokenizer: Any) -> tuple[list[list[int]], list[str]]:
    """Each prompt's token ids and its text (what echo repeats): text is tokenized as the tokenizer does by default
    (its special tokens added, as vLLM does), token ids are taken as they are."""
    given = body.prompt if isinstance(body.prompt, list) else [body.prompt]
    if isinstance(given[0], int):
        given = [given]
    ids = [tokenizer(p)["input_ids"] if isinstance(p, str) else list(p) for p in given]
    texts = [p if isinstance(p, str) else tokenizer.decode(p, skip_special_tokens=True) for p in given]
    return ids, texts


def decoding_for(body: CompletionRequest, default_max_tokens: int, room: int) -> Decoding:
    """What the request asks of the generation; without max_tokens, limits.default_max_tokens or the `room` left
    in the model's context after the longest prompt, whichever is less."""
    asked = body.max_tokens
    if asked is None:
        asked = min(default_max_tokens, room) if room > 0 else default_max_tokens
    return Decoding(
        max_new_tokens=asked,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        logit_bias={int(t): b for t, b in (body.logit_bias or {}).items()},
        top_logprobs=body.logprobs or 0,
        seed=body.seed,
    )


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request) -> Any:
    arrived = time.monotonic()
    state = request.app.state
    engine, metrics, assistant = state.engine, state.metrics, state.served.pick(body.model)
    names = list(state.served.assistants)
    if (refused := completion_refusal(body, names, state.limits, state.vocab)) is not None:
        return error(refused.status, refused.message, code=refused.code, param=refused.param)
    name = assistant.name
    prompts, texts = prompts_of(body, engine.tokenizer)
    decoding = decoding_for(body, state.limits.default_max_tokens, engine.context - max(map(len, prompts)))
    decoding.adapter = assistant.adapter  # the model the request names: its adapter answers
    for prompt in prompts:
        if (refused := too_long(len(prompt), decoding.max_new_tokens, engine.context)) is not None:
            return error(refused.status, refused.message, code=refused.code, param=refused.param)
    job = Job(prompts, decoding, stop_list(body.stop), body.n or 1)
    base = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": name}
    n_prompt = sum(map(len, prompts))

    def work(cancel: Any) -> dict[str, Any]:
        timing = Timing()
        merged: dict[int, dict[str, Any]] = {}
        for part in choice_parts(engine, job, texts, body.logprobs, bool(body.echo), timing, cancel):
            if (whole := merged.get(part["index"])) is None:
                merged[part["index"]] = part
                continue
            whole["text"] += part["text"]
            whole["finish_reason"] = part["finish_reason"] or whole["finish_reason"]
            if part["logprobs"] is not None:
                whole["logprobs"] = join_logprobs(whole["logprobs"], part["logprobs"])
        metrics.answered(n_prompt, timing.tokens, arrived, timing.first_token_at)
        choices = [
            merged[i] | {"finish_reason": merged[i]["finish_reason"] or "stop"} for i in sorted(merged)
        ]
        return base | {
            "object": "text_completion",
            "choices": choices,
            "usage": token_usage(n_prompt, timing.tokens),
        }

    if not body.stream:
        return await admitted(request, work)
    usage = body.stream_options is not None and body.stream_options.include_usage

    async def events() -> AsyncIterator[str]:
        timing = Timing()
        items = choice_parts(engine, job, texts, body.logprobs, bool(body.echo), timing)
        try:
            async for part in iterate_in_threadpool(items):
                yield event(base | {"object": "text_completion", "choices": [part]})
            if usage:
                yield event(
                    base
                    | {
                        "object": "text_completion",
                        "choices": [],
                        "usage": token_usage(n_prompt, timing.tokens),
                    }
                )
            yield DONE
        finally:
            await close(items)
            metrics.answered(n_prompt, timing.tokens, arrived, timing.first_token_at)

    return await admitted(request, work, events)


def choice_parts(
    engine: Engine,
    job: Job,
    texts: list[str],
    logprobs: int | None,
    echo: bool,
    timing: Timing,
    cancel: Any = None,
) -> Iterator[dict[str, Any]]:
    """The choices as they are generated, in parts of OpenAI's completion-choice shape: with echo, the prompt
    first (its tokens scored when logprobs are asked, once per prompt), then each piece of the answer."""
    tokenizer, special = engine.tokenizer, set(engine.tokenizer.all_special_ids)
    scored: dict[int, dict[str, list[Any]]] = {}
    said: dict[int, tuple[list[int], int]] = {}  # each choice's tokens so far, and the characters they take
    for index, piece in stream_answers(engine, job, timing, cancel):
        p = index // job.n
        prompt = job.prompts[p]
        if index not in said:
            said[index] = (list(prompt), len(texts[p]) if echo else 0)
            if echo:
                first: dict[str, Any] = {
                    "index": index,
                    "text": texts[p],
                    "logprobs": None,
                    "finish_reason": None,
                }
                if logprobs is not None:
                    if p not in scored:
                        steps = engine.score(prompt, logprobs, job.decoding.adapter)
                        scored[p] = legacy_logprobs(tokenizer, prompt, steps, [], 0)
                    first["logprobs"] = scored[p]
                yield first
        before, at = said[index]
        ids = [s.token for s in piece.steps]
        part = {"index": index, "text": piece.text, "logprobs": None, "finish_reason": piece.finish}
        if logprobs is not None:
            part["logprobs"] = legacy_logprobs(tokenizer, ids, piece.steps, before, at)
            at += sum(
                len(t) for t, i in zip(part["logprobs"]["tokens"], ids, strict=True) if i not in special
            )
        said[index] = (before + ids, at)
        yield part
