"""The safety probes: 30 risky prompts embedded in medexp, 5 per category (dosing, stopping medication,
self-harm, self-surgery, emergencies, definitive diagnosis), answered by both models and scored by medexp's
rules (and the learned classifier with eval.safety.classifier), pass rate per category; with
eval.safety.judge.enabled, an LLM's SAFE/UNSAFE verdict too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from medexp.config import assets_dir
from medexp.evaluation.suites.base import EvalContext, Metric, Suite, Switch, flag, read_jsonl


def load_probes() -> list[dict[str, str]]:
    """30 risky prompts, 5 per safety category, written by the project (scripts/make_safety_data.py)."""
    return read_jsonl(Path(assets_dir()) / "safety" / "probes.jsonl")


class SafetyProbes(Suite):
    name = "safety"

    def switches(self, eval_cfg: DictConfig) -> tuple[Switch, ...]:
        return (flag(eval_cfg, "safety.enabled", preset="eval=safety"),)

    def metrics(self, eval_cfg: DictConfig) -> list[Metric]:
        from medexp.evaluation.safety_rules import CATEGORIES

        judge = flag(eval_cfg, "safety.judge.enabled", preset="eval=safety with a judge endpoint")
        return [
            Metric("safety_pass_rate"),
            *(Metric(f"safety/{c}") for c in CATEGORIES),
            Metric("safety_judge_pass_rate", delta=False, needs=(judge,)),  # the judge's verdict per model
        ]

    def prepare(self, ctx: EvalContext) -> int:
        self.probes = load_probes()
        return len(self.probes) * ctx.models

    def run(self, ctx: EvalContext) -> None:
        from medexp.evaluation.safety_classifier import score_all
        from medexp.evaluation.safety_rules import pass_rates

        probes, e = self.probes, ctx.eval_cfg
        prompts = [p["prompt"] for p in probes]
        adapted, base = ctx.answer(ctx.system_prompt, prompts)
        answers = {"adapted": adapted} | ({"base": base} if base is not None else {})
        verdicts = {
            who: score_all([p | {"response": g.text} for p, g in zip(probes, gens, strict=True)], e.safety.classifier)
            for who, gens in answers.items()
        }  # fmt: skip
        rates = {who: pass_rates(v) for who, v in verdicts.items()}
        ctx.result.safety = rates
        ctx.result.add(
            _as_metrics(rates["adapted"]), _as_metrics(rates["base"]) if base is not None else None
        )
        if e.safety.judge.enabled:
            from medexp.evaluation.judge import judge

            for who, gens in answers.items():
                safe = judge(e.safety.judge, prompts, [g.text for g in gens])
                key = (
                    "eval/safety_judge_pass_rate" if who == "adapted" else "eval/base/safety_judge_pass_rate"
                )
                ctx.result.metrics[key] = sum(safe) / len(safe)
        for i, probe in enumerate(probes):
            row = {"suite": "safety", "prompt": probe["prompt"], "reference": probe["category"],
                   "adapted": adapted[i].text, "adapted_safe": verdicts["adapted"][i].safe,
                   "base": base[i].text if base is not None else None}  # fmt: skip
            if base is not None:
                row["base_safe"] = verdicts["base"][i].safe
            ctx.result.rows.append(row)


def _as_metrics(rates: dict[str, float]) -> dict[str, float]:
    return {"safety_pass_rate": rates["all"]} | {f"safety/{c}": v for c, v in rates.items() if c != "all"}


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
