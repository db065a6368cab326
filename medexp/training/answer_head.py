"""Score only the answer tokens through the LM head on a CPU (or MPS), as TRL already does on CUDA.

TRL 1.x replaces the causal LM's forward with a fused LM head (`trl.trainer.utils.add_fused_lm_head`): it projects
the hidden states through the LM head in tiles and returns each next-token log-probability, without building the
(batch, length, vocab) logits. On devices with Triton it projects only the positions whose label counts; elsewhere
it projects every position, prompt and padding included, and zeroes the ignored ones afterwards (a fixed tile shape
avoids recompiling on XLA/Neuron). With loss on answer tokens only, the system prompt and question are a quarter
or more of a MedQuAD conversation, and SmolLM's 49,152-row LM head is most of a small model's step on a CPU, so
those projections are a large share of the step for nothing. `score_answer_tokens_only` re-installs the fused
forward with the compact projection on CPU/MPS: the same kernel (`trl.kernels.ChunkedLogProbFunction`) on the
gathered answer positions, scattered back into the (batch, length - 1) shape TRL's `compute_loss` reads. Loss,
gradients and TRL's entropy / accuracy metrics are unchanged (tests/training/test_answer_head.py); models whose head TRL
scales, soft-caps or pairs with a router loss keep TRL's forward.

TRL's kernel recomputes each logits tile in its backward (three matmuls with the LM head, memory-lean). On a CPU,
memory is rarely what limits a LoRA run, so while the answer positions' fp32 logits fit in STORED_LOGITS_BYTES
they are kept for the backward instead: two matmuls, about half the head's time (measured by
benchmarks/throughput.py); larger batches, and bf16/fp16, go through TRL's kernel.
"""

from __future__ import annotations

import types

# Text-config fields that make TRL's head do more than a plain projection; such models keep TRL's own forward.
_SCALED_HEAD = (
    "final_logit_softcapping",
    "logit_scale",
    "output_multiplier",
    "lm_head_multiplier",
    "logits_scaling",
)
_CHUNK = 32768  # vocabulary columns per tile, TRL's own _CHUNKED_LOGPROB_CHUNK_SIZE
# Kept logits (answer tokens x vocab x 4 bytes) up to this: ~10k answer tokens of a 49,152-token vocabulary. The
# backward briefly needs about three times as much again.
STORED_LOGITS_BYTES = 2 * 2**30
# rows per pass of the entropy / accuracy computation, which needs a softmax-sized temporary
_METRIC_ROWS = 1024
# TRL's metrics read these; their computation is part of the same tiled pass.
_OUTPUTS = ("log_probs", "entropy", "is_top1")


def _stored_logits_head(hidden, weight, bias, targets):
    """TRL's (log_probs, entropy, None, None, is_top1) for fp32 rows, with the logits kept for the backward."""
    import torch

    logits = hidden @ weight.T if bias is None else torch.addmm(bias, hidden, weight.T)
    logz = torch.logsumexp(logits, dim=-1)
    log_probs = logits.gather(1, targets[:, None]).squeeze(1) - logz
    entropy = torch.empty_like(logz, requires_grad=False)
    is_top1 = torch.empty(logz.shape, dtype=torch.bool)  # TRL's dtype
    with torch.no_grad():  # metrics only, as in TRL: entropy = logZ - sum(p * logit)
        for start in range(0, logits.shape[0], _METRIC_ROWS):
            rows, z = logits[start : start + _METRIC_ROWS], logz[start : start + _METRIC_ROWS]
            p = torch.exp(rows - z[:, None])
            entropy[start : start + _METRIC_ROWS] = z - (p * rows).sum(-1)
            is_top1[start : start + _METRIC_ROWS] = rows.argmax(-1) == targets[start : start + _METRIC_ROWS]
    return log_probs, entropy, None, None, is_top1


def score_answer_tokens_only(model, columns: int | None = None) -> bool:
    """Make `model(..., fused_lm_head=True)` project only positions with a label; True when installed.

    `model` is the trainer's model after SFTTrainer added its fused head (a PEFT model or a plain causal LM). Does
    nothing on CUDA/XPU, where TRL's own head already projects only those positions, and for scaled heads.
    `columns`: always TRL's tiled kernel, with tiles this many vocabulary columns wide (trainer.memory_budget_gb's
    lever: no kept logits); None keeps the logits while they fit STORED_LOGITS_BYTES.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    device = next(base.parameters()).device
    text_config = base.config.get_text_config()
    # elsewhere TRL's head is compact already; no forward of its own on the instance: no TRL head to replace
    if device.type not in ("cpu", "mps") or "forward" not in vars(base):
        return False
    if any(getattr(text_config, name, None) is not None for name in _SCALED_HEAD):
        return False
    if getattr(text_config, "output_router_logits", False):
        return False
    trl_forward = base.forward

    def forward(
        self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None, **kwargs
    ):
        if not fused_lm_head or shift_labels is not None or kwargs.get("output_router_logits"):
            return trl_forward(
                *args,
                fused_lm_head=fused_lm_head,
                labels=labels,
                shift_labels=shift_labels,
                num_items_in_batch=num_items_in_batch,
                **kwargs,
            )
        import torch
        from trl.kernels import ChunkedLogProbFunction
        from trl.trainer.utils import FusedCausalLMOutput

        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state[:, :-1]
        labels = labels[:, 1:].to(hidden.device)
        mask = labels != -100
        head = self.get_output_embeddings()
        selected, targets = hidden[mask], labels[mask]
        kept_bytes = selected.shape[0] * head.weight.shape[0] * 4  # fp32 logits of the answer positions
        if columns is None and selected.dtype == torch.float32 and kept_bytes <= STORED_LOGITS_BYTES:
            per_token = _stored_logits_head(selected, head.weight, head.bias, targets)
        else:
            per_token = ChunkedLogProbFunction.apply(
                selected, head.weight, head.bias, targets, 1.0, columns or _CHUNK, None, 1.0, _OUTPUTS
            )
        # masked_scatter keeps an all-prompt micro-batch connected to the graph (a differentiable zero loss)
        log_probs, entropy, _, _, is_top1 = (
            None if x is None else x.new_zeros(mask.shape).masked_scatter(mask, x) for x in per_token
        )
        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(
            loss=-log_probs.sum() / torch.as_tensor(count),
            log_probs=log_probs,
            entropy=entropy,
            is_top1=is_top1,
            label_mask=mask,
        )

    base.forward = types.MethodType(forward, base)
    return True
