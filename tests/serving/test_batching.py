"""Continuous batching (medexp.serving.batcher) on the embedded tiny model: concurrent sequences share forward
passes, each decodes in the batch exactly as it does alone (left padding, attention mask, position ids, joining a
running batch, leaving it), per-request stop sequences and max_tokens hold inside a shared batch, two streams are
served at once, and a peft adapter per row reaches the forward as `adapter_names`. The HTTP tests run the real app
under uvicorn in this process (no training: the tiny base model serves)."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from tests.helpers import TINY_MODEL
from tests.serving.test_openai_surface import _post, _scrape
from tests.serving.test_use import _free_port

TEXTS = [
    "What is asthma?",
    "Diabetes is a disease in which the body",
    "Hi",
    "The heart pumps blood through the arteries and veins of the whole body",
    "A",
    "Cancer cells divide",
]


@pytest.fixture(scope="module")
def tiny():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(TINY_MODEL), dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(str(TINY_MODEL))


def _engine(model, tokenizer, max_batch: int):
    from medexp.serving.engine import Engine

    sizes: list[int] = []
    return Engine(model, tokenizer, on_batch=sizes.append, max_batch=max_batch), sizes


def _decode_all(engine, prompts, lengths, adapters=None, stagger_s: float = 0.0) -> list[list]:
    """Each prompt's greedy Steps, the prompts sent from threads of their own, `stagger_s` apart."""
    from medexp.serving.engine import Decoding

    adapters = adapters or [None] * len(prompts)

    def one(i: int) -> list:
        time.sleep(stagger_s * i)
        decoding = Decoding(max_new_tokens=lengths[i], temperature=0, adapter=adapters[i])
        return list(engine.generate(prompts[i], decoding, engine.sampler(0)))

    with ThreadPoolExecutor(len(prompts)) as pool:
        return list(pool.map(one, range(len(prompts))))


def _same(alone: list, together: list) -> None:
    assert [s.token for s in together] == [s.token for s in alone]
    assert max(abs(a.logprob - b.logprob) for a, b in zip(alone, together, strict=True)) < 1e-4


def test_batched_greedy_decoding_equals_one_at_a_time(tiny):
    """Prompts of 1 to 14 tokens arriving while others decode (max_batch 3, so some wait for a row to leave),
    each with its own max_new_tokens: the same tokens and log-probabilities as decoded alone, in fewer forwards."""
    model, tokenizer = tiny
    prompts = [tokenizer(t)["input_ids"] for t in TEXTS]
    lengths = [16, 3, 12, 6, 20, 9]
    engine, sizes = _engine(model, tokenizer, max_batch=3)
    alone = [_decode_all(engine, [p], [n])[0] for p, n in zip(prompts, lengths, strict=True)]
    assert sizes == [1] * sum(lengths)  # alone: one forward per token
    sizes.clear()
    together = _decode_all(engine, prompts, lengths, stagger_s=0.005)
    for a, b, n in zip(alone, together, lengths, strict=True):
        assert len(b) == n  # no end-of-sequence token comes this early from the tiny model
        _same(a, b)
    assert max(sizes) == 3 and sum(sizes) == sum(lengths) and len(sizes) < 0.75 * sum(lengths)


def test_rows_with_different_adapters_share_a_batch(tiny):
    """peft's mixed-adapter batch: a row's `adapter` reaches the forward as adapter_names; rows of the base model
    ("__base__"), of the adapter, and without a choice (the model as loaded: the adapter) decode together as each
    does alone."""
    from peft import LoraConfig, get_peft_model

    model, tokenizer = tiny
    torch.manual_seed(0)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    adapted = get_peft_model(model, config, adapter_name="doc").eval()
    try:
        engine, sizes = _engine(adapted, tokenizer, max_batch=4)
        prompts = [tokenizer(t)["input_ids"] for t in [*TEXTS[:2], TEXTS[0], TEXTS[3]]]
        adapters = ["doc", "__base__", None, "__base__"]
        alone = [_decode_all(engine, [p], [8], [a])[0] for p, a in zip(prompts, adapters, strict=True)]
        tokens = [[s.token for s in steps] for steps in alone]
        assert tokens[0] == tokens[2]  # the same prompt, with the adapter named and as loaded
        assert tokens[0] != [s.token for s in _decode_all(engine, prompts[:1], [8], ["__base__"])[0]]
        sizes.clear()
        for a, b in zip(alone, _decode_all(engine, prompts, [8] * 4, adapters), strict=True):
            _same(a, b)
        assert max(sizes) > 1
    finally:
        adapted.unload()  # the module-scoped base model without LoRA layers again


