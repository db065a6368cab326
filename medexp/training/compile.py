"""`trainer.compile`: torch.compile (inductor) of the model's decoder blocks, and the check that it can run here.

Only the blocks are compiled, each with dynamic shapes: every block of a model runs the same code, so one compiled
graph serves them all, and batches of any length reuse it (a whole-model compile would also trace the LM head,
which medexp.training.answer_head replaces per batch). Measured on a 2-core CPU at SmolLM-135M's depth in
benchmarks/throughput.py (variant h) and docs/performance.md: what compiling costs once, and what each step gains.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any

from medexp.config import UserError

log = logging.getLogger(__name__)

COMPILERS = ("g++", "c++", "clang++")  # inductor's CPU kernels are C++ built at run time


def compile_unavailable() -> str | None:
    """Why torch.compile's inductor backend cannot run on this machine, or None when it can."""
    import torch

    if not torch._dynamo.is_dynamo_supported():
        return f"torch {torch.__version__} has no torch.compile for this Python or platform"
    if torch.cuda.is_available():
        from torch.utils._triton import has_triton

        return None if has_triton() else "inductor needs Triton on a CUDA GPU and it is not installed"
    if torch.backends.mps.is_available():
        return "inductor's Apple-GPU (MPS) backend is experimental and medexp does not use it"
    wanted = os.environ.get("CXX")
    if not any(shutil.which(c) for c in ([wanted] if wanted else COMPILERS)):
        return f"inductor builds its CPU kernels with a C++ compiler and none was found ({wanted or ', '.join(COMPILERS)})"
    return None


def check_compile(trainer_cfg: Any, key: str = "trainer.compile") -> None:
    """trainer.compile=true where torch.compile cannot run: one paragraph, before data and model load."""
    if not trainer_cfg.get("compile", False):
        return
    reason = compile_unavailable()
    if reason is not None:
        raise UserError(
            f"{key}=true asks for torch.compile, and it cannot run on this machine: {reason}. Set {key}=false "
            "(the default; training runs eagerly at the same loss), or install what is missing (a C++ compiler "
            "such as g++ for a CPU, Triton for a CUDA GPU) and run again."
        )


def compile_blocks(model: Any) -> int:
    """Compile every decoder block of `model` in place (dynamic shapes); the number compiled. The blocks are the
    modules whose class the model names in `_no_split_modules` (transformers' decoder-layer classes)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or ())
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    for block in blocks:
        block.compile(dynamic=True)  # the module's state_dict keys stay as they were (adapters save as usual)
    log.info(
        "trainer.compile: %d decoder blocks compiled with torch.compile (inductor, dynamic shapes)",
        len(blocks),
    )
    return len(blocks)
