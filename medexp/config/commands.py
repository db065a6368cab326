"""The typed roots of the commands besides `medexp.train` (evaluate, benchmark, export, chat, serve, sync), with
their checks, and `register_configs`, which stores every group schema and command root in Hydra's ConfigStore:
see medexp/config/schema.py for how they are used. `REQUIRED` on a root says why a field left at `???` is needed
(medexp/config/checks.py prints it instead of the generic list of missing values)."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any, ClassVar

from omegaconf import MISSING, DictConfig

from medexp.config.choices import ExportFormat, Precision
from medexp.config.errors import UserError
from medexp.config.rules import Rule, Rules, dotted, require
from medexp.config.schema import GROUPS, EvalConfig, PathsConfig, TrackingConfig, TrainConfig

SOURCE_FORMS = (
    "Name a trained model as source=<MLflow run id> (32 hex characters), source=<a run's output directory or "
    "its adapter/ directory>, or source=models:/<name>/<version> (or models:/<name>@<alias>)."
)


@dataclass
class SourceCommandConfig:
    """What every command on a trained model shares: where it is and where runs are tracked."""

    tracking: TrackingConfig = MISSING
    paths: PathsConfig = MISSING
    source: str = MISSING  # a run id, a run's output or adapter directory, or models:/<name>/<version>

    REQUIRED: ClassVar[dict[str, str]] = {"source": f"source is required. {SOURCE_FORMS}"}


@dataclass
class EvaluateConfig(SourceCommandConfig):
    eval: EvalConfig = MISSING
    precision: Precision = MISSING  # auto (as the run trained), bf16_autocast, bf16, fp16 or fp32


def _whole_at_least(name: str, least: int) -> Rule:
    return require(
        name,
        lambda v: v >= least,
        f"{{key}} must be a whole number >= {least} (got {{value}}); null where allowed means the default.",
    )


@dataclass
class BenchmarkConfig(SourceCommandConfig):
    tasks: list[str] = MISSING  # lm-evaluation-harness task (or group) names
    include_path: str | None = None  # a folder of your own lm-eval task YAMLs, added to lm-eval's
    num_fewshot: int | None = None  # examples shown before each question; null = the task's own default
    limit: int | None = None  # questions per task; null = all
    batch_size: int = MISSING  # sequences per forward pass
    base: bool = MISSING  # also score the base model (adapter off) for the before/after table
    chat_template: bool = MISSING  # ask in the chat format the adapter learned, with its system prompt
    seed: int = MISSING  # lm-eval's seeds (few-shot sampling)
    precision: Precision = MISSING  # dtype the model runs in: auto, bf16, fp16 or fp32 (bf16_autocast: fp32)

    RULES: ClassVar[Rules] = (
        _whole_at_least("batch_size", 1),
        _whole_at_least("limit", 1),  # null = every question of the task
        _whole_at_least("num_fewshot", 0),  # null = the task's own default
        require(
            "tasks", len, "tasks is empty. Name at least one lm-eval task, e.g. tasks=[pubmedqa,medmcqa]."
        ),
    )


# Written by llama.cpp's convert_hf_to_gguf.py itself; the rest by llama.cpp's quantizer (medexp/serving/gguf.py).
# tq1_0 / tq2_0 are left out: they are for ternary (BitNet-style) weights and ruin an ordinary model.
GGUF_CONVERTER_QUANTS = ("f32", "f16", "bf16", "q8_0")
GGUF_QUANTIZER_QUANTS = (
    "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k_s", "q3_k_m", "q3_k_l",
    "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k", "iq4_nl", "iq4_xs",
)  # fmt: skip


def _gguf_quant(node: Any, key: str) -> str | None:
    if node.quant in GGUF_CONVERTER_QUANTS + GGUF_QUANTIZER_QUANTS:
        return None
    return (
        f"{dotted(key, 'quant')}={node.quant!r} is not a GGUF type medexp writes. llama.cpp's converter writes "
        f"{', '.join(GGUF_CONVERTER_QUANTS)}; its quantizer (llama-cpp-python or llama-quantize) writes "
        f"{', '.join(GGUF_QUANTIZER_QUANTS)}. For example: {dotted(key, 'quant')}=q8_0."
    )


@dataclass
class GgufConfig:
    quant: str = MISSING  # GGUF type: f32, f16, bf16, q8_0 (converter); q4_k_m, q6_k, ... (quantizer)
    lora_quant: str = MISSING  # format=gguf_lora: the adapter's type, f32, f16, bf16 or q8_0
    converter_dir: str | None = None  # dir of convert_hf_to_gguf.py; null: $MEDEXP_LLAMA_CPP_DIR
    pre_tokenizer: str | None = None  # llama.cpp pre-tokenizer name for a tokenizer its converter lacks
    modelfile: bool = MISSING  # write an Ollama Modelfile beside the GGUF

    RULES: ClassVar[Rules] = (
        _gguf_quant,
        require(
            "lora_quant",
            lambda v: v in GGUF_CONVERTER_QUANTS,
            f"{{key}}={{value!r}}: a GGUF LoRA is written as one of {', '.join(GGUF_CONVERTER_QUANTS)}.",
        ),
    )


@dataclass
class ExportConfig(SourceCommandConfig):
    output_dir: str = MISSING  # where adapter/, merged/, gguf/, config.yaml and the model card go
    format: ExportFormat = MISSING  # hf (adapter, merged/ with merge=true), gguf (merged model) or gguf_lora
    gguf: GgufConfig = field(default_factory=GgufConfig)
    merge: bool = MISSING  # also write one merged checkpoint
    register: bool = MISSING  # add the adapter to the MLflow Model Registry
    registered_name: str | None = None  # the registered model's name
    push_to_hub: bool = MISSING  # upload output_dir to the Hugging Face Hub
    hub_repo: str | None = None  # <user or org>/<name> on the Hub
    hub_private: bool = MISSING  # new Hub repositories start private

    REQUIRED: ClassVar[dict[str, str]] = {
        **SourceCommandConfig.REQUIRED,
        "output_dir": "output_dir is required: where adapter/, the model card and merged/ go.",
    }

    @staticmethod
    def check(node: DictConfig, key: str, root: DictConfig) -> None:
        if node.register and not node.registered_name:
            raise UserError(
                "register=true needs registered_name=<name>, the registered model to add a version to."
            )
        if node.push_to_hub and not node.hub_repo:
            raise UserError(
                "push_to_hub=true needs hub_repo=<user or org>/<name>, the Hub repository to upload to."
            )


@dataclass
class ChatConfig(SourceCommandConfig):
    precision: Precision = MISSING  # dtype the model runs in: auto, bf16, fp16 or fp32 (bf16_autocast: fp32)
    temperature: float = MISSING  # 0 = greedy
    top_p: float = MISSING  # nucleus sampling mass, in (0, 1]
    max_new_tokens: int = MISSING  # longest answer, in tokens
    model_name: str | None = None  # the name shown; null = medexp-<run id>

    @staticmethod
    def check(node: DictConfig, key: str, root: DictConfig) -> None:
        if node.temperature < 0 or not 0 < node.top_p <= 1 or node.max_new_tokens < 1:
            raise UserError(
                f"temperature must be >= 0 (got {node.temperature}), top_p in (0, 1] (got {node.top_p}) and "
                f"max_new_tokens >= 1 (got {node.max_new_tokens})."
            )


def _count(name: str, least: int, meaning: str) -> Rule:
    """`name` >= least (1 or 0), worded for a limit of the server: what it bounds, with an example."""

    def rule(node: Any, key: str) -> str | None:
        value = node[name]
        if value >= least:
            return None
        kind = "a positive whole number" if least else "a whole number, 0 or more"
        return f"{dotted(key, name)} must be {kind}, got {value!r}: {meaning}."

    return rule


def _seconds(name: str, meaning: str) -> Rule:
    """`name` is a finite number of seconds above 0."""

    def rule(node: Any, key: str) -> str | None:
        value = node[name]
        if 0 < value < math.inf:
            return None
        return f"{dotted(key, name)} must be a positive number of seconds, got {value!r}: {meaning}."

    return rule


def _port(node: Any, key: str) -> str | None:
    if 1 <= node.port <= 65535:
        return None
    name = dotted(key, "port")
    return f"{name} must be a whole number from 1 to 65535, got {node.port!r}. For example: {name}=8000."


@dataclass
class ServeLimits:
    max_tokens: int = MISSING  # the most tokens one request may ask for
    default_max_tokens: int = MISSING  # when a request gives no max_tokens; at most max_tokens
    max_message_chars: int = MISSING  # total characters over all messages of a request
    max_body_bytes: int = MISSING  # the largest request body read, in bytes; more is a 413 before any parsing
    max_concurrent: int = MISSING  # requests generating at once, their sequences decoded together in batches
    max_batch: int = MISSING  # the most sequences decoded in one forward pass; more wait for a finished one
    max_queue: int = MISSING  # requests allowed to wait for a generation slot (0 or more); more get a 503
    queue_timeout_s: float = MISSING  # the longest a request waits for a slot before a 503 with Retry-After
    max_n: int = MISSING  # the most choices one request may take: n times a completions request's prompts

    RULES: ClassVar[Rules] = (
        _count("max_tokens", 1, "the most tokens one request may ask for, e.g. 1024"),
        _count("default_max_tokens", 1, "the tokens a request without max_tokens gets, e.g. 256"),
        _count("max_message_chars", 1, "the most characters over all messages of a request, e.g. 16000"),
        _count("max_body_bytes", 1, "the largest request body read, in bytes, e.g. 262144"),
        _count("max_concurrent", 1, "how many requests generate at once, e.g. 16"),
        _count("max_batch", 1, "the most sequences decoded together in one forward pass, e.g. 16"),
        _count("max_queue", 0, "how many requests may wait for a generation slot (0: none wait), e.g. 16"),
        _count(
            "max_n",
            1,
            "the most choices one request may ask for (n, times a completions request's prompts), e.g. 8",
        ),
        _seconds(
            "queue_timeout_s",
            "how long a request may wait for a generation slot before it gets a 503 with Retry-After. For example: 60",
        ),
    )

    @staticmethod
    def check(node: DictConfig, key: str, root: DictConfig) -> None:
        if node.default_max_tokens > node.max_tokens:
            raise UserError(
                f"{dotted(key, 'default_max_tokens')}={node.default_max_tokens} is over {dotted(key, 'max_tokens')}="
                f"{node.max_tokens}: a request without max_tokens would ask for more than the cap."
            )


@dataclass
class ServeConfig(SourceCommandConfig):
    source: Any = MISSING  # one trained model (run id, run dir, models:/...) or a list of them: [A,B]
    host: str = MISSING  # the address to bind; any but loopback is warned about (there is no authentication)
    port: int = MISSING  # the TCP port to listen on, 1-65535
    precision: Precision = MISSING  # dtype the model runs in: auto, bf16, fp16 or fp32 (bf16_autocast: fp32)
    model_name: str | None = None  # the id /v1/models reports for a single source; null = medexp-<run id>
    merge: bool | None = (
        None  # fold the adapter into the weights for generation; null = when one adapter serves
    )
    limits: ServeLimits = field(default_factory=ServeLimits)

    RULES: ClassVar[Rules] = (_port,)

    @staticmethod
    def check(node: DictConfig, key: str, root: DictConfig) -> None:
        """Policy, not a refusal: the server has no authentication, so binding beyond loopback is warned about."""
        if node.host not in ("127.0.0.1", "localhost", "::1"):
            print(
                f"medexp: warning: serving on {node.host}, reachable from other machines; there is no authentication.",
                file=sys.stderr,
            )


@dataclass
class SyncConfig:
    paths: PathsConfig = MISSING
    runs: str = MISSING  # a run's output directory, or a folder of them
    mark_stale: bool = MISSING  # mark RUNNING runs whose process is gone as KILLED


ROOTS: dict[str, type] = {
    "train": TrainConfig,
    "evaluate": EvaluateConfig,
    "benchmark": BenchmarkConfig,
    "export": ExportConfig,
    "chat": ChatConfig,
    "serve": ServeConfig,
    "sync": SyncConfig,
}


def register_configs() -> None:
    """Store every schema in Hydra's ConfigStore (idempotent: storing again replaces the same node)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for group, node in GROUPS.items():
        cs.store(group=group, name="schema", node=node, provider="medexp")
    for command, node in ROOTS.items():
        cs.store(name=f"{command}_schema", node=node, provider="medexp")
