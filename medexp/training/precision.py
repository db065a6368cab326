"""`trainer.precision` (and the `precision` of evaluate, benchmark, chat, serve) resolved for this machine.

  auto           bf16 on CUDA GPUs that support it (bf16 base weights, fp32 LoRA weights, autocast), fp16 on older
                 CUDA GPUs; bf16_autocast on CPUs with AVX512-BF16 or AMX; fp32 elsewhere
  bf16_autocast  fp32 weights (frozen base and LoRA master weights); matmuls under bf16 autocast (HF Trainer's
                 bf16=True, with use_cpu=True on a CPU)
  bf16           the base's weights stored in bf16 (peft keeps the LoRA weights fp32), autocast as above
  fp16           the base's weights in fp16, fp16 autocast with loss scaling: CUDA only
  fp32           everything fp32

A forced bf16 / bf16_autocast on hardware without bf16 matmuls is refused: a CPU without AVX512-BF16 or AMX
emulates them, which is slower than fp32, and a pre-Ampere GPU has none."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from medexp.config import UserError

log = logging.getLogger(__name__)

AUTOCAST = frozenset({"bf16", "bf16_autocast", "fp16"})  # the values that train under autocast


@dataclass(frozen=True)
class PrecisionChoice:
    value: str  # fp32, bf16_autocast, bf16 or fp16: what the run trains (and evaluates) in
    reason: str  # why, in words: the rule auto applied, or the value that was set

    def line(self) -> str:
        return f"precision {self.value}: {self.reason}"

    def tags(self) -> dict[str, str]:
        return {"medexp.precision": self.value, "medexp.precision_reason": self.reason}


def cpu_bf16_instructions() -> list[str]:
    """The bf16 matmul instruction sets this CPU has, as torch's CPU probe (cpuinfo) reports them: AVX512-BF16
    (Cooper Lake, Zen 4 and later) and AMX (Sapphire Rapids and later). Empty on other CPUs."""
    import torch

    probes = {"AVX512-BF16": "_is_avx512_bf16_supported", "AMX": "_is_amx_tile_supported"}
    return [name for name, probe in probes.items() if getattr(torch.cpu, probe, lambda: False)()]


def choose_precision(requested: str, key: str = "trainer.precision") -> PrecisionChoice:
    """What `requested` means on this machine, and why; a forced value the hardware lacks is a UserError."""
    import torch

    requested = str(requested)
    cuda = torch.cuda.is_available()
    gpu = torch.cuda.get_device_name() if cuda else ""
    if requested == "auto":
        if cuda:
            if torch.cuda.is_bf16_supported():
                return PrecisionChoice("bf16", f"auto: the GPU ({gpu}) supports bf16")
            return PrecisionChoice("fp16", f"auto: the GPU ({gpu}) has no bf16, so fp16 with loss scaling")
        found = cpu_bf16_instructions()
        if found:
            return PrecisionChoice(
                "bf16_autocast", f"auto: this CPU has {' and '.join(found)}, so bf16 matmuls on fp32 weights"
            )
        return PrecisionChoice("fp32", "auto: this CPU has neither AVX512-BF16 nor AMX, where bf16 is slower")
    if requested == "fp16" and not cuda:
        raise UserError(
            f"{key}=fp16 needs a CUDA GPU and none is available. Use {key}=auto (bf16 autocast on CPUs with "
            f"AVX512-BF16 or AMX, fp32 on others) or {key}=fp32."
        )
    if requested in ("bf16", "bf16_autocast"):
        _check_bf16(requested, key, gpu)
    return PrecisionChoice(requested, f"set by {key}")


def _check_bf16(requested: str, key: str, gpu: str) -> None:
    import torch

    if gpu and not torch.cuda.is_bf16_supported():
        raise UserError(
            f"{key}={requested}: the GPU ({gpu}) has no bf16 support (it needs an Ampere or newer card). Use "
            f"{key}=auto, which trains in fp16 with loss scaling on this GPU, or {key}=fp32."
        )
    if not gpu and not cpu_bf16_instructions():
        raise UserError(
            f"{key}={requested}: this CPU has neither AVX512-BF16 nor AMX, so bf16 matmuls would be emulated, "
            f"slower than fp32 and less exact. Use {key}=auto (fp32 on this CPU) or {key}=fp32."
        )


def announce_precision(requested: str, key: str = "trainer.precision") -> PrecisionChoice:
    """choose_precision, said in one console line when `auto` chose: what it chose and why (a value set by hand
    is named in the trainer's "precision ..., batching ..." line)."""
    choice = choose_precision(requested, key)
    log.log(logging.INFO if str(requested) == "auto" else logging.DEBUG, "%s", choice.line())
    return choice


def evaluation_precision(requested: str, trained_with: str) -> PrecisionChoice:
    """An evaluation's precision: `auto` evaluates as the run trained (its trainer.precision on this machine), so
    its eval loss compares with the training's; where that is unavailable here, auto's own rule."""
    if str(requested) != "auto":
        return announce_precision(requested, "precision")
    try:
        chosen = choose_precision(trained_with)
    except UserError:
        return announce_precision("auto", "precision")
    choice = PrecisionChoice(chosen.value, f"auto: as the run trained (trainer.precision={trained_with})")
    log.info("%s", choice.line())
    return choice