@pytest.fixture(scope="module")
def served(tiny):
    """The real app on 127.0.0.1, served by uvicorn in a thread."""
    import uvicorn
    from omegaconf import OmegaConf

    from medexp.serving.adapters import Served
    from medexp.serving.app import create_app
    from medexp.serving.assistant import Assistant

    limits = OmegaConf.create(
        {"max_tokens": 64, "default_max_tokens": 16, "max_message_chars": 4000, "max_body_bytes": 65536,
         "max_concurrent": 8, "max_batch": 8, "max_queue": 8, "queue_timeout_s": 30, "max_n": 4}
    )  # fmt: skip
    assistant = Assistant(tiny[0], tiny[1], "You answer medical questions.", "tiny")
    app = create_app(Served({"tiny": assistant}, base="tiny", merged=False), limits)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=_free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{server.config.port}"
    server.should_exit = True
    thread.join(timeout=30)


def _complete(url: str, prompt: str, **more) -> dict:
    status, reply = _post(url, "/v1/completions", {"prompt": prompt, "temperature": 0} | more)
    assert status == 200, reply
    return reply["choices"][0]


def _batches(url: str, run) -> tuple[float, float]:
    """(forward passes, sequences decoded in them) while `run()` runs, from GET /metrics."""
    before = _scrape(url)
    run()
    after = _scrape(url)
    return tuple(
        after[(k, ())] - before[(k, ())] for k in ("medexp_batch_size_count", "medexp_batch_size_sum")
    )


def test_stop_and_max_tokens_hold_inside_a_shared_batch(served):
    """Three requests decoded together: one ends at its stop sequence, one at its max_tokens, one runs on; each
    answer is what it is alone, cut where it asked."""
    url = served
    full = [_complete(url, t, max_tokens=24)["text"] for t in TEXTS[:3]]
    stop = full[0][len(full[0]) // 2 :][:3]  # three characters from the middle of the first answer
    asks = [{"stop": [stop], "max_tokens": 24}, {"max_tokens": 4}, {"max_tokens": 24}]
    replies: list[dict] = []

    def run() -> None:
        with ThreadPoolExecutor(3) as pool:
            replies.extend(pool.map(lambda i: _complete(url, TEXTS[i], **asks[i]), range(3)))

    forwards, sequences = _batches(url, run)
    assert replies[0]["text"] == full[0][: full[0].index(stop)] and replies[0]["finish_reason"] == "stop"
    assert full[1].startswith(replies[1]["text"]) and replies[1]["finish_reason"] == "length"
    assert replies[2] == _complete(url, TEXTS[2], max_tokens=24)
    assert sequences > forwards  # forwards were shared


def _stream(url: str, prompt: str, arrivals: list) -> str:
    body = {"prompt": prompt, "temperature": 0, "max_tokens": 20, "stream": True}
    request = urllib.request.Request(
        f"{url}/v1/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    text = []
    with urllib.request.urlopen(request, timeout=60) as r:
        for line in r:
            if line.startswith(b"data: {"):
                text.append(json.loads(line[6:])["choices"][0]["text"])
                arrivals.append((prompt, time.monotonic()))
    return "".join(text)


def test_two_streams_are_served_at_once(served):
    """Two streamed answers at once: each equals its answer alone, and their chunks interleave."""
    url = served
    alone = [_complete(url, t, max_tokens=20)["text"] for t in TEXTS[:2]]
    arrivals: list = []

    def run() -> None:
        with ThreadPoolExecutor(2) as pool:
            arrivals.append(list(pool.map(lambda t: _stream(url, t, arrivals), TEXTS[:2])))

    forwards, sequences = _batches(url, run)
    assert arrivals.pop() == alone
    spans = [[t for p, t in arrivals if p == text] for text in TEXTS[:2]]
    assert max(s[0] for s in spans) < min(s[-1] for s in spans)  # each began before the other ended
    assert sequences > forwards
