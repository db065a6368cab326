"""The typed schema of every config group, and the root of `medexp.train` (the other commands' roots are in
medexp/config/commands.py, which registers them all).

Each dataclass is registered in Hydra's ConfigStore: a group's schema as `<group>/schema` (every YAML option of
the group names it first in its defaults list) and each command's root as `<command>_schema` (first in
conf/<command>.yaml). OmegaConf then refuses an unknown key or a value of the wrong type while Hydra composes
the config, before anything heavy is imported; `medexp.config.errors` turns that into one paragraph.

Values live in the YAML options (with a comment on why); the schema holds types and what each field means.
`MISSING` (`???`) marks a value every option must set. Closed sets are the enums of medexp.config.choices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from medexp.config.choices import (
    AttnImplementation,
    Batching,
    ComputeDtype,
    LoraBias,
    LoraInit,
    ModelDtype,
    Precision,
    PreferenceLoss,
    QuantType,
)


# --- model -------------------------------------------------------------------------------------------------
@dataclass
class ModelConfig:
    name_or_path: str = MISSING  # a hub id, a local directory, or a model in the HF cache
    license: str | None = None  # the base model's license, copied into exported model cards
    revision: str | None = None  # hub branch, tag or commit to pin; null = main
    trust_remote_code: bool = False  # run code shipped with the model; only for repositories you trust
    attn_implementation: AttnImplementation = AttnImplementation.sdpa  # attention kernel transformers uses
    dtype: ModelDtype = ModelDtype.auto  # dtype the weights are loaded in


# --- dataset -----------------------------------------------------------------------------------------------
@dataclass
class NearDupConfig:
    threshold: float | None = MISSING  # Jaccard similarity at which a pair is a near duplicate; null = off
    num_perm: int = MISSING  # MinHash permutations: more = tighter estimate, slower


@dataclass
class DatasetConfig:
    name: str | None = MISSING  # hub id; null when `path` names a local file
    path: str | None = MISSING  # local .csv/.json/.jsonl/.parquet; used instead of `name` when set
    subset: str | None = None  # the hub dataset's configuration (e.g. pqa_labeled); null = its default
    split: str = MISSING  # the hub split to read; medexp makes its own validation split from it
    license: str | None = None  # the data's license, listed in exported model cards
    question_field: str | None = None  # null = detect among common names (Question, question, input, ...)
    answer_field: str | None = None  # null = detect among common names (Answer, answer, output, ...)
    context_field: str | None = None  # a passage shown above the question (PubMedQA's abstract)
    input_field: str | None = None  # alpaca's input, shown below the instruction; null = detect `input`
    decision_field: str | None = None  # a yes/no/maybe verdict put first in the answer
    messages_field: str | None = None  # multi-turn chats (OpenAI messages / ShareGPT); null = detect
    kind: str = MISSING  # qa, multiple_choice, conversation, text, preference (medexp.data.readers)
    text_field: str | None = (
        None  # text: the column holding each document; null = detect (text, content, ...)
    )
    chosen_field: str | None = None  # preference: the preferred answer's column; null = detect `chosen`
    rejected_field: str | None = None  # preference: the dispreferred answer's; null = detect `rejected`
    options_field: str | None = None  # multiple_choice: the field holding all options (dict or list)
    option_columns: list[str] | None = None  # multiple_choice: or one column per option, in order
    index_base: int | None = None  # multiple_choice: 0 or 1 when the answer is an index; null otherwise
    dedup: bool = MISSING  # drop exact repeated pairs (after folding case, whitespace, punctuation)
    near_dup: NearDupConfig = field(default_factory=NearDupConfig)  # MinHash LSH near-duplicate removal
    max_tokens: int = MISSING  # drop pairs whose formatted conversation is longer, in tokens
    limit: int | None = None  # keep only the first N cleaned pairs (seeded shuffle); null = all
    weight: float = MISSING  # in a mixture: copies of each training row (0.5 = a seeded half)
    val_fraction: float = MISSING  # share of questions held out for validation
    system_prompt: str = MISSING  # the system message every conversation starts with


# --- lora --------------------------------------------------------------------------------------------------
@dataclass
class QuantizationConfig:
    bits: int = MISSING  # 4 or 8-bit base weights (bitsandbytes)
    quant_type: QuantType = QuantType.nf4  # 4-bit data type
    double_quant: bool = True  # quantize the quantization constants too
    compute_dtype: ComputeDtype = ComputeDtype.bfloat16  # dtype of the matmuls on dequantized weights


@dataclass
class LoraConfig:
    r: int = MISSING  # adapter rank
    alpha: float = MISSING  # scaling = alpha / r
    dropout: float = MISSING  # dropout on the adapter input, in [0, 1)
    target_modules: Any = MISSING  # "all-linear" or a list of module names (peft)
    bias: LoraBias = LoraBias.none  # which biases train besides the adapters
    use_dora: bool = False  # DoRA: a trained magnitude per output feature besides the low-rank direction
    use_rslora: bool = False  # rsLoRA: scaling = alpha / sqrt(r), so a large rank still learns
    init: LoraInit = LoraInit.default  # how A and B start (pissa / olora move part of W into the adapter)
    train_modules: list[str] = field(default_factory=list)  # modules trained in full (modules_to_save)
    quantization: QuantizationConfig | None = None  # null = full-precision base; set = QLoRA


# --- trainer -----------------------------------------------------------------------------------------------
@dataclass
class TrainerConfig:
    learning_rate: float = MISSING  # peak learning rate of the adapters
    lr_scheduler: str = MISSING  # any transformers scheduler name: cosine, linear, constant, ...
    warmup_ratio: float = MISSING  # share of all steps spent warming up, in [0, 1)
    weight_decay: float = MISSING  # AdamW weight decay, >= 0
    max_grad_norm: float = MISSING  # gradient clipping norm, > 0
    epochs: float = MISSING  # passes over the training split (when max_steps <= 0)
    max_steps: int = MISSING  # > 0 stops after that many optimizer steps, overriding epochs
    batch_size: int = MISSING  # sequences per device per forward pass
    eval_batch_size: int = MISSING  # sequences per device per evaluation pass
    gradient_accumulation_steps: int = MISSING  # forward passes per optimizer step
    effective_batch_size: int | None = (
        None  # sequences per optimizer step on any number of processes; sets accumulation
    )
    eval_steps: int = MISSING  # evaluate and checkpoint every N optimizer steps
    logging_steps: int = MISSING  # log train_loss, learning_rate, grad_norm every N steps
    early_stopping_patience: int | None = (
        None  # evaluations without improvement before stopping; null = never
    )
    save_total_limit: int = MISSING  # checkpoints kept besides the best one
    precision: Precision = MISSING  # mixed precision of the training step
    batching: Batching = MISSING  # auto, padding_free, packing, group_by_length or padded
    gradient_checkpointing: bool = MISSING  # recompute activations in the backward pass to save memory
    optim: str = MISSING  # any transformers optimizer name, e.g. adamw_torch, paged_adamw_8bit
    dataloader_num_workers: int = MISSING  # worker processes feeding batches
    neftune_noise_alpha: float | None = (
        None  # NEFTune: noise on the input embeddings while training; null = off
    )
    beta: float = 0.1  # dpo stages: the KL leash; larger keeps the policy closer to the reference
    preference_loss: PreferenceLoss = PreferenceLoss.sigmoid  # dpo stages: TRL's loss_type
    preference_sft_weight: float = 0.0  # dpo stages: + this x the chosen answers' SFT loss (RPO); 0 = off


# --- eval --------------------------------------------------------------------------------------------------
@dataclass
class JudgeConfig:
    enabled: bool = MISSING  # ask an LLM behind an OpenAI-compatible endpoint for a second opinion
    base_url: str | None = None  # e.g. http://127.0.0.1:8000/v1
    model: str | None = None  # the judge model's name at that endpoint
    api_key_env: str = "OPENAI_API_KEY"  # the environment variable holding the key (never the key itself)


@dataclass
class GenerationEvalConfig:
    enabled: bool = MISSING  # answer held-out questions and compare with the references
    num_questions: int = MISSING  # held-out questions answered
    max_new_tokens: int = MISSING  # longest generated answer, in tokens
    batch_size: int = MISSING  # prompts per generate call (left-padded); the answers equal one-at-a-time ones
    latency_samples: int = MISSING  # prompts asked again one at a time for latency_p50_s/p95_s; 0 = none
    repetition_penalty: float = MISSING  # 1.0 = off
    semantic_similarity: bool = MISSING  # embedding cosine of answer and reference
    semantic_model: str | None = None  # sentence-transformers id or path; null = bundled all-MiniLM-L6-v2
    bertscore: bool = False  # BERTScore F1 of answer and reference (bert-score)
    bertscore_model: str | None = None  # hub id or path; null = the bundled all-MiniLM-L6-v2
    bertscore_layers: int | None = None  # layer compared; null = bert-score's tuned one, or the last
    judge: JudgeConfig = field(default_factory=JudgeConfig)  # LLM grades of answer quality, 1-5 per criterion


@dataclass
class MCEvalConfig:
    enabled: bool = MISSING  # multiple-choice accuracy by option log-likelihood
    validation: bool = MISSING  # score the run's own multiple-choice validation questions
    limit: int = MISSING  # at most this many questions per set
    sets: dict[str, DatasetConfig] = field(default_factory=dict)  # more sets, each a dataset option


@dataclass
class OODEvalConfig:
    enabled: bool = MISSING  # out-of-domain prompts, to catch forgetting


@dataclass
class SafetyEvalConfig:
    enabled: bool = MISSING  # answer the embedded safety probes, score them per category
    classifier: bool = MISSING  # also flag what the learned classifier is sure is unsafe
    judge: JudgeConfig = field(default_factory=JudgeConfig)


@dataclass
class EvalConfig:
    metrics: list[str] = MISSING  # held-out metrics: loss, perplexity
    before_training: bool = MISSING  # also evaluate the untouched base model (eval/base/*)
    generation: GenerationEvalConfig = field(default_factory=GenerationEvalConfig)
    mc: MCEvalConfig = field(default_factory=MCEvalConfig)
    ood: OODEvalConfig = field(default_factory=OODEvalConfig)
    safety: SafetyEvalConfig = field(default_factory=SafetyEvalConfig)
    prompts_file: str | None = None  # your own questions (.txt or .jsonl), answered by both models
    report: bool = MISSING  # write report.html + report.md and log them


# --- tracking, paths ---------------------------------------------------------------------------------------
@dataclass
class TrackingConfig:
    enabled: bool = MISSING  # false = log nothing; outputs still land in the run directory
    uri: str = MISSING  # any MLflow tracking URI: sqlite:///..., http://host:port, databricks
    artifact_location: str | None = None  # for new experiments on a local store; a server picks its own
    experiment: str = MISSING  # MLflow experiment name; created on first use
    run_name: str | None = None  # null = MLflow's generated name
    log_adapter: bool = MISSING  # upload adapter/ as a run artifact
    system_metrics_interval: float | None = (
        None  # seconds between CPU/GPU/memory samples (system/*); null = off
    )


@dataclass
class PathsConfig:
    output_root: str = MISSING  # one folder per single run under it
    multirun_root: str = MISSING  # one folder per sweep under it
    output_dir: str = MISSING  # this run's folder
    mlruns_dir: str = MISSING  # the embedded MLflow store
    assets_dir: str = MISSING  # the tiny model and sample data shipped inside the package


# --- roots -------------------------------------------------------------------------------------------------
@dataclass
class StageConfig:
    dataset: DatasetConfig = MISSING  # the stage's data: +dataset@stages.<name>.dataset=<option>
    kind: str | None = None  # sft, pretrain, dpo (medexp.training.methods); null = its data's default kind
    trainer: dict[str, Any] = field(default_factory=dict)  # trainer settings this stage changes


@dataclass
class OptunaTrialConfig:
    storage: str | None = None  # the study's database URL (set by the sweeper)
    study_name: str | None = None  # the study's name in that database
    trial: int | None = None  # this run's trial number in the study


@dataclass
class TrainConfig:
    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    lora: LoraConfig = MISSING
    trainer: TrainerConfig = MISSING
    eval: EvalConfig = MISSING
    tracking: TrackingConfig = MISSING
    paths: PathsConfig = MISSING
    seed: int = MISSING  # one seed for data split, LoRA init and data order
    optimized_metric: Any = MISSING  # what train() returns to a sweeper; a list for a multi-objective study
    mixture: dict[str, DatasetConfig] = field(default_factory=dict)  # more datasets trained with `dataset`
    stages: dict[str, StageConfig] = field(default_factory=dict)  # train in stages, in order
    optuna: OptunaTrialConfig = field(default_factory=OptunaTrialConfig)  # set per trial by the sweeper
    resume: str | None = None  # continue a run that died: its output directory or MLflow run id


GROUPS: dict[str, type] = {
    "model": ModelConfig,
    "dataset": DatasetConfig,
    "lora": LoraConfig,
    "trainer": TrainerConfig,
    "eval": EvalConfig,
    "tracking": TrackingConfig,
    "paths": PathsConfig,
}
