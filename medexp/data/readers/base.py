"""What a data format is to medexp: a `Reader` names its `dataset.kind`, reads a source's rows into typed
records, and says how those records are prepared for training by default."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from medexp.config import UserError
from medexp.data.rows import RawRecords, Source

if TYPE_CHECKING:
    from medexp.data.prepared import PreparedData

TABLE_SUFFIXES = (".csv", ".json", ".jsonl", ".parquet")  # the local files read_rows reads


@dataclass(frozen=True)
class Reader:
    """One data format (`dataset.kind=<kind>`)."""

    kind: str
    record: type  # the record type its rows become (medexp.data.records): what a stage kind trains on
    # (dataset node, its key for messages, e.g. "mixture.safety") -> the records, bad rows dropped by reason
    read: Callable[[DictConfig, str], RawRecords]
    # (raw, dataset node, tokenizer, seed, mixture sources) -> tokenized splits; what a stage without its own
    # preparation (the stage kind's `prepare`) trains on
    prepare: Callable[[RawRecords, DictConfig, Any, int, Sequence[Source]], PreparedData]
    describe: str  # what its rows are, as refusals name them ("plain text", "preference data")
    stage: str = "SFT"  # the stage that trains on it, as the data line names it ("a pretraining stage")
    mixable: bool = False  # its records are question-answer pairs, so a mixture may hold it
    suffixes: tuple[str, ...] = TABLE_SUFFIXES  # local files it reads
    # its answers are "<letter>. <option>" under an "Options:" block: evaluation scores them by option likelihood
    lettered_options: bool = False

    def check_path(self, dataset_cfg: DictConfig, key: str) -> None:
        """Refuse a local file of a type this reader cannot read, before anything is loaded."""
        if dataset_cfg.path is None:
            return
        path = Path(str(dataset_cfg.path)).expanduser()
        if path.suffix.lower() not in self.suffixes:
            raise UserError(
                f"{key}.path={dataset_cfg.path!r} has suffix {path.suffix!r}, which medexp cannot read as "
                f"dataset.kind={self.kind}. Use one of {', '.join(self.suffixes)}."
            )
