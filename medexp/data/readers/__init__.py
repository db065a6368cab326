"""The data formats medexp reads, by `dataset.kind`: one module per format, each a `Reader` (its kind, how rows
become typed records, how those records are prepared by default). A format of your own is one `Reader` passed
to `register_reader` (e.g. from a module your experiment imports); nothing else compares kind names."""

from __future__ import annotations

from collections.abc import Iterator

from omegaconf import DictConfig

from medexp.config.errors import UserError, did_you_mean
from medexp.config.stages import stage_configs
from medexp.data.readers.base import TABLE_SUFFIXES, Reader
from medexp.data.readers.conversation import READER as CONVERSATION
from medexp.data.readers.multiple_choice import READER as MULTIPLE_CHOICE
from medexp.data.readers.preference import READER as PREFERENCE
from medexp.data.readers.qa import READER as QA
from medexp.data.readers.text import READER as TEXT
from medexp.data.readers.unpaired import READER as UNPAIRED

# The formats medexp ships; adding one is its module and a line here.
READERS: dict[str, Reader] = {
    r.kind: r for r in (QA, MULTIPLE_CHOICE, CONVERSATION, TEXT, PREFERENCE, UNPAIRED)
}


def register_reader(reader: Reader) -> Reader:
    """Make `dataset.kind=<reader.kind>` read with `reader` (replacing a reader of that kind)."""
    READERS[reader.kind] = reader
    return reader


def reader_for(kind: str, key: str = "dataset") -> Reader:
    """The reader of a `dataset.kind`; one paragraph naming the known kinds for one medexp does not read."""
    reader = READERS.get(str(kind))
    if reader is None:
        known = list(READERS)
        raise UserError(
            f"{key}.kind={kind} is not a data format medexp reads.{did_you_mean(str(kind), known)} Known: "
            f"{', '.join(known)}. Set {key}.kind to one of them, or register a reader of your own "
            "(medexp.data.readers.register_reader)."
        )
    return reader


def dataset_nodes(cfg: DictConfig) -> Iterator[tuple[str, DictConfig]]:
    """(key, dataset node) for every source a run reads: each stage's dataset, the mixture, eval.mc.sets."""
    for name, stage_cfg in stage_configs(cfg):
        yield (f"stages.{name}.dataset" if name else "dataset"), stage_cfg.dataset
    for name, node in cfg.mixture.items():
        yield f"mixture.{name}", node
    for name, node in cfg.eval.mc.sets.items():
        yield f"eval.mc.sets.{name}", node


def check_sources(cfg: DictConfig) -> None:
    """Every source's kind names a reader, and its local file is of a type that reader reads. Cheap: no file is
    opened."""
    for key, node in dataset_nodes(cfg):
        reader_for(node.kind, key).check_path(node, key)


__all__ = ["READERS", "TABLE_SUFFIXES", "Reader", "check_sources", "reader_for", "register_reader"]
