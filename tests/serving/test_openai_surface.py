"""The OpenAI surface beyond plain chat, against a real `python -m medexp.serve` on 127.0.0.1: /v1/completions
(text and token-id prompts, logprobs, echo, max_tokens=0 scoring, stop, n, seed, streaming) and chat's stop, n,
seed and logprobs through the official openai client; lm-evaluation-harness's `local-completions` model scoring a
local PubMedQA task through the server, checked against the log-likelihoods medexp computes in-process; and
GET /metrics scraped after real requests."""

from __future__ import annotations

import json
import urllib.request

import pytest
import torch

from tests.helpers import TINY_MODEL
from tests.serving.test_use import _start_server, _stop_server

QUESTION = [{"role": "user", "content": "What are the symptoms of asthma?"}]


@pytest.fixture(scope="module")
def server(trained):
    proc, url = _start_server(
        trained, "limits.max_tokens=64", "limits.default_max_tokens=16", "limits.max_n=4"
    )
    yield url, f"medexp-{trained[1].run_id}"
    _stop_server(proc)


@pytest.fixture(scope="module")
def model(trained):
    """The served model (base + adapter) loaded in-process, the medexp way, to check the server's numbers."""
    from medexp.training.source import load_trained, resolve

    cfg, result, tmp = trained
    return load_trained(resolve(result.run_id, cfg.tracking.uri, tmp / "cache"), "fp32")


def _client(url: str):
    from openai import OpenAI

    return OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def _post(url: str, path: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{url}{path}", json.dumps(payload).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _token_logprobs(model, ids: list[int]) -> list[float]:
    """log p(token i | tokens before it) for i >= 1, computed here with a plain forward pass."""
    net, _ = model
    with torch.no_grad():
        logits = net(input_ids=torch.tensor([ids])).logits[0, :-1].float()
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:]).unsqueeze(1)).squeeze(1).tolist()


def test_completions_logprobs_and_echo_are_the_models_own(server, model):
    url, served = server
    tokenizer = model[1]
    prompt = "Asthma is a condition of the"
    reply = _client(url).completions.create(
        model=served, prompt=prompt, max_tokens=6, temperature=0, logprobs=3, echo=True
    )
    choice = reply.choices[0]
    lp = choice.logprobs
    prompt_ids = tokenizer(prompt)["input_ids"]
    n_prompt = len(prompt_ids)
    assert reply.object == "text_completion" and reply.usage.prompt_tokens == n_prompt
    assert (
        len(lp.tokens)
        == n_prompt + reply.usage.completion_tokens
        == len(lp.token_logprobs)
        == len(lp.top_logprobs)
    )
    assert choice.text.startswith(prompt) and "".join(lp.tokens[:n_prompt]) == prompt
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None  # nothing precedes the first token
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    # every listed log-probability is the model's own, prompt and answer alike
    ids = tokenizer(choice.text)["input_ids"]
    assert ids[:n_prompt] == prompt_ids
    assert lp.token_logprobs[1:] == pytest.approx(_token_logprobs(model, ids)[: len(lp.tokens) - 1], abs=1e-4)
    for i in range(
        n_prompt, len(lp.tokens)
    ):  # greedy: each answer token is the likeliest, and listed as such
        assert lp.token_logprobs[i] == pytest.approx(max(lp.top_logprobs[i].values()))
        assert (
            3 <= len(lp.top_logprobs[i]) <= 4
        )  # the 3 likeliest, and the chosen one where it is not among them
    # max_tokens=0 with echo scores the prompt alone, with the same numbers
    scored = _client(url).completions.create(model=served, prompt=prompt, max_tokens=0, echo=True, logprobs=0)
    assert scored.choices[0].text == prompt and scored.usage.completion_tokens == 0
    assert scored.choices[0].logprobs.token_logprobs == lp.token_logprobs[:n_prompt]
    # token ids as the prompt (as lm-evaluation-harness sends them) read the same as the text
    by_ids = _client(url).completions.create(model=served, prompt=prompt_ids, max_tokens=6, temperature=0)
    assert prompt + by_ids.choices[0].text == choice.text


