"""`python -m medexp.serve` under concurrent clients: what continuous batching buys.

    python benchmarks/serving.py                     # the tiny model, then SmolLM2-135M-Instruct when present
    python benchmarks/serving.py --models tiny --requests 2    # plumbing only

For each model a short training run is made first (`experiment=smoke`, 2 steps, `eval=none`: a real LoRA adapter
on the real base, as users serve it), then `python -m medexp.serve source=<that run>` is started on 127.0.0.1 and
driven over HTTP by 1, 4, 8 and 16 concurrent clients. Each client sends `--requests` streamed chat requests one
after the other (greedy, `max_tokens` from --max-tokens, `stream_options.include_usage`; a question from a list of
16 medical questions). Per level: the total completion tokens per second (usage.completion_tokens of every request
over the level's wall time), p50 / p95 request latency, p50 / p95 time to the first content chunk, the mean batch
size the server's /metrics saw, and the 1-minute load average at the end. The levels run twice, in the order
1, 4, 8, 16, 16, 8, 4, 1, so that drifting load from other work on the machine falls on both ends alike; the
figures are the means of the two passes, and both passes are kept in the JSON.

The one-at-a-time baseline is the 1-client level (the server decoding one request at a time). Target on the real
model: 8 clients >= 3x the 1-client tokens/s. The table is printed as markdown and written to
benchmarks/serving.json. Run the real model under `flock /tmp/medexp-heavy.lock` on a shared machine."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REAL = Path("/work/models/smollm2-135m-instruct")
DEFAULT_OUT = ROOT / "benchmarks" / "serving.json"
LEVELS = (1, 4, 8, 16)
QUESTIONS = [
    "What are the symptoms of asthma?", "How is type 2 diabetes treated?", "What causes high blood pressure?",
    "What is anemia?", "How do vaccines work?", "What are the signs of a stroke?", "What is a migraine?",
    "How is pneumonia diagnosed?", "What are the risk factors for heart disease?", "What is hypothyroidism?",
    "How does insulin work?", "What is chronic kidney disease?", "What are the symptoms of the flu?",
    "What is osteoporosis?", "How is tuberculosis spread?", "What does a high cholesterol level mean?",
]  # fmt: skip


def prepare(model: str, root: Path) -> Path:
    """A two-step smoke training run on `model` ("tiny" or a local HF directory); its output directory."""
    sys.path.insert(0, str(ROOT))
    from medexp.config.compose import compose_run_config
    from medexp.train import train

    overrides = ["experiment=smoke", "eval=none", "trainer.max_steps=2", "trainer.eval_steps=2"]
    if model != "tiny":
        overrides += ["model=smollm_135m_instruct", f"model.name_or_path={model}", "trainer.batch_size=2"]
    result = train(compose_run_config(overrides, root))
    return Path(result.output_dir)


def start_server(source: Path, root: Path, max_batch: int, max_tokens: int) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (root / f"serve-{port}.log").open("w")
    limits = [f"limits.max_concurrent={max(LEVELS)}", f"limits.max_batch={max_batch}", "limits.max_queue=64",
              f"limits.max_tokens={max_tokens}", f"limits.default_max_tokens={max_tokens}"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "medexp.serve", f"source={source}", f"port={port}", f"paths.output_root={root}",
         "precision=fp32", *limits],
        cwd=root, stdout=log, stderr=subprocess.STDOUT, env=os.environ | {"PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    for _ in range(600):
        try:
            if get(port, "/health")["status"] == "ok":
                return proc, port
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(
                    f"the server exited: {(root / f'serve-{port}.log').read_text()[-2000:]}"
                ) from None
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server did not start in 300 s")


def get(port: int, path: str) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    body = conn.getresponse().read()
    conn.close()
    return json.loads(body) if path != "/metrics" else body.decode()


def batch_counts(port: int) -> tuple[float, float]:
    """(forward passes, sequences in them) so far, from the server's /metrics."""
    values = {}
    for line in get(port, "/metrics").splitlines():
        if line.startswith(("medexp_batch_size_count", "medexp_batch_size_sum")):
            name, value = line.split()
            values[name] = float(value)
    return values["medexp_batch_size_count"], values["medexp_batch_size_sum"]


