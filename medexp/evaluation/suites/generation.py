"""Generation on held-out questions: the first eval.generation.num_questions validation questions, each asked
with its own source's system prompt (as in training), answered by both models and compared with the reference
answers (ROUGE, BLEU, exact match, distinct-n, answer length, semantic similarity, BERTScore), plus speed (a few
questions asked again one at a time for latency)."""

from __future__ import annotations

from omegaconf import DictConfig

from medexp.evaluation.suites.base import EvalContext, Metric, Suite, Switch, flag

# Always computed when the suite runs: text overlap, diversity, length, speed.
_ALWAYS = ("rouge_1", "rouge_2", "rouge_l", "answer_words_mean", "answer_words_p50", "bleu", "exact_match",
           "distinct_1", "distinct_2", "tokens_per_s", "peak_memory_mb")  # fmt: skip
ROWS = "validation"  # the generations table's name for these rows (the judge suite reads them back)


class HeldOutGeneration(Suite):
    name = "generation"

    def switches(self, eval_cfg: DictConfig) -> tuple[Switch, ...]:
        return (flag(eval_cfg, "generation.enabled"),)

    def metrics(self, eval_cfg: DictConfig) -> list[Metric]:
        g = eval_cfg.generation
        timed = Switch(
            "eval.generation.latency_samples", g.latency_samples > 0, fix="eval.generation.latency_samples=4"
        )
        return [
            *(Metric(name) for name in _ALWAYS),
            Metric("latency_p50_s", needs=(timed,)),
            Metric("latency_p95_s", needs=(timed,)),
            Metric("semantic_similarity", needs=(flag(eval_cfg, "generation.semantic_similarity"),)),
            # skipped with one warning when its model is not available offline
            Metric("bertscore_f1", needs=(flag(eval_cfg, "generation.bertscore"),)),
        ]

    def prepare(self, ctx: EvalContext) -> int:
        data = ctx.data
        pairs = list(zip(data.validation_pairs, data.validation_sources, strict=True))
        self.chosen = pairs[: ctx.eval_cfg.generation.num_questions]
        timed = min(
            int(ctx.eval_cfg.generation.latency_samples), len(self.chosen)
        )  # asked again one at a time
        return (len(self.chosen) + timed) * ctx.models

    def run(self, ctx: EvalContext) -> None:
        if not self.chosen:
            return
        questions = [q for (q, _), _ in self.chosen]
        references = [a for (_, a), _ in self.chosen]
        systems = [str(ctx.sources[source].system_prompt).strip() for _, source in self.chosen]
        adapted, base = ctx.answer(systems, questions)
        latency, base_latency = ctx.latencies(systems, questions)
        gen_cfg = ctx.eval_cfg.generation
        ctx.result.add(
            answer_metrics(adapted, references, gen_cfg, latency),
            answer_metrics(base, references, gen_cfg, base_latency) if base is not None else None,
        )
        ctx.result.answers(ROWS, questions, references, adapted, base)


def answer_metrics(gens: list, references: list[str], gen_cfg: DictConfig, latencies: list[float]) -> dict:
    """One model's answers against the references, and its speed."""
    from medexp.evaluation import text_metrics as tm
    from medexp.evaluation.generation import speed_metrics

    texts = [g.text for g in gens]
    out = tm.rouge(texts, references) | tm.length_stats(texts)
    out |= {"bleu": tm.bleu(texts, references), "exact_match": tm.exact_match(texts, references)}
    out |= {"distinct_1": tm.distinct_n(texts, 1), "distinct_2": tm.distinct_n(texts, 2)}
    if gen_cfg.bertscore:
        f1 = tm.bertscore_f1(texts, references, gen_cfg.bertscore_model, gen_cfg.bertscore_layers)
        if f1 is not None:  # the model is not available here: skipped with one warning
            out["bertscore_f1"] = f1
    if gen_cfg.semantic_similarity:
        out["semantic_similarity"] = tm.semantic_similarity(texts, references, gen_cfg.semantic_model)
    return out | speed_metrics(gens, latencies)
