"""kto: Kahneman-Tversky Optimization (`stages.<name>.kind=kto`, the default for dataset.kind=unpaired): TRL's
KTOTrainer on conversational prompt / completion / label rows, each completion desirable or not, no pairs
needed. A paired preference file (dataset.kind=preference) trains too: each pair becomes one desirable row (its
chosen answer) and one undesirable row (its rejected answer), medexp.data.unpaired.unpair.

The reference is the model at the start of the stage, as for dpo: TRL copies a PeftModel's trained "default"
adapter into a frozen "ref" adapter (trl/trainer/kto_trainer.py), which medexp drops when the stage ends. No
held-out perplexity (eval_loss is the KTO loss); the safety probes' pass rate before and after the stage, when
eval.safety is on. Logged per step: TRL's kl (its batch estimate of KL(policy || reference), the KTO loss's
reference point), rewards/chosen, rewards/rejected, rewards/margins (chosen = desirable rows) and logps/*."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from medexp.config.errors import UserError
from medexp.data.prepared import PreparedData
from medexp.data.records import LabelledCompletion, PreferencePair
from medexp.data.rows import RawRecords, Source
from medexp.data.unpaired import prepare_unpaired
from medexp.training.methods.base import StageKind
from medexp.training.methods.dpo import drop_reference

log = logging.getLogger(__name__)


class KTO(StageKind):
    name = "kto"
    records = (LabelledCompletion, PreferencePair)
    default_for = (LabelledCompletion,)
    needs = "dataset.kind=unpaired (prompt, completion, label) or dataset.kind=preference (split into rows)"
    verb = "Tune"
    perplexity = False
    safety_probes = True
    logs = ("rewards/margins", "kl")

    def check(self, name: str, stage_cfg: DictConfig, last: bool) -> None:
        size, key = stage_cfg.trainer.batch_size, f"stages.{name}.trainer" if name else "trainer"
        if size < 2:
            raise UserError(
                f"{key}.batch_size={size}, but a kto stage needs at least 2 rows per batch: KTO's KL reference "
                "point pairs each prompt with its neighbours' completions, which one row does not have. Set "
                f"{key}.batch_size=8, for example."
            )

    def prepare(
        self,
        raw: RawRecords,
        dataset_cfg: DictConfig,
        tokenizer: Any,
        seed: int,
        mixture: Sequence[Source],
    ) -> PreparedData:
        """Labelled completions, whatever the data: preference pairs are split into them."""
        return prepare_unpaired(raw, dataset_cfg, tokenizer, seed)

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
        from trl import KTOConfig, KTOTrainer

        from medexp.training.trainer import training_arguments, trl_trainer

        t = cfg.trainer
        args = KTOConfig(
            **training_arguments(cfg, output_dir, precision),
            beta=float(t.beta),  # the leash to the reference, as in DPO
            desirable_weight=float(t.kto_desirable_weight),
            undesirable_weight=float(t.kto_undesirable_weight),
            max_length=None,  # rows over dataset.max_tokens were already dropped, never truncated
        )
        trainer = trl_trainer(KTOTrainer, args, cfg, model, tokenizer, data, callbacks)
        log.info(
            "KTO: beta %s, desirable x%s, undesirable x%s, reference = the model at the start of the stage",
            t.beta,
            t.kto_desirable_weight,
            t.kto_undesirable_weight,
        )
        return trainer

    def finish(self, model: Any) -> None:
        drop_reference(model)
