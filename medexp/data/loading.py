"""Read a run's sources: each dataset node through the reader of its `dataset.kind` (medexp.data.readers)."""

from __future__ import annotations

from omegaconf import DictConfig

from medexp.data.answer_text import final_line_format
from medexp.data.readers import reader_for
from medexp.data.readers.qa import VERDICTS
from medexp.data.rows import RawRecords, Source


def load_pairs(dataset_cfg: DictConfig, key: str = "dataset") -> RawRecords:
    """Read the source with its kind's reader: its rows as typed records (question-answer pairs, preference
    pairs, documents), rows that cannot be used dropped by reason. `key` names the config node in messages."""
    reader = reader_for(dataset_cfg.kind, key)
    reader.check_path(dataset_cfg, key)
    raw = reader.read(dataset_cfg, key)
    if final_line_format(dataset_cfg):  # as a GRPO stage rewards answers
        from medexp.data.answer_line import final_line

        raw = final_line(raw, dataset_cfg, key)
    return raw


def load_mixture(cfg: DictConfig) -> list[Source]:
    """Every `mixture.<name>` component of the run, read and cheaply cleaned, in config order."""
    return [
        Source(str(name), node, load_pairs(node, f"mixture.{name}")) for name, node in cfg.mixture.items()
    ]


def sources(cfg: DictConfig) -> dict[str, DictConfig]:
    """The run's data sources by name: `dataset` and each mixture component."""
    return {"dataset": cfg.dataset, **{str(k): v for k, v in cfg.mixture.items()}}


__all__ = ["VERDICTS", "Source", "load_mixture", "load_pairs", "sources"]
