"""simpo: Simple Preference Optimization (`stages.<name>.kind=simpo`): TRL's CPOTrainer (trl.experimental) with
loss_type="simpo" and cpo_alpha=0 (no added SFT loss: SimPO as its paper states it) on dataset.kind=preference
pairs, without a reference model. The reward is `trainer.beta` x the length-normalised log-likelihood of an
answer; the loss asks the chosen answer's reward to beat the rejected one's by `trainer.simpo_gamma`. Logged per
step: rewards/margins, rewards/accuracies and logps/*. No perplexity; the safety probes' pass rate before and
after the stage."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from medexp.training.methods.reference_free import ReferenceFree


class SimPO(ReferenceFree):
    name = "simpo"
    method = "SimPO"
    own_options = ("beta", "simpo_gamma")
    logs = ("rewards/margins", "rewards/accuracies")

    def trainer_class(self) -> tuple[type, type]:
        import warnings

        with warnings.catch_warnings():  # medexp chose the experimental API knowingly: no warning per run
            warnings.filterwarnings("ignore", message=".*trl.experimental")
            from trl.experimental.cpo import CPOConfig, CPOTrainer  # heavy: config checks import every kind

        return CPOConfig, CPOTrainer

    def options(self, cfg: DictConfig) -> dict[str, Any]:
        return {
            "loss_type": "simpo",
            "cpo_alpha": 0.0,  # CPO's added SFT loss off: plain SimPO
            "beta": float(
                cfg.trainer.beta
            ),  # the reward scale (the SimPO paper uses 2-10; TRL's default 0.1)
            "simpo_gamma": float(cfg.trainer.simpo_gamma),  # the target margin, in units of beta
        }
