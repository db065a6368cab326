"""What data preparation hands to training: the tokenized splits and the report of what was kept, dropped and
left out by `limit`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import datasets


@dataclass
class SourceReport:
    """What one source contributed: rows read and kept, training rows after its weight, drops by reason, and
    the usable rows its own `limit` left out (not drops: the user asked for fewer)."""

    rows_in: int
    rows_kept: int = 0
    train_rows: int = 0
    weight: float = 1.0
    dropped: Counter[str] = field(default_factory=Counter)
    unused_by_limit: int = 0


@dataclass
class PreparedData:
    """Tokenized splits (input_ids + completion_mask, ready for TRL; or the columns a stage kind's trainer
    reads) and the report of what was kept."""

    train: datasets.Dataset
    validation: datasets.Dataset
    train_pairs: list[tuple[str, str]]  # distinct pairs in training (before weights repeat or thin them)
    validation_pairs: list[tuple[str, str]]
    rows_in: int
    train_sources: list[str] = field(default_factory=list)  # the source (Source.name) of each train pair
    validation_sources: list[str] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    fingerprint: str = ""
    leakage: int = 0  # validation questions also in train (0 by construction; reported as a check)
    sources: dict[str, SourceReport] = field(default_factory=dict)
    max_tokens: int = 0  # the main dataset's length limit, drawn on the length histogram
    lengths: dict[str, list[int]] = field(default_factory=dict)  # per split, when rows are not tokenized yet
    kept: int | None = (
        None  # rows kept, when not every row is a pair (KTO's undesirable rows are no reference)
    )

    @property
    def rows_kept(self) -> int:
        if self.kept is not None:
            return self.kept
        return len(self.train_pairs) + len(self.validation_pairs)

    @property
    def unused_by_limit(self) -> int:
        """Usable rows that the sources' `limit` left out."""
        return sum(s.unused_by_limit for s in self.sources.values())

    def token_lengths(self, split: str) -> list[int]:
        if split in self.lengths:
            return self.lengths[split]
        return [len(ids) for ids in getattr(self, split)["input_ids"]]

    def metrics(self) -> dict[str, float]:
        """Counts as MLflow metrics: data/rows_in, data/rows_kept, data/dropped/<reason>, data/unused_by_limit
        (when a limit left rows out), split sizes, and per source of a mixture
        data/mix/<name>/{rows_in,rows_kept,train_rows,weight}."""
        out = {
            "data/rows_in": self.rows_in,
            "data/rows_kept": self.rows_kept,
            "data/train_rows": len(self.train),
            "data/validation_rows": len(self.validation),
            "data/leakage": self.leakage,
        }
        out.update({f"data/dropped/{reason}": n for reason, n in sorted(self.dropped.items())})
        if self.unused_by_limit:
            out["data/unused_by_limit"] = self.unused_by_limit
        if len(self.sources) > 1:
            for name, src in self.sources.items():
                for key in ("rows_in", "rows_kept", "train_rows", "weight"):
                    out[f"data/mix/{name}/{key}"] = getattr(src, key)
        return out

    def summary(self) -> str:
        dropped = ", ".join(f"{n} {reason}" for reason, n in sorted(self.dropped.items())) or "none"
        text = (
            f"data: read {self.rows_in} rows, kept {self.rows_kept} "
            f"({len(self.train)} train / {len(self.validation)} validation rows, {self.leakage} questions "
            f"in both); "
        )
        if self.unused_by_limit:
            limits = ", ".join(
                f"{'dataset' if name == 'dataset' else f'mixture.{name}'}.limit"
                for name, s in self.sources.items()
                if s.unused_by_limit
            )
            usable = self.rows_kept + self.unused_by_limit
            text += f"used {self.rows_kept:,} of {usable:,} usable rows ({limits}); "
        text += f"dropped: {dropped}"
        if len(self.sources) > 1:
            text += "; mixture: " + ", ".join(
                f"{name} {s.rows_kept} kept x{s.weight:g} -> {s.train_rows} train"
                for name, s in self.sources.items()
            )
        return text
