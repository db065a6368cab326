"""TRL SFTTrainer built from the `trainer` group, on pre-tokenized data with loss on answer tokens only; the
training arguments every stage kind shares (medexp.training.preference builds the DPO trainer from them)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from medexp.data import PreparedData

log = logging.getLogger(__name__)


def training_arguments(cfg: DictConfig, output_dir: Path, precision: str) -> dict[str, Any]:
    """The transformers TrainingArguments every stage kind shares (SFTConfig and DPOConfig take them all)."""
    import torch

    from medexp.config.runtime import gradient_accumulation

    t = cfg.trainer
    return {
        "output_dir": str(output_dir / "checkpoints"),
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "learning_rate": t.learning_rate,
        "lr_scheduler_type": t.lr_scheduler,
        "warmup_steps": float(t.warmup_ratio),  # a float in [0, 1) is a ratio of all steps in transformers 5
        "weight_decay": t.weight_decay,
        "max_grad_norm": t.max_grad_norm,
        "num_train_epochs": t.epochs,
        "max_steps": t.max_steps,
        "per_device_train_batch_size": t.batch_size,
        "per_device_eval_batch_size": t.eval_batch_size,
        # from trainer.effective_batch_size when it is set
        "gradient_accumulation_steps": gradient_accumulation(t),
        "eval_strategy": "steps",
        "eval_steps": t.eval_steps,
        "save_strategy": "steps",
        "save_steps": t.eval_steps,  # checkpoint at every evaluation, so the best one can be kept and reloaded
        "save_total_limit": t.save_total_limit,
        "restore_callback_states_from_checkpoint": True,  # a resumed run keeps its early-stopping patience count
        "load_best_model_at_end": True,
        "metric_for_best_model": "eval_loss",
        "greater_is_better": False,
        "logging_steps": t.logging_steps,
        # on a CPU too: with use_cpu, accelerate wraps the forward in torch.autocast("cpu", torch.bfloat16)
        "bf16": precision in ("bf16", "bf16_autocast"),
        "fp16": precision == "fp16",
        # Always explicit: TRL's SFTConfig turns checkpointing on by default; the gradient_* names are deprecated.
        "activation_checkpointing": bool(t.gradient_checkpointing),
        "activation_checkpointing_kwargs": {"use_reentrant": False} if t.gradient_checkpointing else None,
        "optim": t.optim,
        "dataloader_num_workers": t.dataloader_num_workers,
        "dataloader_pin_memory": torch.cuda.is_available(),
        # without a GPU: says so to accelerate, which then runs a torchrun launch as CPU data parallel (gloo)
        # instead of N independent copies of the run
        "use_cpu": not torch.cuda.is_available() and not torch.backends.mps.is_available(),
        "prediction_loss_only": True,  # evaluation needs the loss only, not the logits
        "include_num_input_tokens_seen": "non_padding",
        "report_to": "none",  # medexp's own MetricsCallback logs to MLflow
        "disable_tqdm": True,  # no nested train/eval bars: medexp.training.progress draws the one training bar
    }


def trl_trainer(
    trainer_class: type,
    args: Any,
    cfg: DictConfig,
    model: Any,
    tokenizer: Any,
    data: PreparedData,
    callbacks: list[Any],
    early_stopping: bool = True,
    **extra: Any,
) -> Any:
    """A TRL trainer of every stage kind on the stage's splits, with medexp's callbacks (and early stopping when
    trainer.early_stopping_patience is set and `early_stopping`); `extra` goes to the trainer (GRPO's rewards)."""
    from transformers import EarlyStoppingCallback, PrinterCallback

    from medexp.console import library_bars_off

    patience = cfg.trainer.early_stopping_patience
    if early_stopping and patience is not None:
        callbacks = [*callbacks, EarlyStoppingCallback(early_stopping_patience=patience)]
    # TRL's tokenizing / "Building labels" maps over the already tokenized splits are bars of no interest.
    with library_bars_off():
        trainer = trainer_class(
            model=model,
            args=args,
            train_dataset=data.train,
            eval_dataset=data.validation,
            processing_class=tokenizer,
            callbacks=callbacks,
            **extra,
        )
    # With disable_tqdm the Trainer prints every log as a raw dict instead; MetricsCallback still gets them all.
    trainer.remove_callback(PrinterCallback)
    return trainer


def build_trainer(
    cfg: DictConfig, model, tokenizer, data: PreparedData, output_dir: Path, precision: str, callbacks
):
    import torch
    from trl import SFTConfig, SFTTrainer

    from medexp.training.answer_head import score_answer_tokens_only
    from medexp.training.batching import check_examples_isolated, choose_batching
    from medexp.training.eval_loss import token_mean_eval
    from medexp.training.memory_plan import apply, checkpoint_kwargs, plan_run

    batching = choose_batching(cfg.trainer, cfg.model, cuda=torch.cuda.is_available())
    log.info("precision %s, batching %s (%s)", precision, batching.mode, batching.reason)
    # the longest batch against trainer.memory_budget_gb: checkpointing, head tiles, micro-batches if over it
    memory = plan_run(cfg, model, data.train, precision, packing=batching.mode == "packing")
    if memory is not None:
        log.info("%s", memory.line())
        cfg = apply(cfg, memory)
    t = cfg.trainer
    if batching.mode in ("padding_free", "packing"):
        check_examples_isolated(model, str(cfg.model.attn_implementation), batching.mode)
    args = SFTConfig(
        **checkpoint_kwargs(memory, training_arguments(cfg, output_dir, precision)),
        neftune_noise_alpha=t.neftune_noise_alpha,  # transformers adds the noise in training only
        # pairs over dataset.max_tokens were already dropped, never truncated; packing uses it as its block size
        **batching.trainer_kwargs(block_tokens=int(cfg.dataset.max_tokens)),
        completion_only_loss=True,  # loss on the answer tokens (completion_mask) only
    )
    trainer = trl_trainer(token_mean_eval(SFTTrainer), args, cfg, model, tokenizer, data, callbacks)
    columns = memory.levers.head_columns if memory is not None else None
    if score_answer_tokens_only(trainer.model, columns):
        log.info("LM head projects answer tokens only (medexp.training.answer_head)")
    # after the adapters and the answer head are in place: the blocks as they train
    if t.get("compile", False):
        from medexp.training.compile import compile_blocks

        compile_blocks(trainer.model)
    trainer.memory_plan = memory  # its MLflow params: medexp.training.stage logs them with the stage's run
    return trainer