def test_completions_stop_n_seed_and_streaming(server):
    url, served = server
    client = _client(url)
    prompts = ["Asthma is", "Anemia is"]
    greedy = client.completions.create(model=served, prompt=prompts, max_tokens=12, temperature=0)
    texts = [c.text for c in sorted(greedy.choices, key=lambda c: c.index)]
    assert len(texts) == 2 and all(texts)
    streamed = client.completions.create(
        model=served, prompt=prompts[0], max_tokens=12, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == texts[0]
    # a stop sequence cuts the answer before it, and the finish reason says so
    word = texts[0].split()[1]
    cut = client.completions.create(
        model=served, prompt=prompts[0], max_tokens=12, temperature=0, stop=[word, "zzz"]
    )
    assert cut.choices[0].text == texts[0][: texts[0].index(word)] and cut.choices[0].finish_reason == "stop"
    # n sampled choices per prompt, in OpenAI's order; a seed makes them repeatable, and they differ from each other
    ask = {"model": served, "prompt": prompts, "max_tokens": 12, "temperature": 1.0, "n": 2}
    first, again = (client.completions.create(**ask, seed=11) for _ in range(2))
    assert [c.index for c in first.choices] == [0, 1, 2, 3]
    assert [c.text for c in first.choices] == [c.text for c in again.choices]
    assert first.choices[0].text != first.choices[1].text
    other = client.completions.create(**ask, seed=12)
    assert [c.text for c in other.choices] != [c.text for c in first.choices]


def test_chat_stop_n_seed_and_logprobs(server):
    url, served = server
    client = _client(url)
    reply = client.chat.completions.create(
        model=served, messages=QUESTION, max_tokens=12, temperature=0, logprobs=True, top_logprobs=2
    )
    text, content = reply.choices[0].message.content, reply.choices[0].logprobs.content
    assert "".join(t.token for t in content).strip() == text
    assert all(
        len(t.top_logprobs) == 2 and t.logprob == pytest.approx(t.top_logprobs[0].logprob) for t in content
    )
    assert all(bytes(t.bytes).decode() == t.token for t in content)
    word = text.split()[1]
    cut = client.chat.completions.create(
        model=served, messages=QUESTION, max_tokens=12, temperature=0, stop=word
    )
    assert word not in cut.choices[0].message.content and cut.choices[0].finish_reason == "stop"
    ask = {"model": served, "messages": QUESTION, "max_tokens": 12, "temperature": 1.0, "n": 3}
    first, again = (client.chat.completions.create(**ask, seed=5) for _ in range(2))
    answers = [c.message.content for c in first.choices]
    assert (
        len(answers) == 3 and answers == [c.message.content for c in again.choices] and len(set(answers)) > 1
    )
    streamed = client.chat.completions.create(**ask, seed=5, stream=True)
    pieces: dict[int, str] = {}
    for chunk in streamed:
        for c in chunk.choices:
            pieces[c.index] = pieces.get(c.index, "") + (c.delta.content or "")
    assert [pieces[i].strip() for i in range(3)] == answers  # streamed, the same seeded choices


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/v1/completions", {"prompt": "x", "logprobs": 21}, "logprobs=21 is outside 0 to 20"),
        ("/v1/completions", {"prompt": "x", "logprobs": -1}, "logprobs=-1 is outside 0 to 20"),
        ("/v1/completions", {"prompt": "x", "n": 5}, "n=5 over this server's cap of 4 (limits.max_n)"),
        (
            "/v1/completions",
            {"prompt": ["x", "y", "z"], "n": 2},
            "n=2 for each of 3 prompts asks for 6 choices",
        ),
        ("/v1/completions", {"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop lists 5 sequences"),
        ("/v1/completions", {"prompt": "x", "stop": ""}, "stop holds an empty string"),
        ("/v1/completions", {"prompt": "x", "max_tokens": 0}, "max_tokens=0 generates nothing"),
        (
            "/v1/completions",
            {"prompt": "x", "max_tokens": 65},
            "max_tokens=65 is over this server's cap of 64",
        ),
        (
            "/v1/completions",
            {"prompt": "x " * 600, "max_tokens": 0, "echo": True},
            "over the model's context of 512",
        ),
        (
            "/v1/completions",
            {"prompt": "x " * 245, "max_tokens": 30},
            "The prompt is 490 tokens and max_tokens=30 asks for 520 in all",
        ),
        ("/v1/completions", {"prompt": [5, 70000]}, "token id 70000 is not one of this model's (0 to 1023)"),
        ("/v1/completions", {"prompt": []}, "The prompt is empty"),
        ("/v1/completions", {"prompt": "x", "suffix": "y"}, 'suffix="y" is not supported'),
        ("/v1/completions", {"prompt": "x", "model": "gpt-3.5-turbo-instruct"}, "does not exist here"),
        ("/v1/chat/completions", {"messages": QUESTION, "n": 5}, "n=5 over this server's cap of 4"),
        ("/v1/chat/completions", {"messages": QUESTION, "stop": [""]}, "stop holds an empty string"),
        (
            "/v1/chat/completions",
            {"messages": QUESTION, "response_format": {"type": "json_object"}},
            "response_format",
        ),
    ],
)
def test_bad_requests_get_one_clear_message(server, path, body, message):
    status, reply = _post(server[0], path, body)
    assert status in (400, 404) and message in reply["error"]["message"], reply


