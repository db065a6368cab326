"""What the preference kinds without a reference model (orpo, simpo) share: pairs from dataset.kind=preference,
a refusal of options that only a reference-model method (dpo) reads, and the trainer built on the chosen and
rejected conversations. The policy is the run's adapter alone: nothing is copied, nothing dropped afterwards."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

from omegaconf import DictConfig

from medexp.config.choices import PreferenceLoss
from medexp.config.errors import UserError
from medexp.data.prepared import PreparedData
from medexp.data.records import PreferencePair
from medexp.training.methods.base import StageKind

log = logging.getLogger(__name__)

# the max_length bound past dataset.max_tokens: the rows were length-filtered on their chat-rendered
# conversation, and the trainer's own rendering of prompt + answer may add an EOS or a few template tokens
TEMPLATE_SLACK = 16


class ReferenceFree(StageKind):
    """A preference kind trained without a reference model; subclasses say what the trainer is."""

    records = (PreferencePair,)
    needs = "dataset.kind=preference (prompt, chosen, rejected)"
    verb = "Tune"
    perplexity = False
    safety_probes = True
    method: ClassVar[str]  # as messages name it (ORPO, SimPO)
    own_options: ClassVar[tuple[str, ...]] = ("beta",)  # its trainer.* options, named in check's refusal

    def check(self, name: str, stage_cfg: DictConfig, last: bool) -> None:
        """Refuse the options only a reference-model method reads: they would be silently ignored."""
        t, key = stage_cfg.trainer, f"stages.{name}.trainer" if name else "trainer"
        given = []
        loss = str(getattr(t.preference_loss, "value", t.preference_loss))
        if loss != PreferenceLoss.sigmoid.value:
            given.append(f"{key}.preference_loss={loss}")
        if t.preference_sft_weight != 0:
            given.append(f"{key}.preference_sft_weight={t.preference_sft_weight}")
        if given:
            one = len(given) == 1
            raise UserError(
                f"{' and '.join(given)} {'is an option' if one else 'are options'} of DPO, which trains against a "
                f"reference model, but stages.{name}.kind={self.name} ({self.method}) trains without one, so "
                f"{'it' if one else 'they'} would be ignored. Drop {'it' if one else 'them'}, or set "
                f"stages.{name}.kind=dpo to train against the stage's starting model. {self.method}'s own options: "
                f"{', '.join(f'{key}.{o}' for o in self.own_options)}."
            )

    def trainer_class(self) -> tuple[type, type]:
        """(the TRL config class, the TRL trainer class)."""
        raise NotImplementedError

    def options(self, cfg: DictConfig) -> dict[str, Any]:
        """The method's own options for the TRL config."""
        raise NotImplementedError

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
        from medexp.training.trainer import training_arguments, trl_trainer

        config_class, trainer_class = self.trainer_class()
        options = self.options(cfg)
        args = config_class(
            **training_arguments(cfg, output_dir, precision),
            **options,
            # longer rows were dropped, not truncated
            max_length=int(cfg.dataset.max_tokens) + TEMPLATE_SLACK,
            remove_unused_columns=False,  # its paired collator reads the chosen_* / rejected_* columns
        )
        trainer = trl_trainer(trainer_class, args, cfg, model, tokenizer, data, callbacks)
        log.info("%s: %s, no reference model", self.method, ", ".join(f"{k} {v}" for k, v in options.items()))
        return trainer
