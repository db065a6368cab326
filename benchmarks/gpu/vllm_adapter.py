"""GPU check that vLLM serves a medexp export as the docs say: train experiment=smoke (the tiny model), export it
(format=hf), start `vllm serve BASE --enable-lora --lora-modules NAME=PATH` (the command the export's model card
prints), ask the adapter a few questions greedily through vLLM's OpenAI API, and compare the answers with
medexp's own greedy answers (base + adapter in transformers, fp32). One command, under 4 minutes on an H100:

    python benchmarks/gpu/vllm_adapter.py

UNTESTED: written on a CPU-only machine without vllm; it has never run. It needs a CUDA GPU, `pip install vllm`
and the `openai` client (medexp's dev extra). vLLM runs in float32 with --enforce-eager (no CUDA graphs: a quicker
start for a 1M-parameter model). It writes only under a temporary directory, and exits non-zero when vLLM does
not start, refuses the adapter, or fewer than all answers agree (it prints each pair that differs).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.questions import QUESTIONS  # noqa: E402 (after ROOT joins sys.path)

MAX_TOKENS = 24
NAME = "medexp-smoke"


def train_and_export(tmp: Path):
    from omegaconf import OmegaConf

    from medexp.serving.publish import export
    from medexp.train import train
    from tests.helpers import compose_config

    cfg = compose_config(["experiment=smoke", "eval=none", "trainer.max_steps=40"], tmp)
    result = train(cfg)
    node = {"source": str(result.output_dir), "output_dir": str(tmp / "export"), "format": "hf", "merge": False,
            "register": False, "registered_name": None, "push_to_hub": False, "hub_repo": None, "hub_private": True,
            "tracking": {"uri": cfg.tracking.uri}}  # fmt: skip
    return cfg, result, export(OmegaConf.create(node))


def medexp_answers(cfg, result):
    """medexp's greedy answers (and the assistant, whose messages carry the run's system prompt)."""
    from omegaconf import OmegaConf

    from medexp.serving.assistant import Sampling, load_assistant

    chat_cfg = OmegaConf.create({"source": str(result.output_dir), "precision": "fp32", "model_name": NAME,
                                 "tracking": {"uri": cfg.tracking.uri}, "paths": {"output_dir": str(result.output_dir)}})  # fmt: skip
    assistant = load_assistant(chat_cfg)
    greedy = Sampling(max_new_tokens=MAX_TOKENS, temperature=0.0)
    return ["".join(assistant.stream([{"role": "user", "content": q}], greedy)) for q in QUESTIONS], assistant


def serve(base: str, adapter: Path, port: int, log: Path) -> subprocess.Popen:
    """`vllm serve` as the model card gives it (plus port, dtype, eager), once /health answers."""
    from medexp.serving import vllm_check

    adapter_config = json.loads((adapter / "adapter_config.json").read_text())

    command = vllm_check.serve_command(base, NAME, str(adapter), adapter_config).split()
    command += ["--port", str(port), "--dtype", "float32", "--enforce-eager", "--max-model-len", "512"]
    print(" ".join(command))
    proc = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"vllm serve exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except OSError:
            time.sleep(2)
    proc.kill()
    raise SystemExit(f"vllm serve did not start in 180 s:\n{log.read_text()[-3000:]}")


def main() -> None:
    import torch
    from openai import OpenAI

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check needs a GPU")
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        cfg, result, out = train_and_export(tmp)
        ours, assistant = medexp_answers(cfg, result)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = serve(str(cfg.model.name_or_path), out / "adapter", port, tmp / "vllm.log")
        try:
            client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
            theirs = []
            for q in QUESTIONS:
                messages = assistant.messages(
                    [{"role": "user", "content": q}]
                )  # the run's system prompt first
                reply = client.chat.completions.create(
                    model=NAME, messages=messages, temperature=0, max_tokens=MAX_TOKENS
                )
                theirs.append(reply.choices[0].message.content or "")
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    same = sum(a.strip() == b.strip() for a, b in zip(ours, theirs, strict=True))
    for q, a, b in zip(QUESTIONS, ours, theirs, strict=True):
        if a.strip() != b.strip():
            print(f"differs on {q!r}:\n  medexp: {a!r}\n  vLLM:   {b!r}")
    print(f"{same}/{len(QUESTIONS)} greedy answers identical; {time.time() - start:.0f} s in all")
    if same < len(QUESTIONS):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
