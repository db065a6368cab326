"""trainer.compile: where inductor can run (a C++ compiler on a CPU) and where it is refused, and the tiny model's
decoder blocks compiled in place: same logits and gradients as eager, same state_dict keys (adapters save as usual)."""

from __future__ import annotations

import shutil

import pytest
import torch
from omegaconf import OmegaConf

from medexp.config import UserError
from medexp.training import compile as compile_module
from medexp.training.compile import check_compile, compile_blocks, compile_unavailable
from tests.helpers import TINY_MODEL


@pytest.fixture
def cpu_only(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_a_cpu_needs_a_cpp_compiler(cpu_only, monkeypatch):
    """This machine has g++ (inductor's CPU kernels are C++): compile can run; with CXX naming a compiler that
    is not there, the reason names it, and trainer.compile=true is refused in one paragraph. Off, nothing is
    checked."""
    monkeypatch.delenv("CXX", raising=False)
    if not any(shutil.which(c) for c in compile_module.COMPILERS):
        pytest.skip("no C++ compiler on this machine")
    assert compile_unavailable() is None
    check_compile(OmegaConf.create({"compile": True}))

    monkeypatch.setenv("CXX", "/nowhere/g++-99")
    assert "/nowhere/g++-99" in compile_unavailable()
    with pytest.raises(UserError, match=r"trainer\.compile=true .*C\+\+ compiler.*trainer\.compile=false"):
        check_compile(OmegaConf.create({"compile": True}))
    check_compile(OmegaConf.create({"compile": False}))  # off: never refused


@pytest.mark.slow  # inductor compiles the block's forward and backward: ~3 min on a busy 2-core CPU
def test_compiled_blocks_compute_what_eager_blocks_do():
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    def build():
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_pretrained(TINY_MODEL, dtype=torch.float32)
        lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
        torch.manual_seed(1)
        return get_peft_model(base, lora)

    eager, compiled = build(), build()
    keys = list(compiled.state_dict())
    assert compile_blocks(compiled) == compiled.config.num_hidden_layers
    assert list(compiled.state_dict()) == keys
    results = []
    for model in (eager, compiled):
        for length in (24, 40):  # two lengths: dynamic shapes, one graph
            ids = torch.arange(3, 3 + 2 * length).reshape(2, length) % 1000
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
        results.append((float(loss.detach()), grads))
    (eager_loss, eager_grads), (compiled_loss, compiled_grads) = results
    assert abs(eager_loss - compiled_loss) < 1e-4 * eager_loss
    for a, b in zip(eager_grads, compiled_grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-5)
