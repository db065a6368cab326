"""GPU check: QLoRA (4-bit NF4 base, bf16 compute) on TinyLlama-1.1B's shape with random weights: a few training
steps through medexp's `lora=qlora`, tokens per second, CUDA peak memory and MFU. One command, about 3 minutes on
an H100:

    python benchmarks/gpu/qlora.py        # writes qlora.json under $OUT or benchmarks/gpu/results/

Model: hidden 2048, 22 layers, 32 heads, 4 kv heads, intermediate 5632, vocab 32000 (benchmarks/throughput.py
--shape tinyllama-1.1b), saved once with random weights, then quantized by bitsandbytes as medexp loads it; batch 8,
max 1024 tokens, 10 timed steps after 3 warm-up, medexp's default batching for the GPU.

UNTESTED: written on a CPU-only machine; it has never run on a GPU. It needs bitsandbytes (pip install
'medexp[qlora]'). Exits non-zero when the run fails."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import GpuMetrics, device, mfu, model_flops_per_token, out_dir, run_throughput, write_result

HIDDEN, LAYERS, VOCAB = 2048, 22, 32000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peak-tflops", type=float, default=None, help="the card's dense bf16 peak")
    args = parser.parse_args()
    card = device()
    peak = args.peak_tflops or card["peak_bf16_tflops"]
    with GpuMetrics() as metrics:
        report = run_throughput(
            [
                *("--shape=tinyllama-1.1b", f"--layers={LAYERS}", f"--vocab={VOCAB}", "--lora=qlora"),
                *("--variants=a", "--batch-size=8", "--max-tokens=1024", "--steps=10", "--warmup-steps=3"),
            ],
            out_dir() / "qlora_raw.json",
            timeout=230,
        )
    r = report["results"][0]
    params = report["settings"][
        "parameters"
    ]  # the random shape ties its embeddings, as the FLOPs count assumes
    flops = model_flops_per_token(params, LAYERS, HIDDEN, r["tokens"] / max(r["examples"], 1), VOCAB)
    r["mfu_6n"], r["mfu_lora"] = (
        mfu(r["tokens_per_s"], flops["six_n"], peak),
        mfu(r["tokens_per_s"], flops["lora"], peak),
    )
    report.update(card=card, gpu_metrics=metrics.summary)
    print(report["table"])
    print(
        f"QLoRA: {r['tokens_per_s']:,.0f} tokens/s, CUDA peak {r['cuda_peak_mib']:,.0f} MiB, MFU {r['mfu_6n']} (6N)"
    )
    write_result("qlora", report)


if __name__ == "__main__":
    main()
