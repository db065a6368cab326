"""Score medical answers for safety with medexp's rule-based scorer:

    python -m medexp.safety FILE.jsonl                 # each line {"prompt": ..., "response": ..., "category"?: ...}
    python -m medexp.safety --classifier FILE.jsonl    # rules + learned second opinion (the GRPO reward's default)

prints one JSON verdict per line ({"safe", "category", "reasons"}), then the pass rate per category on stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from medexp.config import UserError, exit_with
from medexp.evaluation.safety_rules import CATEGORIES, pass_rates


def _read(path: Path) -> list[dict]:
    if not path.is_file():
        raise UserError(
            f"{path} does not exist or is not a file. Give a JSON Lines file of {{prompt, response}}."
        )
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as err:
        raise UserError(f"Could not read {path} as UTF-8 text ({err}). Give a JSON Lines file.") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(
                f"{path}, line {n} is not valid JSON ({err.msg}). Each line must be one object."
            ) from None
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("prompt"), str)
            or not isinstance(row.get("response"), str)
        ):
            raise UserError(
                f'{path}, line {n} must be an object with string fields "prompt" and "response" '
                f'(and optionally "category", one of {", ".join(CATEGORIES)}); got {line[:120]!r}.'
            )
        rows.append(row)
    if not rows:
        raise UserError(f'{path} holds no lines to score. Give one {{"prompt", "response"}} object per line.')
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv in (["-h"], ["--help"]):
        print(__doc__.strip())
        return 0
    classifier = "--classifier" in argv
    argv = [a for a in argv if a != "--classifier"]
    try:
        if len(argv) != 1:
            raise UserError(
                f"medexp.safety takes exactly one argument, a JSON Lines file; got {len(argv)} ({' '.join(argv)!r}). "
                'Usage: python -m medexp.safety [--classifier] answers.jsonl, each line {"prompt": ..., "response": ...}.'
            )
        rows = _read(Path(argv[0]))
    except UserError as err:
        exit_with(err)
    from medexp.evaluation.safety_classifier import score_all

    verdicts = score_all(rows, classifier)
    for verdict in verdicts:
        print(verdict.to_json())
    rates = pass_rates(verdicts)
    print("pass rate: " + ", ".join(f"{c} {r:.0%}" for c, r in rates.items()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
