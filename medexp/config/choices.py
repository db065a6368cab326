"""The closed sets of values config keys take, as enums: OmegaConf 2.3 checks an Enum field (it has no `Literal`).
Each is a `str`, so it compares equal to, and prints as, its name."""

from __future__ import annotations

from enum import Enum


class Choice(str, Enum):
    """A closed set of names; compares equal to and prints as its name, as a plain string would."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class Precision(Choice):
    auto = "auto"  # bf16 on GPUs that support it, fp16 on older GPUs, bf16_autocast on CPUs with AVX512-BF16/AMX, else fp32
    bf16_autocast = "bf16_autocast"  # fp32 weights, matmuls in bf16 under autocast (exact master weights)
    bf16 = "bf16"  # the base's weights stored in bf16 (LoRA weights fp32), matmuls in bf16
    fp16 = "fp16"  # fp16 weights and autocast with loss scaling: CUDA only
    fp32 = "fp32"


class AttnImplementation(Choice):
    sdpa = "sdpa"  # PyTorch's scaled_dot_product_attention: everywhere, no extra package
    eager = "eager"  # plain matmuls: slow, for debugging
    flash_attention_2 = "flash_attention_2"  # CUDA + flash-attn package
    flash_attention_3 = "flash_attention_3"  # Hopper GPUs + flash-attn 3
    flex_attention = "flex_attention"  # torch's compiled flex attention


class Batching(Choice):
    auto = "auto"  # the fastest measured for the device and attention kernel (medexp.training.batching)
    padding_free = "padding_free"  # each batch one concatenated sequence, position_ids restart per example
    packing = "packing"  # best-fit-decreasing packing into blocks of dataset.max_tokens tokens
    group_by_length = "group_by_length"  # padded batches of similar lengths (random groups, sorted within)
    padded = "padded"  # random batches padded to their longest example


class ModelDtype(Choice):
    auto = (
        "auto"  # follow the trainer's precision: bf16/fp16 on GPUs, fp32 on CPUs (bf16_autocast keeps fp32)
    )
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class PreferenceLoss(Choice):
    sigmoid = "sigmoid"  # DPO (Rafailov et al. 2023)
    ipo = "ipo"  # IPO: a squared loss that does not push the margin to infinity on separable pairs
    hinge = "hinge"  # SLiC's hinge on the reward margin
    sigmoid_norm = "sigmoid_norm"  # DPO on length-normalised log-probabilities


class LoraBias(Choice):
    none = "none"
    all = "all"
    lora_only = "lora_only"


class LoraInit(Choice):
    default = "default"  # A random (Kaiming), B zero: the adapter starts as a no-op (peft's default)
    gaussian = "gaussian"  # A Gaussian with std 1/r, B zero: also a no-op at the start
    pissa = "pissa"  # A, B = the top-r singular vectors of W; the base keeps the residual (exact SVD)
    pissa_fast = (
        "pissa_fast"  # PiSSA by a 16-iteration randomized SVD: seconds instead of minutes on 7B models
    )
    olora = "olora"  # A, B from the QR decomposition of W; the base keeps the residual


# The inits that move part of W into the adapter and leave the base layers holding the residual: the adapter is
# saved converted to an ordinary LoRA for the original base, and is refused with DoRA, whole modules or QLoRA.
MUTATING_INITS = frozenset({LoraInit.pissa.value, LoraInit.pissa_fast.value, LoraInit.olora.value})


class QuantType(Choice):
    nf4 = "nf4"  # NormalFloat4, the QLoRA paper's type
    fp4 = "fp4"


class ComputeDtype(Choice):
    bfloat16 = "bfloat16"
    float16 = "float16"
    float32 = "float32"


class GrpoLoss(Choice):
    grpo = "grpo"  # the paper's: each completion's token losses averaged over its own length (a length bias)
    dr_grpo = "dr_grpo"  # Dr. GRPO: token losses summed and divided by a constant (max completion length)
    dapo = "dapo"  # DAPO: token losses averaged over every token of the batch (TRL's default)


class RolloutEngine(Choice):
    transformers = "transformers"  # model.generate on the training model: CPU or GPU, nothing extra
    vllm = "vllm"  # TRL's colocated vLLM engine on the training GPU: needs CUDA and the vllm package


class ExportFormat(Choice):
    hf = "hf"  # the peft adapter (and merged/ with merge=true): transformers, peft, vLLM
    gguf = "gguf"  # the merged model as one GGUF file (llama.cpp, Ollama), plus a Modelfile
    gguf_lora = "gguf_lora"  # the adapter alone as a GGUF LoRA (llama.cpp --lora, Ollama ADAPTER)
