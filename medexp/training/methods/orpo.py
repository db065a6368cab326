"""orpo: Odds Ratio Preference Optimization (`stages.<name>.kind=orpo`): TRL's ORPOTrainer (trl.experimental)
on dataset.kind=preference pairs, without a reference model: the SFT loss on the chosen answer plus
`trainer.beta` (ORPO's lambda) x the log odds ratio of chosen over rejected. Logged per step: rewards/margins,
rewards/accuracies, log_odds_ratio, nll_loss (the chosen answers' SFT loss) and logps/*. No perplexity; the
safety probes' pass rate before and after the stage."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from medexp.training.methods.reference_free import ReferenceFree


class ORPO(ReferenceFree):
    name = "orpo"
    method = "ORPO"
    logs = ("rewards/margins", "rewards/accuracies", "log_odds_ratio", "nll_loss")

    def trainer_class(self) -> tuple[type, type]:
        import warnings

        with warnings.catch_warnings():  # medexp chose the experimental API knowingly: no warning per run
            warnings.filterwarnings("ignore", message=".*trl.experimental")
            from trl.experimental.orpo import (
                ORPOConfig,
                ORPOTrainer,
            )  # heavy: config checks import every kind

        return ORPOConfig, ORPOTrainer

    def options(self, cfg: DictConfig) -> dict[str, Any]:
        return {"beta": float(cfg.trainer.beta)}  # lambda: the odds-ratio term's weight against the SFT loss
