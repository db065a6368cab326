"""Base model, tokenizer and LoRA / QLoRA adapters."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from medexp.config import UserError
from medexp.console import drop_log_messages

if TYPE_CHECKING:
    import torch
    from peft import PeftModel
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

# bitsandbytes, when imported (transformers and peft import it whenever it is installed, as with the qlora extra)
# on a CPU with AVX512-BF16, asks the `kernels` package for a hub kernel: kernels warns that it cannot check the
# kernel's publisher offline, and bitsandbytes that it could not load it (offline, untrusted or not installed).
# It falls back to its own CPU kernel, so there is nothing to act on: both are dropped before anything imports it.
drop_log_messages(
    "bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community"
)
drop_log_messages(
    "kernels._internals.hf_hub",
    "Skipping publisher trust check for 'kernels-community/quantization-bitsandbytes'",
)


def _hub_kwargs(model_cfg: DictConfig) -> dict:
    return {"revision": model_cfg.revision, "trust_remote_code": bool(model_cfg.trust_remote_code)}


def _load_error(model_cfg: DictConfig, err: Exception) -> UserError:
    first_line = (str(err).strip().splitlines() or [type(err).__name__])[0].rstrip(".")
    return UserError(
        f"Could not load model {model_cfg.name_or_path!r}: {first_line}. It must be a local directory written "
        "by save_pretrained, a model already in the Hugging Face cache, or a hub id reachable from here "
        "(HF_HUB_OFFLINE=1 only reads the cache). model=tiny needs no network."
    )


def check_offline_model(model_cfg: DictConfig) -> None:
    """With HF_HUB_OFFLINE=1, a hub id must already be in the Hugging Face cache: say so in seconds, before the
    data is read, instead of failing at load time. Local directories are checked by medexp.config's validate."""
    name = str(model_cfg.name_or_path)
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if not offline or Path(name).expanduser().is_dir():
        return
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(name, "config.json", revision=model_cfg.revision)
    except ValueError:  # not a valid repo id at all
        cached = None
    if not isinstance(cached, str):
        raise UserError(
            f"model.name_or_path={name!r} is not in the Hugging Face cache, and HF_HUB_OFFLINE=1 forbids "
            f"downloading it. Download it once where the Hub is reachable (huggingface-cli download {name}), "
            "point model.name_or_path at a local directory written by save_pretrained, or use model=tiny."
        )


def load_tokenizer(model_cfg: DictConfig) -> PreTrainedTokenizerBase:
    """The base model's tokenizer, with a pad token and a chat template."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_cfg.name_or_path), **_hub_kwargs(model_cfg))
    except (OSError, ValueError) as err:
        raise _load_error(model_cfg, err) from None
    if tokenizer.chat_template is None:
        raise UserError(
            f"The tokenizer of {model_cfg.name_or_path!r} has no chat template, so medexp cannot format "
            "system prompt, question and answer consistently. Use an instruct/chat model (e.g. "
            "model=smollm_135m_instruct) or save a tokenizer with a chat_template."
        )
    if tokenizer.pad_token is None:
        # Padding positions never reach the loss (TRL's collator masks them), so reusing EOS is safe.
        tokenizer.pad_token = tokenizer.eos_token
        log.info("tokenizer has no pad token; using its eos token %r", tokenizer.eos_token)
    return tokenizer


def resolve_precision(precision: str, key: str = "trainer.precision") -> str:
    """`precision` as this machine runs it (medexp.training.precision): auto -> bf16 / fp16 on CUDA GPUs,
    bf16_autocast on CPUs with AVX512-BF16 or AMX, fp32 elsewhere. A forced value the hardware lacks is refused."""
    from medexp.training.precision import choose_precision

    return choose_precision(precision, key).value


def _dtype(model_cfg: DictConfig, precision: str) -> torch.dtype:
    import torch

    if model_cfg.dtype != "auto":
        return getattr(torch, str(model_cfg.dtype))
    # bf16_autocast keeps the weights fp32: autocast casts each matmul's inputs to bf16 as it runs
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


def _quantization_config(quant: DictConfig):
    import torch
    from transformers import BitsAndBytesConfig

    if not torch.cuda.is_available():
        warnings.warn(
            "lora=qlora without a CUDA GPU: bitsandbytes runs 4-bit layers on the CPU (AVX2), which works but "
            "is many times slower than on a GPU.",
            stacklevel=2,
        )
    if quant.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=str(quant.quant_type),
        bnb_4bit_use_double_quant=bool(quant.double_quant),
        bnb_4bit_compute_dtype=getattr(torch, str(quant.compute_dtype)),
    )


def load_base_model(model_cfg: DictConfig, lora_cfg: DictConfig, precision: str):
    """The base model as the run trains it: in the run's dtype, quantized to 4 bits with lora=qlora."""
    from transformers import AutoModelForCausalLM

    from medexp.console import library_bars_off

    kwargs = {
        "dtype": _dtype(model_cfg, precision),
        "attn_implementation": str(model_cfg.attn_implementation),
    }
    if lora_cfg.quantization is not None:
        kwargs["quantization_config"] = _quantization_config(lora_cfg.quantization)
        if "LOCAL_RANK" in os.environ:  # data parallel: each process's 4-bit copy on its own GPU
            kwargs["device_map"] = {"": int(os.environ["LOCAL_RANK"])}
    try:
        with library_bars_off():  # transformers' "Loading weights" bar: a second or two, then gone
            return AutoModelForCausalLM.from_pretrained(
                str(model_cfg.name_or_path), **_hub_kwargs(model_cfg), **kwargs
            )
    except (OSError, ValueError, ImportError) as err:
        raise _load_error(model_cfg, err) from None


