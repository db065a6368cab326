"""What a stage kind is: the data it takes, how its rows are prepared, how its trainer is built, what is
evaluated before and after it, and what it logs. A kind is a subclass of `StageKind` registered by name
(medexp.training.methods.register); the stage loop, the data preparation and the config checks ask it, so a new
training method is one module."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from omegaconf import DictConfig

from medexp.data.prepare import prepare_data
from medexp.data.prepared import PreparedData
from medexp.data.readers import READERS
from medexp.data.rows import RawRecords, Source


class StageKind:
    """One way to train a stage (`stages.<name>.kind=<name>`). Subclasses set the class attributes and
    `build_trainer`; the other methods have defaults that fit most kinds. Nothing heavy at module top: the
    config checks import every kind."""

    name: ClassVar[str]  # what stages.<name>.kind says
    # The record types it trains on (medexp.data.records), like TRL's dataset types: every data format whose
    # reader yields one of them (dataset.kind=qa, multiple_choice, conversation all yield QAPair).
    records: ClassVar[tuple[type, ...]]
    default_for: ClassVar[
        tuple[type, ...]
    ] = ()  # record types whose stages get this kind when `kind` is unset
    needs: ClassVar[str] = ""  # the data it takes, as a refusal words it; "" = the dataset.kind values
    verb: ClassVar[str] = "Train"  # "<verb> on it in a stage of its own", said of such data in a mixture
    perplexity: ClassVar[bool] = True  # held-out loss and perplexity (eval.metrics) before and after it
    safety_probes: ClassVar[bool] = False  # eval.safety's probes' pass rate before and after it
    logs: ClassVar[tuple[str, ...]] = ("loss", "eval_loss")  # what its trainer logs per step, for the console
    # what a sweep's pruner compares at each evaluation of the last stage, and which way is better
    progress: ClassVar[tuple[str, str]] = ("eval_loss", "minimize")

    def describe_needs(self) -> str:
        """The data it takes, as a refusal words it: `needs`, else the formats whose records it trains on."""
        kinds = [r.kind for r in READERS.values() if r.record in self.records]
        return (
            self.needs or " or ".join(f"dataset.kind={k}" for k in kinds) or "data medexp has no reader for"
        )

    def own_stage_hint(self) -> str:
        """How to train on this kind's data when someone put it in a mixture."""
        return (
            f"{self.verb} on it in a stage of its own: +dataset@stages.<name>.dataset=<its option> with "
            f"stages.<name>.kind={self.name}."
        )

    def check(self, name: str, stage_cfg: DictConfig, last: bool) -> None:
        """Refuse (UserError) settings this kind cannot train with; `last`: the run's final stage. Cheap."""

    def prepare(
        self,
        raw: RawRecords,
        dataset_cfg: DictConfig,
        tokenizer: Any,
        seed: int,
        mixture: Sequence[Source],
    ) -> PreparedData:
        """The stage's tokenized splits: by default as the data's reader prepares them."""
        return prepare_data(raw, dataset_cfg, tokenizer, seed, mixture)

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
        """A transformers Trainer (TRL's, mostly) on `data`, with medexp's `callbacks` and the training
        arguments every kind shares (medexp.training.trainer.training_arguments)."""
        raise NotImplementedError(f"stage kind {self.name!r} does not build a trainer")

    def finish(self, model: Any) -> None:
        """After training, before the stage's final evaluation and save (e.g. drop a reference copy)."""
