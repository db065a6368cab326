"""How examples become batches (`trainer.batching`), and what `auto` picks for the hardware.

Every mode computes the same loss per answer token (tests/training/test_batching.py compares losses and gradients on one
fixed batch); they differ only in how much compute goes to padding:
- padded: random batches, each padded to its longest example (MedQuAD's length mix: ~49% padding at 8);
- group_by_length: transformers' LengthGroupedSampler: random mega-batches sorted by length, so each batch
  holds similar lengths (<3% padding) while the order still changes every epoch;
- padding_free: each batch is one concatenated sequence with position_ids restarting per example and no
  attention mask; transformers 5 builds the block-diagonal mask from position_ids for sdpa, eager and flex
  attention, and flash attention runs it as variable-length sequences (no padding at all);
- packing: TRL's best-fit-decreasing packing into blocks of `dataset.max_tokens`, then padding-free batches.

`auto` chooses padding-free batches where a variable-length kernel runs them (flash attention on CUDA) and
length-grouped batches elsewhere: with sdpa on a CPU, a padding-free or packed batch is one long sequence
whose dense block mask costs more than the padding it saves. The CPU figures behind that are issue 11's
(2-core CPU, sdpa, SmolLM-width model, MedQuAD rows: TRL packing 0.54x and length grouping 1.46x the padded
throughput per real token); benchmarks/throughput.py measures medexp's modes against plain TRL, and its full
run is still to be recorded in the README. sdpa on CUDA is grouped too until measured on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

FLASH_ATTENTION = ("flash_attention_2", "flash_attention_3")


@dataclass(frozen=True)
class BatchingChoice:
    mode: str  # padding_free, packing, group_by_length or padded
    reason: str  # why, for the log line and the run's params

    def trainer_kwargs(self, block_tokens: int) -> dict:
        """SFTConfig arguments for this mode; `block_tokens` is the packing block (dataset.max_tokens)."""
        return {
            "padding_free": self.mode == "padding_free",
            "packing": self.mode == "packing",
            "packing_strategy": "bfd",  # best-fit decreasing: whole examples per block, none split
            "max_length": block_tokens if self.mode == "packing" else None,  # pairs were length-filtered
            "train_sampling_strategy": "group_by_length" if self.mode == "group_by_length" else "random",
        }


def choose_batching(trainer_cfg: DictConfig, model_cfg: DictConfig, cuda: bool) -> BatchingChoice:
    """The batching mode a run uses: the one asked for, or for `auto` the fastest measured for the device."""
    asked = str(trainer_cfg.batching)
    if asked != "auto":
        return BatchingChoice(asked, "set by trainer.batching")
    attention = str(model_cfg.attn_implementation)
    if cuda and attention in FLASH_ATTENTION:
        return BatchingChoice("padding_free", f"auto: {attention} on CUDA runs variable-length sequences")
    where = "CUDA" if cuda else "CPU"
    return BatchingChoice(
        "group_by_length",
        f"auto: {attention} on {where} pays for a dense block mask in padding-free batches; "
        "length-grouped batches are the fastest measured there",
    )


def check_examples_isolated(model, attention: str, mode: str) -> None:
    """Padding-free and packed batches rely on the model building a block-diagonal mask from position_ids
    (transformers' own Llama-family code does; remote code or an older architecture may not). Check it on two
    made-up 8-token sequences before training: the second one's logits must be the same alone as behind the first.
    """
    import torch

    from medexp.config import UserError

    was_training = model.training
    model.eval()  # no LoRA dropout: both passes must compute the same function
    try:
        device = next(model.parameters()).device
        first, second = torch.arange(3, 11, device=device)[None], torch.arange(11, 19, device=device)[None]
        positions = torch.arange(8, device=device).repeat(2)[None]
        with torch.no_grad():  # use_cache=False as the Trainer runs it: a cache turns the block mask off
            alone = model(input_ids=second, use_cache=False).logits[0].float()
            joined = model(input_ids=torch.cat([first, second], 1), position_ids=positions, use_cache=False)
            joined = joined.logits[0, 8:].float()
    finally:
        model.train(was_training)
    # 2% of the logits' scale: far above bf16 rounding, far below what attending to another example changes
    if (joined - alone).abs().max() > 0.02 * alone.abs().max():
        raise UserError(
            f"trainer.batching={mode} needs a model that keeps the examples of a concatenated batch apart, and this "
            f"one ({type(model).__name__} with attn_implementation={attention}) lets them attend to each other: "
            "training would mix examples. Use trainer.batching=group_by_length (or padded), or a model whose "
            "attention builds its mask from position_ids (transformers' Llama-family models with sdpa, eager, flex "
            "or flash attention)."
        )
