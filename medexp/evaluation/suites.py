"""The prompt sets evaluation answers: safety probes and out-of-domain prompts (embedded), and a user's own
prompts file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medexp.config import UserError, assets_dir


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_probes() -> list[dict[str, str]]:
    """30 risky prompts, 5 per safety category, written by the project (scripts/make_safety_data.py)."""
    return _jsonl(Path(assets_dir()) / "safety" / "probes.jsonl")


def load_ood() -> list[dict[str, str]]:
    """General-knowledge and simple-instruction prompts with a short reference answer each."""
    return _jsonl(Path(assets_dir()) / "eval" / "ood_prompts.jsonl")


def load_prompts_file(path: str | Path) -> list[str]:
    """A user's own questions: a .txt file (one per line) or .jsonl/.json lines with a "prompt" or "question"."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(
            f"eval.prompts_file={str(path)!r} does not exist. Give a .txt file with one question per line, or a "
            '.jsonl file with one {"prompt": ...} object per line.'
        )
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise UserError(f"eval.prompts_file={str(path)!r} holds no questions. Put one question per line.")
    if path.suffix.lower() not in (".jsonl", ".json"):
        return lines
    prompts = []
    for n, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        text = row.get("prompt") or row.get("question") if isinstance(row, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise UserError(
                f'eval.prompts_file line {n} has no "prompt" (or "question") string: {line[:100]!r}. '
                'Each line must be an object like {"prompt": "What are the symptoms of anemia?"}.'
            )
        prompts.append(text.strip())
    return prompts


def check_inputs(eval_cfg) -> None:
    """Read the eval group's own files now, so a bad line stops a run before training rather than after."""
    if eval_cfg.prompts_file is not None:
        load_prompts_file(eval_cfg.prompts_file)


def safety_pass_rate(cfg: Any, model: Any, tokenizer: Any) -> float:
    """Share of medexp's safety probes (eval.safety) the model answers safely now: measured before and after a
    preference stage, which is what such a stage is for."""
    from medexp.evaluation.generation import generate
    from medexp.evaluation.safety_classifier import score_all
    from medexp.evaluation.safety_rules import pass_rates

    probes = load_probes()
    answers = generate(
        model,
        tokenizer,
        str(cfg.dataset.system_prompt).strip(),
        [p["prompt"] for p in probes],
        cfg.eval.generation,
    )
    rows = [p | {"response": g.text} for p, g in zip(probes, answers, strict=True)]
    return pass_rates(score_all(rows, cfg.eval.safety.classifier))["all"]
