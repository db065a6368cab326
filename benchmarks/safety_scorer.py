"""How often does medexp's safety scorer agree with the labels? Per category: agreement, and precision and
recall of the "unsafe" verdict, on the labelled sets in tests/fixtures.

    python benchmarks/safety_scorer.py                       # the current rules
    python benchmarks/safety_scorer.py --rules old_rules.py  # another version of safety_rules.py, to compare

Sets, in the order they were used (each written by a separate helper agent, told the categories and what
safe and unsafe mean, never shown the rules):
  dev, held-out  safety_labelled.jsonl (112): the rules were written on dev; the rules' author read held-out too.
  blind-1        safety_labelled_blind.jsonl (70): first scored unseen (88.6% agreement); its 8 misses were then
                 read and fixed, so it is a second development set now.
  blind-2, -3    safety_labelled_blind2.jsonl, _blind3.jsonl (70 each): the same, one round each (88.6% each
                 at first scoring).
  blind-4        safety_labelled_blind4.jsonl (70): scored once, never read by the rules' author: the honest
                 figure (91.4%).
The labels are a language model's, not clinicians'.
The learned second opinion (medexp/evaluation/safety_classifier.py, rules OR classifier at p >= 0.9) is
scored the same way on each blind set, trained only on the sets written before it (--classifier; ~1 min).
Writes benchmarks/safety_scorer.json.
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
}


def load(name: str, split: str | None) -> list[dict]:
    path = FIXTURES / name
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if split is None or r.get("split") == split]


def learned() -> dict:
    """Each blind set scored by rules + a classifier trained on the labelled sets written before it."""
    from medexp.evaluation.safety_classifier import score_all, train, training_rows

    results, earlier = {}, [FIXTURES / "safety_labelled.jsonl"]
    for label, (name, _) in SETS.items():
        if not label.startswith("blind"):
            continue
        rows = load(name, None)
        if not rows:
            break
        model = train(training_rows(earlier))
        table = safety_rules.agreement(rows, score_all(rows, classifier=True, model=model))
        results[f"{label} rules+classifier"] = table
        m = table["all"]
        print(
            f"{label} rules+classifier (trained on {len(earlier)} earlier sets): agreement {m['agreement']:.3f}, "
            f"precision {m['precision']:.2f}, recall {m['recall']:.2f}, {m['false_alarms']} false alarms, "
            f"{m['missed']} missed"
        )
        earlier.append(FIXTURES / name)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rules", type=Path, help="a safety_rules.py to score with instead of medexp's")
    parser.add_argument("--classifier", action="store_true", help="also score rules + the learned classifier")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "safety_scorer.json")
    args = parser.parse_args()
    rules = safety_rules
    if args.rules:
        spec = importlib.util.spec_from_file_location("other_rules", args.rules)
        rules = importlib.util.module_from_spec(spec)
        sys.modules["other_rules"] = rules  # dataclasses look their module up there
        spec.loader.exec_module(rules)
    results = {}
    for label, (name, split) in SETS.items():
        rows = load(name, split)
        if not rows:
            continue
        table = safety_rules.agreement(
            rows, [rules.score(r["prompt"], r["response"], r["category"]) for r in rows]
        )
        results[label] = table
        print(f"\n{label} ({len(rows)} responses)")
        print(f"{'category':22s} {'n':>3s} {'agree':>6s} {'prec':>6s} {'recall':>6s}  false alarms  missed")
        for category, m in table.items():
            print(
                f"{category:22s} {m['n']:3d} {m['agreement']:6.2f} {m['precision']:6.2f} {m['recall']:6.2f}"
                f"  {m['false_alarms']:12d}  {m['missed']:6d}"
            )
    if args.classifier:
        results |= learned()
    if not args.rules:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
