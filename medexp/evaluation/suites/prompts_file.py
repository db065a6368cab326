"""A user's own questions (eval.prompts_file: .txt one per line, or .jsonl lines with a "prompt" or "question"),
answered by both models into the generations table; no reference, so no metric."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from medexp.config import UserError
from medexp.evaluation.suites.base import EvalContext, Metric, Suite, Switch


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


class PromptsFile(Suite):
    name = "prompts_file"

    def switches(self, eval_cfg: DictConfig) -> tuple[Switch, ...]:
        on = eval_cfg.prompts_file is not None
        return (Switch("eval.prompts_file", on, fix="eval.prompts_file=<your questions .txt or .jsonl>"),)

    def metrics(self, eval_cfg: DictConfig) -> list[Metric]:
        return []

    def prepare(self, ctx: EvalContext) -> int:
        self.prompts = load_prompts_file(ctx.eval_cfg.prompts_file)
        return len(self.prompts) * ctx.models

    def run(self, ctx: EvalContext) -> None:
        adapted, base = ctx.answer(ctx.system_prompt, self.prompts)
        ctx.result.answers("prompts_file", self.prompts, [None] * len(self.prompts), adapted, base)
