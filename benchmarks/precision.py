"""One LoRA forward + backward at SmolLM-135M's real depth, in fp32 and under bf16 autocast (and with bf16 weights).

    python benchmarks/precision.py            # 30 layers, 4 x 384 tokens, 3 timed repeats per mode
    python benchmarks/precision.py --quick    # plumbing only: 2 layers, 2 x 64 tokens, 1 repeat

The model is SmolLM-135M's shape (the embedded tiny model's config scaled up: hidden 576, 30 layers, 9 heads,
3 kv heads, intermediate 1536, vocab 49152, tied embeddings), randomly initialised with a fixed seed, with medexp's
default adapters (conf/lora/default.yaml: r 16, alpha 32, every linear projection; dropout 0 so the modes see the
same function). The modes, as `trainer.precision` names them:

  fp32           fp32 weights, fp32 matmuls
  bf16_autocast  fp32 weights (frozen base and LoRA master weights), matmuls under torch.autocast(bfloat16): what
                 `trainer.precision=auto` picks on a CPU with AVX512-BF16 or AMX (HF Trainer: bf16=True, use_cpu)
  bf16           the base's weights stored in bf16 (LoRA weights fp32, peft's autocast_adapter_dtype), autocast on

Timed: loss + backward of one batch of random token ids (labels = inputs), the modes interleaved round-robin so a
change in the shared machine's load falls on all of them alike; the median and the fastest repeat (the least
disturbed by other processes) are reported with the load average before and after. It also times greedy decoding
(batch 1, 64-token prompt, 16 new tokens) per mode, the evidence for leaving generation in the weights' dtype.
Writes benchmarks/precision.json (--quick writes none unless --out is given). On a busy machine run it with
OMP_NUM_THREADS=1: oneDNN's spinning threads lose most of their time when the cores are oversubscribed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "medexp" / "assets" / "tiny_llama" / "config.json"
DEFAULT_OUT = ROOT / "benchmarks" / "precision.json"
SMOLLM_135M = {
    "hidden_size": 576,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "intermediate_size": 1536,
    "vocab_size": 49152,
    "max_position_embeddings": 2048,
}
MODES = ("fp32", "bf16_autocast", "bf16")


def build(layers: int, mode: str, seed: int):
    """The LoRA-wrapped random model of the given mode (same seed, so the same weights in every mode)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = json.loads(TINY_CONFIG.read_text()) | SMOLLM_135M | {"num_hidden_layers": layers}
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**config))
    if mode == "bf16":
        model = model.to(torch.bfloat16)
    lora = LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    torch.manual_seed(seed + 1)  # the same adapter initialisation in every mode
    return get_peft_model(model, lora)


def autocast(mode: str):
    import contextlib

    import torch

    if mode == "fp32":
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16)


def step(model, mode: str, ids) -> tuple[float, float]:
    """(seconds, loss) of one forward + backward; gradients are cleared afterwards."""
    start = time.perf_counter()
    with autocast(mode):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    seconds = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return seconds, float(loss.detach())


def decode(model, mode: str, prompt) -> float:
    """Seconds of one greedy generation of 16 new tokens (no eos stop: min_new_tokens = max_new_tokens)."""
    import torch

    start = time.perf_counter()
    with torch.no_grad(), autocast(mode):
        model.generate(
            input_ids=prompt, max_new_tokens=16, min_new_tokens=16, do_sample=False, pad_token_id=0
        )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="2 layers, 2 x 64 tokens, 1 repeat: plumbing only"
    )
    parser.add_argument("--no-decode", action="store_true", help="time forward + backward only")
    parser.add_argument("--repeats", type=int, default=3, help="timed forward + backward passes per mode")
    parser.add_argument(
        "--out", type=Path, default=None, help="JSON output (default benchmarks/precision.json)"
    )
    args = parser.parse_args()

    import torch

    layers, batch, length = (2, 2, 64) if args.quick else (30, 4, 384)
    repeats = 1 if args.quick else args.repeats
    torch.manual_seed(0)
    ids = torch.randint(0, SMOLLM_135M["vocab_size"], (batch, length))
    prompt = ids[:1, :64]
    models = {mode: build(layers, mode, seed=0) for mode in MODES}
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    losses: dict[str, float] = {}
    for mode in MODES:  # warm-up: allocator, oneDNN kernel selection
        _, losses[mode] = step(models[mode], mode, ids)
    for _ in range(repeats):
        for mode in MODES:
            seconds, _ = step(models[mode], mode, ids)
            times[mode].append(seconds)
    median = {mode: statistics.median(t) for mode, t in times.items()}
    result = {
        "machine": machine(torch, load_before),
        "settings": {"layers": layers, "batch": batch, "tokens": length, "repeats": repeats, "lora_r": 16},
        "forward_backward_s": {mode: [round(t, 3) for t in times[mode]] for mode in MODES},
        "median_s": {mode: round(median[mode], 3) for mode in MODES},
        "speedup_vs_fp32": {mode: round(median["fp32"] / median[mode], 3) for mode in MODES},
        # the fastest repeat: on a shared machine the least disturbed by other processes' load
        "min_s": {mode: round(min(times[mode]), 3) for mode in MODES},
        "speedup_vs_fp32_min": {mode: round(min(times["fp32"]) / min(times[mode]), 3) for mode in MODES},
        "loss": {mode: round(losses[mode], 6) for mode in MODES},
        "loss_abs_diff_vs_fp32": {mode: round(abs(losses[mode] - losses["fp32"]), 6) for mode in MODES},
    }
    for mode in MODES:
        print(
            f"{mode:14s} forward+backward median {median[mode]:6.2f} s (x{result['speedup_vs_fp32'][mode]:.2f}), "
            f"fastest {min(times[mode]):6.2f} s (x{result['speedup_vs_fp32_min'][mode]:.2f}), "
            f"loss {losses[mode]:.5f}",
            flush=True,
        )
    out = args.out or (None if args.quick else DEFAULT_OUT)
    write(out, result)  # the forward + backward figures, kept should decoding not finish
    if args.no_decode:
        return
    result["decode_16_tokens_s"] = {}
    for mode in MODES:
        models[mode].eval()
        decode(models[mode], mode, prompt)  # warm-up
        result["decode_16_tokens_s"][mode] = seconds = round(decode(models[mode], mode, prompt), 3)
        print(f"{mode:14s} decode 16 tokens {seconds:.2f} s", flush=True)
    result["machine"]["load_average_after_decoding"] = [round(x, 2) for x in os.getloadavg()]
    write(out, result)


def machine(torch, load_before: tuple[float, float, float]) -> dict:
    load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} ({os.cpu_count()} cores)")
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "bf16_instructions": [
            n for n in ("avx512_bf16", "amx_tile") if n in Path("/proc/cpuinfo").read_text()
        ]
        if Path("/proc/cpuinfo").exists()
        else None,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
    }


def write(out: Path | None, result: dict) -> None:
    if out is not None:
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    main()
