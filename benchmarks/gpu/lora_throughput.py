"""GPU check: SmolLM-135M LoRA training throughput and MFU in bf16 with medexp's three ways of batching on a GPU:
padding-free (flash-attention varlen: each batch one concatenated sequence, no padding), padded, and packed (TRL's
bfd blocks). One command, about 3 minutes on an H100:

    python benchmarks/gpu/lora_throughput.py        # writes lora_throughput.json under $OUT or benchmarks/gpu/results/

Model: SmolLM-135M's full shape (30 layers, random weights) from benchmarks/throughput.py, MedQuAD's length mix,
LoRA r=16 all-linear, `trainer.precision=auto` (bf16 on a bf16 GPU), batch 16, max 2048 tokens, 30 timed steps after
5 warm-up, variants (i) padding_free, (b) padded, (k) packing, each in its own process. Attention: flash_attention_2
when the flash_attn package is installed, else sdpa (then padding-free runs a block mask, not varlen: the JSON says
which). MFU: achieved model FLOP/s over the card's dense bf16 peak (benchmarks/gpu/common.py's table), with the
usual 6N count and with LoRA's real 4N (no weight gradients for the frozen base).

UNTESTED: written on a CPU-only machine; it has never run on a GPU. Its CPU-side logic is tested in
tests/test_gpu_checks.py. Exits non-zero when a variant fails."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import GpuMetrics, device, mfu, model_flops_per_token, out_dir, run_throughput, write_result

HIDDEN, LAYERS, VOCAB = 576, 30, 49152  # SmolLM-135M (benchmarks/throughput.py SHAPES)


def attention() -> str:
    return "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"


def with_mfu(report: dict, peak: float | None) -> dict:
    """Each variant's MFU (6N and LoRA 4N) from its tokens/s and mean sequence length."""
    params = report["settings"]["parameters"]
    for r in report["results"]:
        context = r["tokens"] / max(r["examples"], 1)  # mean real tokens per sequence
        flops = model_flops_per_token(params, LAYERS, HIDDEN, context, VOCAB)
        r["mfu_6n"] = mfu(r["tokens_per_s"], flops["six_n"], peak)
        r["mfu_lora"] = mfu(r["tokens_per_s"], flops["lora"], peak)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peak-tflops", type=float, default=None, help="the card's dense bf16 peak")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    card = device()
    peak = args.peak_tflops or card["peak_bf16_tflops"]
    attn = attention()
    with GpuMetrics() as metrics:
        report = run_throughput(
            [
                *("--layers=30", "--variants=ibk", f"--attn={attn}", "--max-tokens=2048"),
                *(f"--batch-size={args.batch_size}", f"--steps={args.steps}", "--warmup-steps=5"),
            ],
            out_dir() / "lora_throughput_raw.json",
            timeout=230,
        )
    report = with_mfu(report, peak)
    report.update(card=card, attention=attn, varlen=attn == "flash_attention_2", gpu_metrics=metrics.summary)
    print(report["table"])
    for r in report["results"]:
        print(f"({r['variant']}) {r['batching']}: {r['tokens_per_s']:,.0f} tokens/s, MFU {r['mfu_6n']} (6N)")
    write_result("lora_throughput", report)


if __name__ == "__main__":
    main()
