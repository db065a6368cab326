"""dpo: preference tuning (`stages.<name>.kind=dpo`, the default for dataset.kind=preference): TRL's DPOTrainer on
conversational prompt / chosen / rejected data, continuing the run's adapter with the model at the start of the
stage as the frozen reference. No held-out perplexity (a DPO loss has none; eval_rewards/* are logged); the
safety probes' pass rate before and after the stage, when eval.safety is on.

The reference: TRL copies a PeftModel's trained "default" adapter into a frozen "ref" adapter when no
ref_model is given (trl/trainer/dpo_trainer.py), so the KL leash holds the policy to the SFT model, not to the
bare base. medexp removes "ref" when the stage ends, so the saved adapter, the evaluation and the next stage
see the trained adapter alone.

Logged at every step besides TRL's rewards/chosen, rewards/rejected, rewards/margins, rewards/accuracies and
logps/*: `kl`, an estimate of KL(policy || reference) per response in nats: Schulman's k3 estimator
(r - 1 - log r, r = p_ref / p_policy of each response token) summed over the response tokens of the batch's
chosen and rejected answers and averaged. The tokens are the data's, not samples from the policy, so it measures
how far the policy has moved on the preference data rather than the exact KL of its own answers.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from medexp.data.prepared import PreparedData
from medexp.data.records import PreferencePair
from medexp.training.methods.base import StageKind

log = logging.getLogger(__name__)


class DPO(StageKind):
    name = "dpo"
    records = (PreferencePair,)
    default_for = (PreferencePair,)
    needs = "dataset.kind=preference (prompt, chosen, rejected)"
    verb = "Tune"
    perplexity = False
    safety_probes = True
    logs = ("rewards/margins", "rewards/accuracies", "kl")

    def own_stage_hint(self) -> str:
        return super().own_stage_hint().removesuffix(".") + " (experiment=sft_then_dpo)."

    def build_trainer(
        self,
        cfg: DictConfig,
        model: Any,
        tokenizer: Any,
        data: PreparedData,
        output_dir: Path,
        precision: str,
        callbacks: list[Any],
    ) -> Any:
        return build_dpo_trainer(cfg, model, tokenizer, data, output_dir, precision, callbacks)

    def finish(self, model: Any) -> None:
        drop_reference(model)


def build_dpo_trainer(
    cfg: DictConfig,
    model: Any,
    tokenizer: Any,
    data: PreparedData,
    output_dir: Path,
    precision: str,
    callbacks,
) -> Any:
    from trl import DPOConfig

    from medexp.training.trainer import training_arguments, trl_trainer

    t = cfg.trainer
    args = DPOConfig(
        **training_arguments(cfg, output_dir, precision),
        beta=float(t.beta),  # the KL leash: larger keeps the policy closer to the reference
        # RPO: the preference loss plus an SFT loss on the chosen answers, weighted
        loss_type=[str(t.preference_loss)] + (["sft"] if t.preference_sft_weight > 0 else []),
        loss_weights=[1.0, float(t.preference_sft_weight)] if t.preference_sft_weight > 0 else None,
        max_length=None,  # rows over dataset.max_tokens were already dropped, never truncated
    )
    trainer = trl_trainer(_trainer_class(), args, cfg, model, tokenizer, data, callbacks)
    log.info(
        "DPO: beta %s, loss %s, reference = the model at the start of the stage", t.beta, t.preference_loss
    )
    return trainer


def _trainer_class() -> type:
    """DPOTrainer that also logs `kl` (module docstring): a forward hook keeps the per-token log-probabilities
    of the policy's and then the reference's forward pass in each loss computation."""
    import torch
    from trl import DPOTrainer

    class KLTrackingDPOTrainer(DPOTrainer):
        def _compute_loss(self, model, inputs, *args, **kwargs):
            passes: list[torch.Tensor] = []

            def keep(_module, _args, _kwargs, output):
                log_probs = getattr(output, "log_probs", None)
                if log_probs is not None:
                    passes.append(log_probs.detach())

            handle = self.accelerator.unwrap_model(self.model).register_forward_hook(keep, with_kwargs=True)
            try:
                result = super()._compute_loss(model, inputs, *args, **kwargs)
            finally:
                handle.remove()
            if len(passes) == 2:  # policy, then reference (none when reference log-probs were precomputed)
                mask = inputs["completion_mask"][..., 1:].float()
                policy, reference = (p[:, -mask.size(1) :] for p in passes)
                log_ratio = (reference - policy) * mask
                k3 = (torch.exp(log_ratio) - 1 - log_ratio) * mask
                per_response = self.accelerator.gather(k3.sum(dim=1))
                mode = "train" if self.model.training else "eval"
                self._metrics[mode]["kl"].append(per_response.mean().item())
            return result

    return KLTrackingDPOTrainer


def drop_reference(model: Any) -> None:
    """Remove TRL's frozen "ref" adapter copy once the stage is over; "default" stays active."""
    if "ref" in getattr(model, "peft_config", {}):
        model.set_adapter("default")
        model.delete_adapter("ref")
