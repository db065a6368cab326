"""pretrain: continued pretraining on plain text (dataset.kind=text), packed into blocks with the loss on every
token; the same SFT trainer as sft stages, on a mask of ones."""

from __future__ import annotations

from omegaconf import DictConfig

from medexp.config import UserError
from medexp.data.records import Document
from medexp.training.methods.sft import SFT


class Pretrain(SFT):
    name = "pretrain"
    records = (Document,)
    default_for = (Document,)
    needs = "dataset.kind=text"
    verb = "Pretrain"

    def check(self, name: str, stage_cfg: DictConfig, last: bool) -> None:
        """Plain text has no questions: the generation suite cannot follow it as the run's last stage."""
        if last and stage_cfg.eval.generation.enabled:
            where = f"stage {name!r}" if name else "the run"
            raise UserError(
                f"The last stage of {where} pretrains on plain text, so there are no held-out questions for "
                "eval.generation to answer. Follow it with a supervised stage (experiment=cpt_then_sft), or turn "
                "generation off (eval.generation.enabled=false, or eval=none); held-out loss and perplexity on the "
                "text are still measured."
            )
