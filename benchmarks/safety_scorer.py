"""How often does medexp's safety scorer agree with the labels? Per set and per category: agreement, unsafe
answers let through (missed / unsafe: what a policy trained against the scorer as a reward can exploit) and
false alarms (false alarms / safe), on the labelled sets in tests/fixtures.

    python benchmarks/safety_scorer.py                       # the rules
    python benchmarks/safety_scorer.py --classifier          # + rules and learned classifier, leave-one-set-out (~3 min)
    python benchmarks/safety_scorer.py --rules old_rules.py  # another version of safety_rules.py, to compare

Each set is scored twice: with its category given (as the eval suite's probes are), and with the category
left out (as the GRPO `safety` reward sees an answer: the question and the answer only).

Sets, in the order they were used (each written by a separate helper agent, told the categories and what
safe and unsafe mean, never shown the rules; dev-5, blind-5 and blind-6 from benchmarks/safety_brief.md):
  dev, held-out  safety_labelled.jsonl (112): the rules were written on dev; the rules' author read held-out too.
  blind-1..3     safety_labelled_blind.jsonl, _blind2, _blind3 (70 each): each scored once unseen (88.6%), then
                 read and its misses fixed: development sets now.
  blind-4        safety_labelled_blind4.jsonl (70): first scored unseen at 91.4%, read in issue 25's work.
  dev-5          safety_labelled_dev5.jsonl (140): written for issue 25. First scored unseen with the scorer as
                 it was before issue 25: rules 86.4% agreement, 20.0% of unsafe let through (14/70), 7.1% false
                 alarms (5/70); rules + the old classifier 87.1%, 17.1%, 8.6%; with the category left out, as a
                 reward sees it, rules 62.9%, 67.1% let through; rules + classifier 67.1%, 57.1%. The concept
                 rules written before it arrived scored 87.9% / 17.1% (given) and 75.0% / 42.9% (left out).
                 Then read: a development set now.
  blind-5        safety_labelled_blind5.jsonl (140): scored once unseen (rules + classifier 92.1% / 5.7% let
                 through / 10.0% false alarms, category given; 91.4% / 4.3% / 12.9% left out), then read.
  blind-6        safety_labelled_blind6.jsonl (140): scored once unseen after a second round (rules +
                 classifier 90.7% / 8.6% / 10.0% given; 88.6% / 7.1% / 15.7% left out); not read, and kept out
                 of the shipped classifier's training (safety_classifier.NOT_TRAINED_ON).
The labels are a language model's, not clinicians'. The rules have read every set but blind-6, so their
figures on the others are development figures. The learned classifier is scored leave-one-set-out: trained on
every other set (and the shipped preference pairs), then scored on the one left out; for blind-5 that is the
same data the shipped classifier was trained on. Pooled leave-one-set-out over the 532 labelled answers (266
unsafe) with the category left out: rules 88.2% agreement, 22.6% let through, 1.1% false alarms; rules +
classifier 96.1%, 1.5%, 6.4% (docs/evaluate.md has every set). Writes benchmarks/safety_scorer.json.

Scoring a set once (the classifier is trained on every other set):
    python benchmarks/safety_scorer.py --classifier --only blind-6
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

from medexp.evaluation import safety_rules

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
SETS = {
    "dev": ("safety_labelled.jsonl", "dev"),
    "held-out": ("safety_labelled.jsonl", "heldout"),
    "blind-1": ("safety_labelled_blind.jsonl", None),
    "blind-2": ("safety_labelled_blind2.jsonl", None),
    "blind-3": ("safety_labelled_blind3.jsonl", None),
    "blind-4": ("safety_labelled_blind4.jsonl", None),
    "dev-5": ("safety_labelled_dev5.jsonl", None),
    "blind-5": ("safety_labelled_blind5.jsonl", None),
    "blind-6": ("safety_labelled_blind6.jsonl", None),
}


def load(name: str, split: str | None) -> list[dict]:
    path = FIXTURES / name
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if split is None or r.get("split") == split]


def unlabelled(rows: list[dict]) -> list[dict]:
    """The rows as the reward sees them: no category."""
    return [{k: v for k, v in r.items() if k != "category"} for r in rows]


def show(label: str, table: dict) -> None:
    print(f"\n{label}")
    print(f"{'category':22s} {'n':>3s} {'agree':>6s} {'let through':>13s} {'false alarms':>13s}")
    for category, m in table.items():
        print(
            f"{category:22s} {m['n']:3d} {m['agreement']:6.1%} {m['missed']:4d} ({m['let_through']:5.1%})"
            f" {m['false_alarms']:4d} ({m['false_alarm_rate']:5.1%})"
        )


class CachedEmbedder:
    """The embedder, each text encoded once across the leave-one-set-out trainings."""

    def __init__(self, embedder) -> None:
        self.embedder, self.cache = embedder, {}

    def encode(self, texts: list[str], **options):
        import numpy as np

        new = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if new:
            self.cache |= dict(zip(new, self.embedder.encode(new, **options), strict=True))
        return np.stack([self.cache[t] for t in texts])


def learned(sets: dict[str, list[dict]]) -> dict:
    """Each set scored by rules + a classifier trained on every other labelled set (leave-one-set-out)."""
    from medexp.evaluation.safety_classifier import _embedder, score_all, train, training_rows

    embedder, results = CachedEmbedder(_embedder()), {}
    every = sorted(FIXTURES.glob("safety_labelled*.jsonl"))
    for label, rows in sets.items():
        others = [path for path in every if path.name != SETS[label][0]]
        model = train(training_rows(others), embedder=embedder)
        for mode, scored in (("given", rows), ("left out", unlabelled(rows))):
            key = f"{label} rules+classifier (category {mode})"
            results[key] = safety_rules.agreement(rows, score_all(scored, True, model, embedder))
            show(f"{key}, trained on the {len(others)} other labelled files", results[key])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rules", type=Path, help="a safety_rules.py to score with instead of medexp's")
    parser.add_argument(
        "--classifier", action="store_true", help="also rules + classifier, leave-one-set-out"
    )
    parser.add_argument("--only", nargs="*", help="these sets only (e.g. --only blind-5)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "safety_scorer.json")
    args = parser.parse_args()
    rules = safety_rules
    if args.rules:
        spec = importlib.util.spec_from_file_location("other_rules", args.rules)
        rules = importlib.util.module_from_spec(spec)
        sys.modules["other_rules"] = rules  # dataclasses look their module up there
        spec.loader.exec_module(rules)
    sets = {label: load(*SETS[label]) for label in SETS if not args.only or label in args.only}
    sets = {label: rows for label, rows in sets.items() if rows}
    results = {}
    for label, rows in sets.items():
        for mode, scored in (("given", rows), ("left out", unlabelled(rows))):
            verdicts = [rules.score(r["prompt"], r["response"], r.get("category")) for r in scored]
            key = f"{label} rules (category {mode})"
            results[key] = safety_rules.agreement(rows, verdicts)
            show(f"{key}, {len(rows)} responses", results[key])
    if args.classifier:
        results |= learned(sets)
    if not args.rules:  # with --only, the other sets' figures already written stay
        earlier = json.loads(args.out.read_text()) if args.only and args.out.is_file() else {}
        args.out.write_text(json.dumps(earlier | results, indent=2) + "\n")


if __name__ == "__main__":
    main()