def _scrape(url: str) -> dict[tuple[str, tuple], float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def test_metrics_count_requests_tokens_batches_and_latency(server):
    url, _ = server
    before = _scrape(url)
    usages = []
    for i in range(3):
        status, reply = _post(
            url, "/v1/completions", {"prompt": f"Asthma {i} is", "max_tokens": 5, "temperature": 0}
        )
        assert status == 200
        usages.append(reply["usage"])
    status, reply = _post(
        url, "/v1/chat/completions", {"messages": QUESTION, "max_tokens": 4, "temperature": 0}
    )
    usages.append(reply["usage"])
    assert _post(url, "/v1/completions", {"prompt": "x", "n": 99})[0] == 400
    after = _scrape(url)

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert grew("medexp_requests_total", endpoint="/v1/completions", status="200") == 3
    assert grew("medexp_requests_total", endpoint="/v1/completions", status="400") == 1
    assert grew("medexp_requests_total", endpoint="/v1/chat/completions", status="200") == 1
    assert grew("medexp_prompt_tokens_total") == sum(u["prompt_tokens"] for u in usages)
    generated = sum(u["completion_tokens"] for u in usages)
    assert grew("medexp_generation_tokens_total") == generated
    # requests one after another, each decoded alone: one forward pass (of one sequence) per generated token
    assert grew("medexp_batch_size_count") == generated and grew("medexp_batch_size_sum") == generated
    assert grew("medexp_batch_size_bucket", le="1.0") == generated
    assert grew("medexp_time_to_first_token_seconds_count") == 4
    assert grew("medexp_request_latency_seconds_count", endpoint="/v1/completions") == 4
    assert 0 < grew("medexp_request_latency_seconds_sum", endpoint="/v1/completions") < 60
    assert after[("medexp_queue_depth", ())] == 0 and after[("medexp_requests_running", ())] == 0


def test_lm_eval_local_completions_scores_equal_medexps_own(server, model, tmp_path):
    """lm-evaluation-harness's `local-completions` model on a local PubMedQA task (3 questions x 3 answers), its
    log-likelihoods read from the server, equal those lm-eval's in-process model computes on the same model (how
    `python -m medexp.benchmark` scores)."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from tests.evaluation.test_benchmark import PUBMEDQA_ROWS, PUBMEDQA_TASK

    url, served = server
    rows = tmp_path / "pubmedqa.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in PUBMEDQA_ROWS))
    (tmp_path / "pubmedqa_local.yaml").write_text(
        f"include: {PUBMEDQA_TASK}\ntask: pubmedqa_local\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    train: {rows}\n"
    )
    manager = TaskManager(include_path=str(tmp_path))
    common = {"tasks": ["pubmedqa_local"], "limit": 3, "task_manager": manager, "log_samples": True}
    remote = simple_evaluate(
        model="local-completions",
        model_args={"model": served, "base_url": f"{url}/v1/completions", "tokenizer": str(TINY_MODEL),
                    "tokenizer_backend": "huggingface", "max_length": 512, "max_retries": 1},
        **common,
    )  # fmt: skip
    local = simple_evaluate(model=HFLM(pretrained=model[0], tokenizer=model[1], batch_size=1), **common)

    def scores(result: dict) -> dict[tuple, float]:
        return {
            (s["doc_id"], tuple(a)): float(r[0][0])
            for s in result["samples"]["pubmedqa_local"]
            for a, r in zip(s["arguments"], s["resps"], strict=True)
        }

    got, expected = scores(remote), scores(local)
    assert len(got) == 9 and got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-3), key
    assert remote["results"]["pubmedqa_local"]["acc,none"] == local["results"]["pubmedqa_local"]["acc,none"]
