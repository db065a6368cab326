"""benchmarks/gpu/: the prepared GPU checks import cleanly on a machine without a GPU, and their CPU-side logic
(nvidia-smi parsing, the per-GPU summary, the card's peak, FLOPs per token and MFU) computes what it says."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

GPU = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu"
CHECKS = ("lora_throughput", "qlora", "ddp", "system_metrics")


def load(name: str):
    sys.path.insert(0, str(GPU))
    try:
        spec = importlib.util.spec_from_file_location(f"gpu_check_{name}", GPU / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(GPU))
    return module


@pytest.mark.parametrize("name", CHECKS)
def test_each_check_imports_without_a_gpu_and_says_it_is_untested(name):
    module = load(name)
    assert callable(module.main)
    assert "UNTESTED" in module.__doc__


def test_nvidia_smi_lines_parse_and_summarize_per_gpu():
    common = load("common")
    first = common.parse_smi("87, 30512, 81559, 301.55, 54\n12, 1024, 81559, [N/A], 40\n")
    second = common.parse_smi("93, 31000, 81559, 320.45, 56\n")
    assert first[0] == {
        "utilization.gpu": 87.0,
        "memory.used": 30512.0,
        "memory.total": 81559.0,
        "power.draw": 301.55,
        "temperature.gpu": 54.0,
    }
    assert "power.draw" not in first[1]  # [N/A] is left out, the rest kept
    summary = common.summarize([first, second])
    assert summary["samples"] == 2 and len(summary["gpus"]) == 2
    assert summary["gpus"][0]["utilization.gpu"] == {"mean": 90.0, "max": 93.0}
    assert summary["gpus"][1]["memory.used"] == {"mean": 1024.0, "max": 1024.0}  # one sample of GPU 1
    assert common.summarize([]) == {"samples": 0, "gpus": []}


def test_peaks_flops_and_mfu():
    common = load("common")
    assert common.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert common.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert common.peak_tflops("NVIDIA H200") == 989.0
    assert common.peak_tflops("Tesla T4") is None
    # SmolLM-135M: 134.5M parameters, 28.3M of them the tied embedding; 400-token context
    params, hidden, vocab, layers = 134_515_008, 576, 49152, 30
    flops = common.model_flops_per_token(params, layers, hidden, 400, vocab)
    non_embedding = params - hidden * vocab
    assert flops["six_n"] == 6 * non_embedding + 6 * hidden * vocab + 6 * layers * hidden * 400
    assert flops["lora"] < flops["six_n"]
    # 50k tokens/s at ~0.85 GFLOP a token on a 989 TFLOP/s card: ~4% MFU
    assert common.mfu(50_000, flops["six_n"], 989.0) == pytest.approx(
        50_000 * flops["six_n"] / 989e12, abs=1e-4
    )
    assert common.mfu(50_000, flops["six_n"], None) is None


def test_run_all_is_valid_bash_and_runs_every_check():
    script = GPU / "run_all.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert all(f"[{name}]=" in text for name in CHECKS)
    limits = [
        int(part.split("]=")[1].split()[0].rstrip(")")) for part in text.split("[")[1:] if "]=" in part[:30]
    ]
    assert sum(limits) <= 12 * 60 and max(limits) <= 4 * 60
