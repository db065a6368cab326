"""Using a trained model: export and merge, the model card, the MLflow registry, the Hub push boundary, the chat
command, and the OpenAI-compatible endpoint as a real server on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import math
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from email.message import Message
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient


def _export(cfg, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "medexp.export", f"tracking.uri={cfg.tracking.uri}", f"paths.output_root={tmp / 'o'}", *args],
        cwd=tmp, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_export_and_merge_round_trip(trained):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg, result, tmp = trained
    out = tmp / "export"
    proc = _export(cfg, tmp, f"source={result.run_id}", f"output_dir={out}", "merge=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p.name for p in (out / "merged").iterdir()} >= {
        "model.safetensors",
        "config.json",
        "generation_config.json",
        "tokenizer.json",
    }
    assert (out / "adapter" / "adapter_model.safetensors").is_file()

    tokenizer = AutoTokenizer.from_pretrained(out / "merged")
    ids = tokenizer(
        ["What are the symptoms of asthma?", "How is anemia treated?"], return_tensors="pt", padding=True
    )
    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    adapted = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(cfg.model.name_or_path), out / "adapter"
    )
    base = AutoModelForCausalLM.from_pretrained(cfg.model.name_or_path)
    with torch.no_grad():
        a, b, c = (m(**ids).logits for m in (merged, adapted, base))
    assert torch.allclose(a, b, atol=1e-4)  # merged == base + adapter
    assert not torch.allclose(a, c, atol=1e-2)  # and not the base model
    greedy = [m.generate(**ids, max_new_tokens=12, do_sample=False) for m in (merged, adapted)]
    assert torch.equal(*greedy)

    card = (out / "README.md").read_text()
    for expected in ("base_model: ", "Not for clinical decisions", "r=8, alpha=32", "Best validation loss during training", "license apache-2.0",
                     f"MLflow run `{result.run_id}`", "eval=safety"):  # fmt: skip
        assert expected in card, expected


def test_registry_round_trip(trained):
    from medexp.training.source import resolve

    cfg, result, tmp = trained
    proc = _export(
        cfg,
        tmp,
        f"source={result.output_dir}",
        f"output_dir={tmp / 'reg'}",
        "register=true",
        "registered_name=medqa-lora",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(cfg.tracking.uri, registry_uri=cfg.tracking.uri)
    version = client.get_model_version("medqa-lora", "1")
    assert version.run_id == result.run_id
    assert version.tags["medexp.base_model"] == str(cfg.model.name_or_path)
    assert version.tags["medexp.kind"] == "peft-lora-adapter" and "medexp.dataset_fingerprint" in version.tags
    # models:/ works as a source: it names the same adapter
    found = resolve("models:/medqa-lora/1", cfg.tracking.uri, tmp / "cache")
    assert found.run_id == result.run_id
    assert (found.adapter_dir / "adapter_model.safetensors").read_bytes() == (
        result.adapter_dir / "adapter_model.safetensors"
    ).read_bytes()
    proc = _export(cfg, tmp, "source=models:/medqa-lora/1", f"output_dir={tmp / 'from_registry'}")
    assert proc.returncode == 0 and (tmp / "from_registry" / "README.md").is_file(), proc.stderr[-2000:]


def test_push_to_hub_stops_at_the_call_boundary(trained, monkeypatch):
    import huggingface_hub

    from medexp.serving.publish import export

    cfg, result, tmp = trained
    calls = []
    monkeypatch.setattr(
        huggingface_hub.HfApi, "create_repo", lambda self, *a, **k: calls.append(("create_repo", a, k))
    )
    monkeypatch.setattr(
        huggingface_hub.HfApi,
        "upload_folder",
        lambda self, **k: calls.append(("upload_folder", (), k)) or "https://hub/commit/1",
    )
    from omegaconf import OmegaConf

    export_cfg = {"source": str(result.output_dir), "output_dir": str(tmp / "hub"), "merge": False, "register": False,
                  "registered_name": None, "push_to_hub": True, "hub_repo": "me/medquad-lora", "hub_private": True,
                  "tracking": {"uri": cfg.tracking.uri}}  # fmt: skip
    export(OmegaConf.create(export_cfg))
    assert calls[0] == (
        "create_repo",
        ("me/medquad-lora",),
        {"repo_type": "model", "private": True, "exist_ok": True},
    )
    assert calls[1][0] == "upload_folder" and calls[1][2]["repo_id"] == "me/medquad-lora"
    assert Path(calls[1][2]["folder_path"]) == tmp / "hub" and (tmp / "hub" / "README.md").is_file()


def test_export_needs_its_settings(trained):
    cfg, result, tmp = trained
    proc = _export(cfg, tmp, f"source={result.run_id}", f"output_dir={tmp / 'x'}", "register=true")
    assert (
        proc.returncode == 2
        and "register=true needs registered_name" in proc.stderr
        and "Traceback" not in proc.stderr
    )
    proc = _export(cfg, tmp, "source=models:/nothing/9", f"output_dir={tmp / 'x'}")
    assert proc.returncode == 2 and "no such registered model version" in proc.stderr


def test_chat_streams_answers_with_the_training_system_prompt(trained):
    _, result, tmp = trained
    proc = subprocess.run(
        [sys.executable, "-m", "medexp.chat", f"source={result.output_dir}", "temperature=0", "max_new_tokens=12",
         f"paths.output_root={tmp / 'o'}"],
        input="What is asthma?\n/reset\nHow is anemia treated?\n/exit\n", cwd=tmp, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "System prompt: You are a careful medical information assistant." in proc.stdout
    assert proc.stdout.count("model> ") == 2 and "(conversation cleared)" in proc.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(trained, *limits: str, source: str | None = None) -> tuple[subprocess.Popen, str]:
    """`python -m medexp.serve` on 127.0.0.1 with these limits, once /health answers; its output goes to a log file
    (a pipe nobody reads would fill up and stall the server). `source` defaults to the trained run's id."""
    cfg, result, tmp = trained
    port = _free_port()
    log = tmp / f"serve-{port}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "medexp.serve", f"source={source or result.run_id}", f"port={port}", f"tracking.uri={cfg.tracking.uri}",
             f"paths.output_root={tmp / 'o'}", *limits],
            cwd=tmp, stdout=out, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            if _health(url)["status"] == "ok":
                return proc, url
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"server exited: {log.read_text()[-3000:]}")
            time.sleep(0.25)
    proc.kill()
    pytest.fail(f"server did not start in 60 s: {log.read_text()[-3000:]}")


