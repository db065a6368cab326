"""What an evaluation produces: metrics (eval/<name>, eval/base/<name>, eval/delta/<name>), the generations table
(one row per prompt) and the safety pass rates per category, which the report and the MLflow logging read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class EvalResult:
    metrics: dict[str, float] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(
        default_factory=list
    )  # one per prompt: suite, prompt, reference, answers
    safety: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> category -> pass rate

    def answers(
        self, suite: str, prompts: list[str], references: list, adapted: list, base: list | None
    ) -> None:
        """One generations-table row per prompt: the reference (or None) and both models' answers."""
        for i, prompt in enumerate(prompts):
            self.rows.append(
                {"suite": suite, "prompt": prompt, "reference": references[i], "adapted": adapted[i].text,
                 "base": base[i].text if base else None}
            )  # fmt: skip

    def add(self, adapted: dict[str, float], base: dict[str, float] | None, prefix: str = "") -> None:
        """eval/<prefix><name> for each adapted value; with `base`, eval/base/... and eval/delta/... (adapted -
        base) for each name `base` has too."""
        for name, value in adapted.items():
            self.metrics[f"eval/{prefix}{name}"] = value
            if base is not None and name in base:
                self.metrics[f"eval/base/{prefix}{name}"] = base[name]
                self.metrics[f"eval/delta/{prefix}{name}"] = value - base[name]
