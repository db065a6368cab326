"""The trainer group's schema and its ranges and cross-field rules (a stage's `trainer` overrides are checked
on the stage's merged trainer, by TrainConfig.check). See medexp/config/schema.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from omegaconf import MISSING, DictConfig

from medexp.config.choices import Batching, GrpoLoss, Precision, PreferenceLoss, RolloutEngine
from medexp.config.errors import UserError
from medexp.config.rules import Rules, between, positive, require
from medexp.config.runtime import gradient_accumulation


def _memory_budget(node: DictConfig, key: str) -> str | None:
    """trainer.memory_budget_gb: auto, null or a positive number of GB (a string node: Hydra gives `8` as "8")."""
    value = node.memory_budget_gb
    if value is None or value == "auto":
        return None
    try:
        ok = float(value) > 0
    except ValueError:
        ok = False
    if ok:
        return None
    return (
        f"{key}.memory_budget_gb must be auto, null or a positive number of GB, got {value!r}. auto plans for what "
        f"this machine has free; a number plans for that much, e.g. {key}.memory_budget_gb=8; null plans nothing."
    )


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
    compile: bool = False  # torch.compile (inductor) of the decoder blocks; compiling costs minutes once
    memory_budget_gb: str | None = (
        "auto"  # peak memory to plan training for: auto = what the device has free, a number in GB, null = no plan
    )
    optim: str = MISSING  # any transformers optimizer name, e.g. adamw_torch, paged_adamw_8bit
    dataloader_num_workers: int = MISSING  # worker processes feeding batches
    neftune_noise_alpha: float | None = (
        None  # NEFTune: noise on the input embeddings while training; null = off
    )
    beta: float = 0.1  # dpo stages: the KL leash; larger keeps the policy closer to the reference
    preference_loss: PreferenceLoss = PreferenceLoss.sigmoid  # dpo stages: TRL's loss_type
    preference_sft_weight: float = 0.0  # dpo stages: + this x the chosen answers' SFT loss (RPO); 0 = off
    kto_desirable_weight: float = 1.0  # kto stages: weight of the desirable rows' loss (TRL's default)
    kto_undesirable_weight: float = 1.0  # kto stages: weight of the undesirable rows' loss (TRL's default)
    simpo_gamma: float = 0.5  # simpo stages: the target reward margin over beta (TRL's default)
    grpo_num_generations: int = 4  # grpo stages: completions per prompt, compared within their group
    grpo_max_completion_length: int = 128  # grpo stages: tokens a completion may have before it is cut
    grpo_temperature: float = 1.0  # grpo stages: sampling temperature of the rollouts (diversity in a group)
    grpo_beta: float = 0.0  # grpo stages: KL leash to the stage's starting model; 0 = none, no reference pass
    grpo_loss: GrpoLoss = GrpoLoss.dapo  # grpo stages: how token losses are averaged (TRL's loss_type)
    rollout_engine: RolloutEngine = RolloutEngine.transformers  # grpo stages: what generates the rollouts

    RULES: ClassVar[Rules] = (
        require(
            "learning_rate",
            lambda v: v > 0,
            "{key} must be positive, got {value}. LoRA runs usually use 1e-4 to 3e-4, e.g. {key}=2e-4.",
        ),
        between("warmup_ratio", 0, 1, high_open=True),
        require("weight_decay", lambda v: v >= 0, "{key} must be >= 0, got {value}."),
        require("max_grad_norm", lambda v: v > 0, "{key} must be positive, got {value}."),
        positive("batch_size", 8),
        positive("eval_batch_size", 16),
        positive("gradient_accumulation_steps", 1),
        positive("eval_steps", 100),
        positive("logging_steps", 10),
        require("epochs", lambda v: v >= 0, "{key} must be positive, got {value}. For example {key}=3."),
        require(
            "neftune_noise_alpha",
            lambda v: v > 0,
            "{key} must be positive, got {value}: 5 is the NEFTune paper's value; null turns the noise off.",
        ),
        require(
            "beta",
            lambda v: v > 0,
            "{key} must be positive, got {value}: it is the strength of the KL leash that keeps a DPO stage near "
            "its starting model (0 would be no leash at all). 0.1 is TRL's default; 0.01-0.5 is usual.",
        ),
        require(
            "preference_sft_weight",
            lambda v: v >= 0,
            "{key} must be >= 0, got {value}: 0 is plain DPO, 1 adds the chosen answers' SFT loss at full weight.",
        ),
        require(
            "kto_desirable_weight",
            lambda v: v > 0,
            "{key} must be positive, got {value}: the weight of the desirable rows' KTO loss (1 = TRL's default).",
        ),
        require(
            "kto_undesirable_weight",
            lambda v: v > 0,
            "{key} must be positive, got {value}: the weight of the undesirable rows' KTO loss (1 = TRL's "
            "default).",
        ),
        require(
            "simpo_gamma",
            lambda v: v >= 0,
            "{key} must be >= 0, got {value}: SimPO's target reward margin (0.5 = TRL's default).",
        ),
        require(
            "grpo_num_generations",
            lambda v: v >= 2,
            "{key} must be at least 2, got {value}: GRPO compares "
            "completions within a group, and one has nothing to be compared with. 4-16 is usual.",
        ),
        positive("grpo_max_completion_length", 256),
        require(
            "grpo_temperature",
            lambda v: v > 0,
            "{key} must be positive, got {value}: 1.0 samples as "
            "the model predicts; near 0 every completion of a group is the same and nothing is learned.",
        ),
        require(
            "grpo_beta",
            lambda v: v >= 0,
            "{key} must be >= 0, got {value}: 0 is no KL leash (TRL's "
            "default), 0.001-0.04 the usual leash to the stage's starting model.",
        ),
        positive("early_stopping_patience", 3),  # null = never stop early
        positive("effective_batch_size", 16),  # null = batch_size x gradient_accumulation_steps
        _memory_budget,
    )

    @staticmethod
    def check(node: DictConfig, key: str, root: DictConfig) -> None:
        """The run has a length, evaluates within it, and reaches its effective batch in whole steps."""
        if node.max_steps <= 0 and node.epochs <= 0:
            raise UserError(
                f"{key}.epochs must be positive when {key}.max_steps is not set, got {node.epochs}. "
                f"For example {key}.epochs=3, or {key}.max_steps=500."
            )
        if node.max_steps > 0 and node.eval_steps > node.max_steps:
            raise UserError(
                f"{key}.eval_steps={node.eval_steps} is more than {key}.max_steps={node.max_steps}, so the run "
                "would never evaluate: no eval_loss, no best checkpoint, nothing for a sweep to compare. Set "
                f"{key}.eval_steps to at most {node.max_steps}, e.g. {key}.eval_steps={max(1, node.max_steps // 4)}."
            )
        if node.effective_batch_size is not None:
            gradient_accumulation(node)  # a multiple of batch_size x the launch's processes
