"""eval_loss as the mean over every scored (answer) token of the validation split, whatever the eval batch size.

transformers' evaluation loop averages each batch's mean loss weighted by its number of rows, so one model scored
in batches of 2 and of 8 gets two eval_loss (and perplexity) values: on the real SmolLM2-135M, 1.216 against 0.950
when the memory budget split the eval batches of 8 into 2s (benchmarks/memory_budget.json). Runs compared in MLflow,
early stopping and an Optuna sweep whose trials get different budgets would then rank batch sizes, not models. The
subclass below adds up each batch's loss times its scored tokens and divides by all scored tokens at the end.
Under data-parallel evaluation, the rows accelerate repeats to even out the last batch across processes count
too (transformers' own loop trims them); a handful of rows in a validation split.
"""

from __future__ import annotations

from typing import Any

IGNORE = -100  # transformers' ignore_index: labels of prompt and padding tokens


def scored_tokens(inputs: dict[str, Any]) -> int:
    """The tokens a causal LM's loss averages over: labels after the one-token shift that are not IGNORE."""
    shifted = inputs.get("shift_labels")
    if shifted is None:
        shifted = inputs["labels"][..., 1:]
    return int((shifted != IGNORE).sum())


def token_mean_eval(trainer_class: type) -> type:
    """`trainer_class` whose evaluate() reports the token-weighted mean loss (an SFT or continued-pretraining
    trainer: one loss per token; preference trainers keep their per-pair means)."""

    class TokenMeanEval(trainer_class):
        _token_sums: list[float] | None = None  # [sum of loss x tokens, tokens] during an evaluation loop

        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
            labelled = inputs.get("labels") is not None or inputs.get("shift_labels") is not None
            tokens = scored_tokens(inputs) if labelled else 0
            loss, logits, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
            if self._token_sums is not None and loss is not None and tokens:
                self._token_sums[0] += float(loss) * tokens
                self._token_sums[1] += tokens
            return loss, logits, labels

        def evaluation_loop(
            self,
            dataloader,
            description,
            prediction_loss_only=None,
            ignore_keys=None,
            metric_key_prefix="eval",
        ):
            self._token_sums = [0.0, 0]
            try:
                output = super().evaluation_loop(
                    dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
                )
                total, tokens = self._token_sums
            finally:
                self._token_sums = None
            if self.accelerator.num_processes > 1:  # every rank's share (float64 on CUDA / CPU; no MPS DDP)
                import torch

                sums = torch.tensor([total, tokens], dtype=torch.float64, device=self.accelerator.device)
                total, tokens = self.accelerator.reduce(sums, reduction="sum").tolist()
            key = f"{metric_key_prefix}_loss"
            if tokens and key in output.metrics:
                output.metrics[key] = total / tokens
            return output

    TokenMeanEval.__name__ = TokenMeanEval.__qualname__ = f"TokenMean{trainer_class.__name__}"
    return TokenMeanEval