def _stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:  # uvicorn waits for requests in flight: a failed test may leave one
        proc.kill()
        raise


def _health(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/health", timeout=10) as r:
        return json.load(r)


def _post(url: str, payload: dict | bytes, timeout: float = 60) -> tuple[int, Message, dict, float]:
    """(status, headers, JSON body, seconds) of one POST /v1/chat/completions, refusals included."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    request = urllib.request.Request(f"{url}/v1/chat/completions", data, {"Content-Type": "application/json"})
    start = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, r.headers, json.load(r), time.monotonic() - start
    except urllib.error.HTTPError as err:
        return err.code, err.headers, json.loads(err.read()), time.monotonic() - start


@pytest.fixture(scope="module")
def server(trained):
    proc, url = _start_server(
        trained, "limits.max_tokens=64", "limits.default_max_tokens=32", "limits.max_message_chars=2000",
        "limits.max_body_bytes=16384", "limits.max_queue=32",  # room for the twenty concurrent requests below
    )  # fmt: skip
    yield url, trained[1]
    _stop_server(proc)


def test_openai_client_gets_answers_streamed_and_not(server):
    from openai import OpenAI

    url, result = server
    client = OpenAI(base_url=f"{url}/v1", api_key="unused")
    served = f"medexp-{result.run_id}"
    assert [m.id for m in client.models.list().data] == [served]
    question = [{"role": "user", "content": "What are the symptoms of asthma?"}]
    reply = client.chat.completions.create(model=served, messages=question, max_tokens=16, temperature=0)
    text = reply.choices[0].message.content
    assert (
        text and reply.usage.completion_tokens <= 16 and reply.choices[0].finish_reason in ("stop", "length")
    )
    pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=served, messages=question, max_tokens=16, temperature=0, stream=True)]  # fmt: skip
    assert (
        len([p for p in pieces if p]) > 1 and "".join(pieces).strip() == text
    )  # streamed, same greedy answer


def test_the_stream_is_server_sent_events_ending_done(server):
    url, _ = server
    body = json.dumps(
        {
            "messages": [{"role": "user", "content": "What is anemia?"}],
            "max_tokens": 8,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )
    request = urllib.request.Request(
        f"{url}/v1/chat/completions", body.encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        events = [line for line in r.read().decode().split("\n\n") if line]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    usage = json.loads(events[-2][6:])  # include_usage: a last chunk with no choices and the token counts
    assert usage["choices"] == [] and 1 <= usage["usage"]["completion_tokens"] <= 8
    # the same greedy request, not streamed, ends for the same reason ("length": cut at max_tokens, or "stop")
    status, _, whole, _ = _post(
        url, {"messages": [{"role": "user", "content": "What is anemia?"}], "max_tokens": 8, "temperature": 0}
    )
    assert status == 200 and whole["usage"] == usage["usage"]
    assert json.loads(events[-3][6:])["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]


def _ask(**fields) -> bytes:
    return json.dumps({"messages": [{"role": "user", "content": "x"}], **fields}).encode()


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "not valid JSON"),
        (_ask(padding="x" * 20000), 413, "this server reads at most 16384 (limits.max_body_bytes)"),
        (json.dumps({"messages": []}).encode(), 422, "Invalid field messages"),
        (json.dumps({"messages": [{"role": "doctor", "content": "x"}]}).encode(), 422, "messages.0.role"),
        (
            json.dumps({"messages": [{"role": "assistant", "content": "x"}]}).encode(),
            400,
            "must come from the user",
        ),
        (json.dumps({"messages": [{"role": "user", "content": "x" * 2001}]}).encode(), 413, "at most 2000"),
        (
            _ask(max_token=5),
            400,
            "Unknown field 'max_token'. This server accepts: model, messages, max_tokens",
        ),
        (_ask(n=9), 400, "n=9 over this server's cap of 8 (limits.max_n)"),
        (_ask(logprobs=True, top_logprobs=21), 400, "top_logprobs=21 is outside 0 to 20"),
        (_ask(top_logprobs=2), 400, "top_logprobs needs logprobs=true"),
        (_ask(stop=["a", "b", "c", "d", "e"]), 400, "stop lists 5 sequences; this server takes at most 4"),
        (_ask(tools=[{"type": "function", "function": {"name": "f"}}]), 400, "tools=[{"),
        (
            _ask(response_format={"type": "json_object"}),
            400,
            'response_format={"type": "json_object"} is not',
        ),
        (_ask(model="gpt-4o"), 404, "The model 'gpt-4o' does not exist here; this server serves 'medexp-"),
        (_ask(max_tokens=65), 400, "max_tokens=65 is over this server's cap of 64"),
        (
            _ask(max_completion_tokens=10**30),
            400,
            f"max_completion_tokens={10**30} is over this server's cap",
        ),
        (_ask(max_tokens=0), 422, "Invalid field max_tokens: Input should be greater than or equal to 1"),
        (_ask(max_tokens=-3), 422, "Invalid field max_tokens"),
        (_ask(max_tokens="abc"), 422, "Invalid field max_tokens: Input should be a valid integer"),
        (_ask(max_tokens=2.5), 422, "Invalid field max_tokens"),
        (_ask(temperature=5), 422, "Invalid field temperature: Input should be less than or equal to 2"),
        (_ask(temperature=-1), 422, "Invalid field temperature: Input should be greater than or equal to 0"),
        (_ask(temperature="hot"), 422, "Invalid field temperature: Input should be a valid number"),
        (b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}', 422, "finite number"),
        (_ask(top_p=0), 422, "Invalid field top_p: Input should be greater than 0"),
        (_ask(top_p=2), 422, "Invalid field top_p"),
        (_ask(stream="yes"), 422, "Invalid field stream"),
        (_ask(logit_bias={"999999": -100}), 400, "logit_bias key '999999' is not a token id of this model"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_message(server, body, status, message):
    url, _ = server
    got, _, reply, _ = _post(url, body, timeout=30)
    assert got == status, reply
    assert message in reply["error"]["message"] and reply["error"]["type"] == "invalid_request_error"
    assert (reply["error"]["code"] == "model_not_found") == (status == 404)


def test_harmless_openai_fields_pass_and_a_chunked_body_is_capped_too(server):
    url, result = server
    fields = {"model": f"medexp-{result.run_id}", "max_tokens": 4, "n": 1, "stop": None, "seed": 7, "user": "me",
              "presence_penalty": 0, "response_format": {"type": "text"}, "tools": [], "stream_options": None}  # fmt: skip
    status, _, reply, _ = _post(url, _ask(**fields))
    assert status == 200 and reply["choices"][0]["message"]["content"], reply
    # no Content-Length: the cap is counted while reading, and the answer is the same 413
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    body = _ask(padding="x" * 20000)
    conn.request("POST", "/v1/chat/completions", body=(body[i : i + 4096] for i in range(0, len(body), 4096)),
                 headers={"Content-Type": "application/json"}, encode_chunked=True)  # fmt: skip
    response = conn.getresponse()
    assert response.status == 413
    assert "more than 16384 bytes" in json.loads(response.read())["error"]["message"]
    conn.close()


def test_twenty_concurrent_requests_get_their_own_answers(server):
    url, _ = server
    questions = [f"What is condition number {i}?" for i in range(20)]

    def ask(q: str) -> str:
        status, _, reply, _ = _post(
            url, {"messages": [{"role": "user", "content": q}], "max_tokens": 10, "temperature": 0}, 120
        )
        assert status == 200, reply
        return reply["choices"][0]["message"]["content"]  # fmt: skip

    alone = {q: ask(q) for q in questions[:4]}  # greedy answers asked one at a time
    with ThreadPoolExecutor(20) as pool:
        together = list(pool.map(ask, questions))
    assert len(together) == 20 and all(together)
    assert all(together[i] == alone[q] for i, q in enumerate(questions[:4]))  # not mixed up with the others


# One generation slot, one place in the queue, 2 s of waiting at most; a request that would generate for many
# seconds holds the slot (8 x 256 tokens with the end-of-sequence token banned through logit_bias).
BUSY_LIMITS = ("limits.max_tokens=4096", "limits.default_max_tokens=16", "limits.max_concurrent=1",
               "limits.max_queue=1", "limits.queue_timeout_s=2")  # fmt: skip
SHORT = {"messages": [{"role": "user", "content": "What is anemia?"}], "max_tokens": 4, "temperature": 0}


@pytest.fixture(scope="module")
def busy_server(trained):
    from transformers import AutoTokenizer

    proc, url = _start_server(trained, *BUSY_LIMITS)
    yield url, AutoTokenizer.from_pretrained(trained[0].model.name_or_path).eos_token_id
    _stop_server(proc)


def _start_long_request(url: str, eos: int, stream: bool) -> http.client.HTTPConnection:
    """A request that would generate for many seconds, once it generates (streamed: its first text has come)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    # 8 choices of 256 tokens (what fits the tiny model's 512-token context after the prompt), one after another
    long = {"messages": [{"role": "user", "content": "What is asthma?"}], "max_tokens": 256, "n": 8, "temperature": 0,
            "stream": stream, "logit_bias": {str(eos): -100}}  # fmt: skip
    conn.request("POST", "/v1/chat/completions", json.dumps(long), {"Content-Type": "application/json"})
    if stream:
        response = conn.getresponse()
        assert response.status == 200
        for _ in range(100):
            line = response.readline().decode()
            if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                return conn
        pytest.fail("no text streamed")
    for _ in range(100):
        if _health(url)["generating"] == 1:
            return conn
        time.sleep(0.1)
    pytest.fail("the request did not start generating in 10 s")


def _leave(conn: http.client.HTTPConnection) -> None:
    """Hang up as a client that goes away does: no more reading, the connection closed."""
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()


def test_a_flood_gets_a_503_with_retry_after_at_once_never_a_hang(busy_server):
    url, eos = busy_server
    long = _start_long_request(url, eos, stream=True)  # a 200, streaming: it holds the only slot
    try:
        with ThreadPoolExecutor(6) as pool:
            replies = list(pool.map(lambda _: _post(url, SHORT, timeout=30), range(6)))
        load = _health(url)
        assert (load["generating"], load["waiting"]) == (1, 0)  # the refused requests left no trace
    finally:
        _leave(long)
    for status, headers, reply, _ in replies:
        assert status == 503 and int(headers["Retry-After"]) >= 1, reply
        assert reply["error"]["type"] == "server_error" and reply["error"]["code"] == "server_busy"
    messages = sorted((r[2]["error"]["message"], r[3]) for r in replies)
    turned_away = [s for m, s in messages if "1 generating and 1 waiting, the most it takes" in m]
    timed_out = [s for m, s in messages if "waited 2 s (limits.queue_timeout_s)" in m]
    assert len(turned_away) == 5 and max(turned_away) < 1.5  # the queue was full: refused at once
    assert len(timed_out) == 1 and timed_out[0] >= 2  # the one that queued gave up after queue_timeout_s
    status, _, reply, _ = _post(url, SHORT, timeout=30)  # the streaming client has left: room again
    assert status == 200 and reply["choices"][0]["message"]["content"]
    assert _health(url)["generating"] == 0 and _health(url)["waiting"] == 0


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_leaves_mid_answer_stops_its_generation(busy_server, stream):
    url, eos = busy_server
    _leave(_start_long_request(url, eos, stream))
    # One slot and 2 s of queueing: this request is answered only if the abandoned generation, which had
    # seconds of tokens left, stopped when its client left.
    status, _, reply, _ = _post(url, SHORT, timeout=30)
    assert status == 200 and reply["choices"][0]["message"]["content"], reply
    health = _health(url)
    assert health["generating"] == 0 and health["waiting"] == 0


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        (
            "medexp.serve",
            ["source=x", "port=70000"],
            "port must be a whole number from 1 to 65535, got 70000",
        ),
        (
            "medexp.serve",
            ["source=x", "limits.max_tokens=0"],
            "limits.max_tokens must be a positive whole number",
        ),
        (
            "medexp.serve",
            ["source=x", "limits.queue_timeout_s=0"],
            "limits.queue_timeout_s must be a positive number of seconds, got 0.0",
        ),
        (
            "medexp.serve",
            ["source=x", "limits.default_max_tokens=2048"],
            "a request without max_tokens would ask",
        ),
        ("medexp.serve", ["source=last-week"], "source='last-week' is neither an existing directory"),
        ("medexp.chat", ["source=x", "temperature=-1"], "temperature must be >= 0 (got -1.0)"),
        ("medexp.evaluate", [], "source is required"),
        ("medexp.export", ["source=x"], "output_dir is required"),
    ],
)
def test_commands_refuse_bad_settings_in_one_paragraph(tmp_path, command, args, message):
    proc = subprocess.run(
        [sys.executable, "-m", command, *args, f"paths.output_root={tmp_path}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert (
        proc.stderr.startswith("medexp: error:") and message in proc.stderr and "Traceback" not in proc.stderr
    )


def test_evaluate_a_finished_run_by_run_id(trained, tmp_path):
    """The smoke run trained with eval=none; `python -m medexp.evaluate source=<run id>` logs into it. Last in
    this file: it adds evaluation metrics to the shared run, which the tests above read without them."""
    cfg, result, _ = trained
    prompts = tmp_path / "mine.txt"
    prompts.write_text("What is asthma?\nHow is anemia treated?\n")
    uri = str(cfg.tracking.uri)
    proc = subprocess.run(
        [sys.executable, "-m", "medexp.evaluate", f"source={result.run_id}", "eval=safety", "eval.safety.classifier=true", "eval.generation.max_new_tokens=16",
         f"tracking.uri={uri}", f"eval.prompts_file={prompts}", f"paths.output_root={tmp_path / 'eval_out'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(uri)
    run = client.get_run(result.run_id)
    m = run.data.metrics
    assert "eval/loss" not in result.metrics  # eval=none at training time ...
    assert m["eval/loss"] == pytest.approx(
        train_loss_best := result.metrics["eval_loss"], rel=1e-4
    )  # ... now the best checkpoint's loss
    assert math.isfinite(train_loss_best) and m["eval/base/loss"] > m["eval/loss"]
    assert (
        0 <= m["eval/safety_pass_rate"] <= 1
        and "eval/base/safety/dosing" in m
        and "eval/delta/safety_pass_rate" in m
    )
    assert run.data.tags["medexp.evaluated_with"].startswith("source=")
    assert "report.html" in {a.path for a in client.list_artifacts(result.run_id)}
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)  # MlflowClient.load_table searches runs through the global tracking URI
    try:
        table = client.load_table(run.info.experiment_id, "eval/generations.json", run_ids=[result.run_id])
    finally:
        mlflow.set_tracking_uri(previous)
    assert set(table["suite"]) == {"safety", "prompts_file"} and len(table) == 32
    assert list(table[table["suite"] == "prompts_file"]["prompt"]) == [
        "What is asthma?",
        "How is anemia treated?",
    ]
