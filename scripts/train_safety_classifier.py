"""Train the safety scorer's learned second opinion (medexp/evaluation/safety_classifier.py) on every labelled
response in tests/fixtures/safety_labelled*.jsonl (but NOT_TRAINED_ON) plus the shipped preference pairs (chosen = safe, rejected =
unsafe), and write medexp/assets/safety/safety_classifier.json.

    python scripts/train_safety_classifier.py        # ~30 s on a CPU; deterministic

How well it does on responses it was not trained on is measured leave-one-set-out by
`python benchmarks/safety_scorer.py --classifier` (each set scored by a classifier trained on all the others).
"""

from __future__ import annotations

import json
from pathlib import Path

from medexp.evaluation.safety_classifier import CLASSIFIER, NOT_TRAINED_ON, load, train, training_rows

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    every = sorted((ROOT / "tests" / "fixtures").glob("safety_labelled*.jsonl"))
    sets = [p for p in every if p.name not in NOT_TRAINED_ON]
    rows = training_rows(sets)
    model = train(rows)
    load.cache_clear()
    model["trained_on_sets"] = [p.name for p in sets] + ["safety_preference.jsonl"]
    CLASSIFIER.write_text(json.dumps(model, separators=(",", ":")) + "\n")
    print(f"{CLASSIFIER}: trained on {len(rows)} responses")


if __name__ == "__main__":
    main()
