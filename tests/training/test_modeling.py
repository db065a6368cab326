"""Tokenizer and model loading: pad token, precision, offline hub errors, LoRA and QLoRA adapters."""

from __future__ import annotations

import importlib.util
from contextlib import nullcontext

import pytest
import torch

from medexp.config import UserError
from medexp.training.model import load_model, load_tokenizer, resolve_precision

needs_bitsandbytes = pytest.mark.skipif(
    importlib.util.find_spec("bitsandbytes") is None, reason="the qlora extra (bitsandbytes) is not installed"
)


def test_pad_token_is_set_when_the_tokenizer_has_none(make_cfg):
    from transformers import AutoTokenizer

    cfg = make_cfg("model=tiny")
    assert AutoTokenizer.from_pretrained(cfg.model.name_or_path).pad_token is None  # as shipped
    tokenizer = load_tokenizer(cfg.model)
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"


def test_uncached_hub_model_offline_is_a_clear_error(make_cfg, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = make_cfg("model.name_or_path=medexp-tests/no-such-model")
    with pytest.raises(
        UserError, match=r"Could not load model 'medexp-tests/no-such-model'.*Hugging Face cache"
    ):
        load_tokenizer(cfg.model)


def test_precision_on_this_machine():
    if torch.cuda.is_available():
        pytest.skip("CPU-only expectations")
    from medexp.training.precision import cpu_bf16_instructions

    bf16 = bool(
        cpu_bf16_instructions()
    )  # AVX512-BF16 or AMX (tests/training/test_precision.py fakes both cases)
    assert resolve_precision("auto") == ("bf16_autocast" if bf16 else "fp32")
    if bf16:
        assert resolve_precision("bf16") == "bf16"
    with pytest.raises(UserError, match=r"trainer\.precision=fp16 needs a CUDA GPU"):
        resolve_precision("fp16")


def test_lora_on_all_linear_projections(make_cfg):
    cfg = make_cfg("experiment=smoke")
    model = load_model(cfg.model, cfg.lora, "fp32", False)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    wrapped = {n.split(".")[-4] for n in trainable if n.endswith("lora_A.default.weight")}
    assert wrapped == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert model.peft_config["default"].r == 8 and model.peft_config["default"].lora_alpha == 32
    assert not any("lm_head" in n or "embed" in n for n in trainable)


@needs_bitsandbytes
def test_qlora_base_is_4bit_nf4_and_gradients_reach_every_layer(make_cfg):
    """On the 4-bit base, LoRA gradients match those on the dequantized base (bitsandbytes on CPU too)."""
    import bitsandbytes.functional as F

    cfg = make_cfg("experiment=smoke", "lora=qlora")
    cpu = not torch.cuda.is_available()
    with pytest.warns(UserWarning, match="without a CUDA GPU") if cpu else nullcontext():
        qlora = load_model(cfg.model, cfg.lora, "fp32", False)
    weight = qlora.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight
    assert weight.dtype == torch.uint8 and weight.quant_state.quant_type == "nf4"

    reference = load_model(cfg.model, make_cfg("experiment=smoke").lora, "fp32", False)
    quantized = dict(qlora.named_modules())
    torch.manual_seed(0)
    with torch.no_grad():
        for name, module in reference.named_modules():
            w = getattr(getattr(quantized.get(name), "base_layer", None), "weight", None)
            if hasattr(module, "base_layer") and hasattr(w, "quant_state"):
                module.base_layer.weight.copy_(F.dequantize_4bit(w.data, w.quant_state).float())
        for (name, p), (_, p_ref) in zip(qlora.named_parameters(), reference.named_parameters(), strict=True):
            if "lora_" in name:
                p.copy_(torch.randn_like(p) * 0.02)
                p_ref.copy_(p)
    ids = torch.arange(3, 67).unsqueeze(0)
    for model in (qlora, reference):
        model.eval()  # no dropout, so both see the same computation
        model(input_ids=ids, labels=ids).loss.backward()
    grads = {n: p.grad for n, p in reference.named_parameters() if p.grad is not None}
    checked = 0
    for name, p in qlora.named_parameters():
        if "lora_A" in name and "q_proj" in name:
            cos = torch.nn.functional.cosine_similarity(p.grad.flatten(), grads[name].flatten(), dim=0)
            assert cos > 0.99, (name, cos)
            checked += 1
    assert checked == 4  # one per layer, the first layer's gradient passed through all later 4-bit layers