def load_model(model_cfg: DictConfig, lora_cfg: DictConfig, precision: str, gradient_checkpointing: bool):
    """The base model with fresh LoRA adapters; only the adapters are trainable."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from medexp.console import verbose

    if not verbose():
        # peft still calls transformers' deprecated `is_gradient_checkpointing`; only a peft release can fix it.
        warnings.filterwarnings(
            "ignore",
            message=r"`is_gradient_checkpointing` is deprecated",
            category=FutureWarning,
            module=r"transformers\.modeling_utils",
        )
    model = load_base_model(model_cfg, lora_cfg, precision)
    if lora_cfg.quantization is not None:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)

    from medexp.config.choices import MUTATING_INITS
    from medexp.training.adapter_init import PEFT_INIT, keep_initial_adapter

    target = lora_cfg.target_modules
    train_modules = list(lora_cfg.train_modules)
    peft_config = LoraConfig(
        r=int(lora_cfg.r),
        lora_alpha=float(lora_cfg.alpha),
        lora_dropout=float(lora_cfg.dropout),
        target_modules=target if isinstance(target, str) else list(target),
        bias=str(lora_cfg.bias),
        use_dora=bool(lora_cfg.use_dora),
        use_rslora=bool(lora_cfg.use_rslora),
        init_lora_weights=PEFT_INIT[str(lora_cfg.init)],
        modules_to_save=train_modules or None,
        # a trained copy of a tied embedding must stay tied to the output head, as in the base model
        ensure_weight_tying=_trains_an_embedding(model, train_modules),
        task_type="CAUSAL_LM",
    )
    # peft warns that PiSSA / OLoRA adapters should be converted to ordinary LoRA: medexp's save_adapter does
    warnings.filterwarnings("ignore", message=r"(PiSSA|OLoRA) changes the base weights", category=UserWarning)
    model = get_peft_model(model, peft_config)
    if str(lora_cfg.init) in MUTATING_INITS:  # the base weights now hold a residual
        keep_initial_adapter(model)
    trainable, total = model.get_nb_trainable_parameters()
    log.info(
        "LoRA: %s trainable of %s parameters (%.2f%%)",
        f"{trainable:,}",
        f"{total:,}",
        100 * trainable / total,
    )
    return model


def _trains_an_embedding(model, train_modules: list[str]) -> bool:
    embeddings = (model.get_input_embeddings(), model.get_output_embeddings())
    names = [key for key, m in model.named_modules() if any(m is e for e in embeddings)]
    return any(key.endswith(t) for key in names for t in train_modules)


def check_train_modules(model_cfg: DictConfig, lora_cfg: DictConfig) -> None:
    """peft's modules_to_save matches module names by suffix and ignores a name that matches nothing: refuse it
    before the run starts, on the model built from its config on the meta device (no weights read)."""
    names = list(lora_cfg.train_modules)
    if not names:
        return
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    model_name = str(model_cfg.name_or_path)
    try:
        config = AutoConfig.from_pretrained(model_name, **_hub_kwargs(model_cfg))
    except (OSError, ValueError) as err:
        raise _load_error(model_cfg, err) from None
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    modules = [key for key, _ in model.named_modules()]
    missing = [n for n in names if not any(key.endswith(n) for key in modules)]
    if missing:
        leaves = sorted({key.rsplit(".", 1)[-1] for key in modules if key and not key[-1].isdigit()})
        raise UserError(
            f"lora.train_modules names {missing[0]!r}, which is no module of {model_name!r}. Give the end of a "
            f"module name; this model has: {', '.join(leaves)} (e.g. [embed_tokens] or [norm])."
        )


def base_state(model: PeftModel) -> dict[str, torch.Tensor]:
    """The frozen base weights of a PEFT model, under the base model's own parameter names."""
    return {
        name.replace("base_model.model.", "", 1).replace(".base_layer", ""): tensor
        for name, tensor in model.state_dict().items()
        if "lora_" not in name
    }
