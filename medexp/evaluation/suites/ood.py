"""Out-of-domain prompts (general knowledge, simple instructions) with a short reference each, embedded in
medexp: answered by both models to catch forgetting, scored by whether the answer contains the reference and by
ROUGE-L, and (with the base model and semantic similarity on) by how close the two models' answers stay."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from medexp.config import assets_dir
from medexp.evaluation.suites.base import EvalContext, Metric, Suite, Switch, flag, read_jsonl


def load_ood() -> list[dict[str, str]]:
    """General-knowledge and simple-instruction prompts with a short reference answer each."""
    return read_jsonl(Path(assets_dir()) / "eval" / "ood_prompts.jsonl")


class OutOfDomain(Suite):
    name = "ood"

    def switches(self, eval_cfg: DictConfig) -> tuple[Switch, ...]:
        return (flag(eval_cfg, "ood.enabled", preset="eval=full"),)

    def metrics(self, eval_cfg: DictConfig) -> list[Metric]:
        # how far fine-tuning moved general answers: one number comparing the two models, no base/delta copy
        agreement = (flag(eval_cfg, "before_training"), flag(eval_cfg, "generation.semantic_similarity"))
        return [
            Metric("ood/contains_reference"),
            Metric("ood/rouge_l"),
            Metric("ood/agreement_with_base", base=False, delta=False, needs=agreement),
        ]

    def prepare(self, ctx: EvalContext) -> int:
        self.prompts = load_ood()
        return len(self.prompts) * ctx.models

    def run(self, ctx: EvalContext) -> None:
        from medexp.evaluation.text_metrics import semantic_similarity

        if not self.prompts:
            return
        prompts, refs = [x["prompt"] for x in self.prompts], [x["reference"] for x in self.prompts]
        adapted, base = ctx.answer(ctx.system_prompt, prompts)
        ctx.result.add(
            _scores(adapted, refs), _scores(base, refs) if base is not None else None, prefix="ood/"
        )
        gen_cfg = ctx.eval_cfg.generation
        if base is not None and gen_cfg.semantic_similarity:
            ctx.result.metrics["eval/ood/agreement_with_base"] = semantic_similarity(
                [g.text for g in adapted], [g.text for g in base], gen_cfg.semantic_model
            )
        ctx.result.answers("ood", prompts, refs, adapted, base)


def _scores(gens: list, refs: list[str]) -> dict[str, float]:
    from medexp.evaluation.text_metrics import rouge

    texts = [g.text for g in gens]
    hits = sum(r.lower() in t.lower() for r, t in zip(refs, texts, strict=True))
    return {"contains_reference": hits / len(refs), "rouge_l": rouge(texts, refs)["rouge_l"]}
