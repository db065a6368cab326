"""What the GPU checks share: GPU system metrics sampled while a check runs (nvidia-smi), model FLOPs utilisation
(MFU), the card's peak bf16 throughput, where results go, and benchmarks/throughput.py run as a subprocess.

UNTESTED on a GPU: written on a CPU-only machine; the CPU-side logic (parsing, MFU, peaks) is tested in
tests/test_gpu_checks.py. Imports nothing heavy at module level, so every check imports cleanly without a GPU."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
THROUGHPUT = ROOT / "benchmarks" / "throughput.py"

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets; matched by substring of
# torch.cuda.get_device_name(), most specific first. --peak-tflops overrides.
PEAK_BF16_TFLOPS = [
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),  # SXM / HBM3
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("RTX 4090", 165.0),
    ("RTX 3090", 71.0),
]
SMI_FIELDS = ("utilization.gpu", "memory.used", "memory.total", "power.draw", "temperature.gpu")


def peak_tflops(device_name: str) -> float | None:
    """The card's dense bf16 peak, or None for a card not in the table."""
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in device_name:
            return tflops
    return None


def model_flops_per_token(params: int, layers: int, hidden: int, context: float, vocab: int) -> dict:
    """FLOPs of one trained token. `six_n`: the usual 6 x non-embedding parameters plus causal attention
    (6 x layers x hidden x context: QK^T and AV, forward and backward, halved by the causal mask) plus the LM
    head's 6 x hidden x vocab; this is what MFU is normally quoted against. `lora`: what a LoRA step really
    computes on a frozen base, 4/6 of the matmul terms (no weight gradients for the base)."""
    non_embedding = params - vocab * hidden  # tied embeddings: the head's matrix is the embedding's
    matmuls = 6 * non_embedding + 6 * hidden * vocab
    attention = 6 * layers * hidden * context
    return {"six_n": matmuls + attention, "lora": matmuls * 4 / 6 + attention}


def mfu(tokens_per_s: float, flops_per_token: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: achieved FLOP/s over the card's peak (None when the peak is unknown)."""
    if not peak:
        return None
    return round(tokens_per_s * flops_per_token / (peak * 1e12), 4)


def parse_smi(text: str) -> list[dict[str, float]]:
    """nvidia-smi --query-gpu=<SMI_FIELDS> --format=csv,noheader,nounits output: one dict per GPU line
    ("[N/A]" and unparsable cells are left out)."""
    rows = []
    for line in text.strip().splitlines():
        cells = [c.strip() for c in line.split(",")]
        row = {}
        for field, cell in zip(SMI_FIELDS, cells, strict=False):
            try:
                row[field] = float(cell)
            except ValueError:
                continue
        if row:
            rows.append(row)
    return rows


def summarize(samples: list[list[dict[str, float]]]) -> dict:
    """Per GPU: mean and max of each field over the samples; the count of samples."""
    out: dict = {"samples": len(samples), "gpus": []}
    for gpu in range(max((len(s) for s in samples), default=0)):
        series: dict[str, list[float]] = {}
        for sample in samples:
            if gpu < len(sample):
                for field, value in sample[gpu].items():
                    series.setdefault(field, []).append(value)
        out["gpus"].append({f: {"mean": round(sum(v) / len(v), 1), "max": max(v)} for f, v in series.items()})
    return out


class GpuMetrics:
    """Samples nvidia-smi every `interval` seconds in a thread while the `with` block runs (the whole machine's
    GPUs, so the checks' subprocesses are covered); `.summary` after it. Without nvidia-smi: an empty summary."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.samples: list[list[dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.summary: dict = {}

    def _sample(self) -> None:
        query = [shutil.which("nvidia-smi") or "nvidia-smi", f"--query-gpu={','.join(SMI_FIELDS)}"]
        while not self._stop.is_set():
            try:
                out = subprocess.run(
                    [*query, "--format=csv,noheader,nounits"], capture_output=True, text=True
                )
                self.samples.append(parse_smi(out.stdout))
            except OSError:
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> GpuMetrics:
        if shutil.which("nvidia-smi"):
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.summary = summarize(self.samples)


def out_dir() -> Path:
    """$OUT when set (the device runner's folder that comes back), else benchmarks/gpu/results/."""
    folder = Path(os.environ.get("OUT") or ROOT / "benchmarks" / "gpu" / "results")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_result(name: str, result: dict) -> Path:
    path = out_dir() / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}", flush=True)
    return path


def run_throughput(args: list[str], out: Path, timeout: float) -> dict:
    """benchmarks/throughput.py with `args`, its JSON report written to `out` and returned."""
    cmd = [sys.executable, str(THROUGHPUT), *args, f"--out={out}"]
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, timeout=timeout)
    report = json.loads(out.read_text())
    report["wall_s"] = round(time.perf_counter() - start, 1)
    return report


def device() -> dict:
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("this check needs a CUDA GPU and torch sees none")
    name = torch.cuda.get_device_name(0)
    return {"name": name, "count": torch.cuda.device_count(), "peak_bf16_tflops": peak_tflops(name)}
