"""The reward group's schema: the weighted rewards a `grpo` stage trains against (conf/reward/*.yaml). Each of
medexp's rewards (medexp.training.rewards) is a weight here, 0 = off, so a misspelt name is refused as any
unknown key is; functions of your own are `custom` entries named by import path (`_target_`), checked with the
stages by the grpo stage kind, since what imports is the training package's to find out."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from medexp.config.rules import Rules, positive, require

WEIGHTS = ("choice_correct", "answer_format", "safety", "length", "reference_overlap")


@dataclass
class RewardConfig:
    choice_correct: float = 0.0  # weight: the final `Answer: X` names the gold option (1) or not (0)
    answer_format: float = 0.0  # weight: reasoning, then a final `Answer: X` line (1; 0.5 without reasoning)
    safety: float = 0.0  # weight: -1 for an answer `safety_scorer` judges unsafe, else 0
    length: float = 0.0  # weight: 0 within `length_max_tokens`, down to -1 at twice that many tokens
    reference_overlap: float = 0.0  # weight: ROUGE-L F1 of the completion against the reference answer
    length_max_tokens: int = 256  # the completion tokens the length reward allows before its penalty starts
    # Rules + the learned classifier, not the rules alone: a reward sees no category, and there the rules alone let
    # through 41% of blind-6's unsafe answers, rules + classifier 7% (docs/evaluate.md); rules alone:
    # medexp.evaluation.safety_rules.score.
    safety_scorer: str = "medexp.evaluation.safety_classifier.judge"  # (prompt, response) -> .safe
    custom: dict[str, Any] = field(default_factory=dict)  # name -> {_target_: module.function, weight: float}

    RULES: ClassVar[Rules] = (
        *(
            require(
                name,
                math.isfinite,
                "{key} must be a finite weight, got {value}: 1.0 is full weight, 0 is off.",
            )
            for name in WEIGHTS
        ),
        positive("length_max_tokens", 256, "the completion tokens allowed before the length penalty starts"),
    )
