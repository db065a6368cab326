"""The data report of a run: counts as metrics, a token-length histogram, a JSON summary and MLflow dataset inputs.

Logged into the run (or a stage's run) by `log_data_report`, so every run shows in the MLflow UI what it
trained on: `data/rows_in`, `data/rows_kept`, `data/dropped/<reason>`, `data/unused_by_limit` (rows a `limit`
left out), `data/token_lengths.png`, `data/report.json`, the fingerprint as the `medexp.dataset_fingerprint` tag, and one dataset input per source
and split (context `training` / `validation`).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from medexp.data.prepared import PreparedData
from medexp.tracking import Tracker


def length_histogram(data: PreparedData, path: Path) -> Path:
    """A PNG of the formatted conversations' token lengths, train and validation, with the length limit."""
    from medexp.plotting import pyplot, save

    train, validation = data.token_lengths("train"), data.token_lengths("validation")
    fig, ax = pyplot().subplots(figsize=(7, 4))
    bins = min(50, max(5, len(set(train + validation))))
    ax.hist([train, validation], bins=bins, label=["train", "validation"], stacked=True)
    ax.axvline(
        data.max_tokens, color="black", linestyle="--", label=f"dataset.max_tokens = {data.max_tokens}"
    )
    ax.set_xlabel("tokens per conversation (system prompt + question + answer)")
    ax.set_ylabel("rows")
    ax.set_title(f"Token lengths ({len(train)} train / {len(validation)} validation rows)")
    ax.legend()
    return save(fig, path)


def summary(data: PreparedData) -> dict[str, Any]:
    """The counts, the fingerprint and per-source figures, as written to data/report.json."""
    lengths = sorted(data.token_lengths("train") + data.token_lengths("validation"))
    return {
        "fingerprint": data.fingerprint,
        "metrics": data.metrics(),
        "token_length": {
            "min": lengths[0],
            "median": lengths[len(lengths) // 2],
            "max": lengths[-1],
            "limit": data.max_tokens,
        },
        "sources": {
            name: {
                "rows_in": s.rows_in,
                "rows_kept": s.rows_kept,
                "train_rows": s.train_rows,
                "weight": s.weight,
                "dropped": dict(s.dropped),
                "unused_by_limit": s.unused_by_limit,  # usable rows its `limit` left out (not drops)
            }
            for name, s in data.sources.items()
        },
    }


def mlflow_inputs(data: PreparedData, source_cfgs: dict[str, DictConfig]) -> list[tuple[Any, str]]:
    """(mlflow dataset, context) for every source and split: the kept question-answer pairs as a table, named
    after the hub id or file, with its origin as the MLflow dataset source."""
    import mlflow.data
    import pandas as pd
    from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource

    out = []
    for context, pairs, owners in (
        ("training", data.train_pairs, data.train_sources),
        ("validation", data.validation_pairs, data.validation_sources),
    ):
        for name, cfg in source_cfgs.items():
            rows = [pair for pair, owner in zip(pairs, owners, strict=True) if owner == name]
            if not rows:
                continue
            frame = pd.DataFrame(rows, columns=["question", "answer"])
            digest = hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]
            if cfg.path is not None:
                label = Path(str(cfg.path)).name
                with (
                    warnings.catch_warnings()
                ):  # MLflow warns that a local path "can be interpreted" two ways
                    warnings.simplefilter("ignore")
                    dataset = mlflow.data.from_pandas(
                        frame, source=str(Path(str(cfg.path)).resolve()), name=label, digest=digest
                    )
            else:
                label = str(cfg.name) + (f"/{cfg.subset}" if cfg.subset else "")
                source = HuggingFaceDatasetSource(
                    path=str(cfg.name), config_name=cfg.subset, split=str(cfg.split)
                )
                dataset = mlflow.data.from_pandas(frame, source=source, name=label, digest=digest)
            out.append((dataset, context))
    return out


def log_data_report(
    tracker: Tracker, data: PreparedData, source_cfgs: dict[str, DictConfig], out_dir: Path
) -> None:
    """Write the histogram and report.json under out_dir and log them, the counts and the dataset inputs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(summary(data), indent=2))
    histogram = length_histogram(data, out_dir / "token_lengths.png")
    tracker.log_metrics(data.metrics())
    tracker.set_tags({"medexp.dataset_fingerprint": data.fingerprint})
    if tracker.run_id is None:  # tracking=none: the files above are the report
        return
    tracker.log_artifact(histogram, "data")
    tracker.log_artifact(out_dir / "report.json", "data")
    tracker.log_inputs(mlflow_inputs(data, source_cfgs))
