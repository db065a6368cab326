"""sft: supervised fine-tuning on chat-formatted pairs (qa, multiple-choice, conversations), the loss on the
answer tokens only; TRL's SFTTrainer (medexp.training.trainer). A `mixture` is mixed into these stages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from medexp.data.prepared import PreparedData
from medexp.data.records import QAPair
from medexp.training.methods.base import StageKind


class SFT(StageKind):
    name = "sft"
    records = (QAPair,)
    default_for = (QAPair,)
    needs = "question-answer data (qa, multiple_choice, conversation)"

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
        from medexp.training.trainer import build_trainer

        return build_trainer(cfg, model, tokenizer, data, output_dir, precision, callbacks)