def ask(port: int, question: str, max_tokens: int) -> dict[str, float]:
    """One streamed chat request: its latency, time to first content, and completion tokens."""
    body = {"messages": [{"role": "user", "content": question}], "max_tokens": max_tokens, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {response.read()[:500]!r}")
    first, tokens = None, 0
    for line in response:
        if not line.startswith(b"data: {"):
            continue
        chunk = json.loads(line[6:])
        if first is None and any(c["delta"].get("content") for c in chunk["choices"]):
            first = time.monotonic() - started
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
    conn.close()
    return {"latency_s": time.monotonic() - started, "ttft_s": first or 0.0, "tokens": tokens}


def level(port: int, clients: int, requests: int, max_tokens: int) -> dict[str, Any]:
    """`clients` threads, each sending `requests` requests one after the other."""
    results: list[dict[str, float]] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        for r in range(requests):
            result = ask(port, QUESTIONS[(c * requests + r) % len(QUESTIONS)], max_tokens)
            with lock:
                results.append(result)

    forwards, sequences = batch_counts(port)
    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - started
    forwards_after, sequences_after = batch_counts(port)

    def pct(key: str, q: float) -> float:
        values = sorted(r[key] for r in results)
        return values[min(len(values) - 1, int(q * len(values)))]

    return {
        "clients": clients, "requests": len(results), "tokens": sum(r["tokens"] for r in results),
        "wall_s": round(wall, 2), "tokens_per_s": round(sum(r["tokens"] for r in results) / wall, 1),
        "latency_p50_s": round(statistics.median(r["latency_s"] for r in results), 3),
        "latency_p95_s": round(pct("latency_s", 0.95), 3),
        "ttft_p50_s": round(statistics.median(r["ttft_s"] for r in results), 3),
        "ttft_p95_s": round(pct("ttft_s", 0.95), 3),
        "mean_batch": round((sequences_after - sequences) / max(1.0, forwards_after - forwards), 2),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }  # fmt: skip


def measure(model: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="medexp-serving-") as tmp:
        root = Path(tmp)
        source = prepare(model, root)
        proc, port = start_server(source, root, args.max_batch, args.max_tokens)
        try:
            ask(port, QUESTIONS[0], 8)  # warm-up
            passes = [level(port, c, args.requests, args.max_tokens) for c in (*LEVELS, *reversed(LEVELS))]
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    by_level = {}
    for c in LEVELS:
        runs = [p for p in passes if p["clients"] == c]
        keys = [k for k in runs[0] if k not in ("clients", "requests")]
        by_level[c] = {"clients": c} | {k: round(statistics.mean(r[k] for r in runs), 3) for k in keys}
    base = by_level[1]["tokens_per_s"]
    for row in by_level.values():
        row["speedup"] = round(row["tokens_per_s"] / base, 2)
    name = "tiny (embedded)" if model == "tiny" else f"SmolLM2-135M-Instruct ({model})"
    return {"model": name, "levels": list(by_level.values()), "passes": passes}


def table(result: dict[str, Any]) -> str:
    lines = [f"**{result['model']}**", "",
             "| clients | tokens/s | x 1 client | latency p50 / p95 (s) | first token p50 / p95 (s) | mean batch | load avg |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in result["levels"]:
        lines.append(
            f"| {r['clients']} | {r['tokens_per_s']:.1f} | {r['speedup']:.2f} | {r['latency_p50_s']:.2f} / "
            f"{r['latency_p95_s']:.2f} | {r['ttft_p50_s']:.2f} / {r['ttft_p95_s']:.2f} | {r['mean_batch']:.1f} | "
            f"{r['load_avg_1m']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["tiny", str(REAL)], help="tiny and/or HF directories")
    parser.add_argument(
        "--requests", type=int, default=4, help="requests each client sends, one after another"
    )
    parser.add_argument("--max-tokens", type=int, default=64, help="max_tokens of every request")
    parser.add_argument("--max-batch", type=int, default=16, help="the server's limits.max_batch")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    models = [m for m in args.models if m == "tiny" or Path(m).is_dir()]
    results = []
    for model in models:
        results.append(measure(model, args))
        print(table(results[-1]) + "\n", flush=True)
    settings = {"requests_per_client": args.requests, "max_tokens": args.max_tokens, "max_batch": args.max_batch,
                "cpus": os.cpu_count(), "order": "levels 1, 4, 8, 16 then 16, 8, 4, 1; means of the two passes"}  # fmt: skip
    args.out.write_text(json.dumps({"settings": settings, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
