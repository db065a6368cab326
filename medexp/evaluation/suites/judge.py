"""The LLM quality judge: grades the generation suite's answers (adapted and base) against their references on
four criteria, 1-5 each (medexp.evaluation.judge.quality), through any OpenAI-compatible endpoint. It reads the
answers back from the generations table, so it runs after the generation suite and asks the models nothing."""

from __future__ import annotations

from omegaconf import DictConfig

from medexp.evaluation.suites.base import EvalContext, Metric, Suite, Switch, flag
from medexp.evaluation.suites.generation import ROWS


class QualityJudge(Suite):
    name = "judge"

    def switches(self, eval_cfg: DictConfig) -> tuple[Switch, ...]:
        return (
            flag(eval_cfg, "generation.enabled"),
            flag(eval_cfg, "generation.judge.enabled", preset="eval=default with a judge endpoint"),
        )

    def metrics(self, eval_cfg: DictConfig) -> list[Metric]:
        from medexp.evaluation.judge import CRITERIA

        # parse failures: a count per model, not a score, so a base copy but no delta
        return [Metric(f"judge/{c}") for c in CRITERIA] + [Metric("judge/parse_failures", delta=False)]

    def run(self, ctx: EvalContext) -> None:
        from medexp.evaluation.judge import quality

        rows = [r for r in ctx.result.rows if r["suite"] == ROWS]
        if not rows:
            return
        judge_cfg = ctx.eval_cfg.generation.judge
        questions, references = [r["prompt"] for r in rows], [r["reference"] for r in rows]
        graded = [quality(judge_cfg, questions, references, [r["adapted"] for r in rows])]
        if ctx.compare:
            graded.append(quality(judge_cfg, questions, references, [r["base"] for r in rows]))
        base_scores = graded[1].metrics() if ctx.compare else None
        if base_scores is not None:
            base_scores.pop("judge/parse_failures")  # no delta of a count
            ctx.result.metrics["eval/base/judge/parse_failures"] = graded[1].parse_failures
        ctx.result.add(graded[0].metrics(), base_scores)
