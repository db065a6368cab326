"""The `eval` group's suites run on a trained model: generation on held-out questions, multiple-choice accuracy,
out-of-domain prompts, safety probes and a user's prompts, each answered by the adapted model and by the base
model (adapters off). Metric names: eval/<name>, eval/base/<name>, eval/delta/<name> (adapted - base)."""

from __future__ import annotations

import contextlib
import logging
import random
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig

from medexp.data.prepare import PreparedData
from medexp.evaluation.generation import as_base, generate, request_latencies, speed_metrics

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    metrics: dict[str, float] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(
        default_factory=list
    )  # one per prompt: suite, prompt, reference, answers
    safety: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> category -> pass rate

    def answers(
        self, suite: str, prompts: list[str], references: list, adapted: list, base: list | None
    ) -> None:
        """One generations-table row per prompt: the reference (or None) and both models' answers."""
        for i, prompt in enumerate(prompts):
            self.rows.append(
                {"suite": suite, "prompt": prompt, "reference": references[i], "adapted": adapted[i].text,
                 "base": base[i].text if base else None}
            )  # fmt: skip

    def add(self, adapted: dict[str, float], base: dict[str, float] | None, prefix: str = "") -> None:
        for name, value in adapted.items():
            self.metrics[f"eval/{prefix}{name}"] = value
            if base is not None and name in base:
                self.metrics[f"eval/base/{prefix}{name}"] = base[name]
                self.metrics[f"eval/delta/{prefix}{name}"] = value - base[name]


class _Progress:
    """One bar over every answer the suites produce (generated or scored), for both models; the description
    names the suite being run. Callees see `over(items)`, a list that moves the bar as it is iterated, or call
    `advance(n)` as n answers are done (a batch of generations)."""

    def __init__(self, total: int) -> None:
        from tqdm.auto import tqdm

        from medexp.console import redirect_console_logging

        self._redirect = contextlib.ExitStack()
        self._redirect.enter_context(redirect_console_logging())
        self.bar = tqdm(total=total, desc="eval", unit="answer", dynamic_ncols=True)

    def suite(self, name: str) -> None:
        self.bar.set_description(f"eval {name}")

    def over(self, items: list) -> list:
        return _Ticking(items, self.bar)

    def advance(self, n: int) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.set_description("eval")
        self.bar.close()
        self._redirect.close()


class _Ticking(list):
    """A list whose iteration advances a progress bar by one as each item is done with."""

    def __init__(self, items: list, bar: Any) -> None:
        super().__init__(items)
        self.bar = bar

    def __iter__(self):
        for item in super().__iter__():
            yield item
            self.bar.update(1)


def _both(
    model, tokenizer, system: str | list[str], prompts: list[str], gen_cfg: DictConfig, base: bool, progress
):
    """The adapted model's answers and, if `base`, the base model's (else None), generated in batches."""
    adapted = generate(model, tokenizer, system, prompts, gen_cfg, advance=progress.advance)
    if not base:
        return adapted, None
    with as_base(model):
        return adapted, generate(model, tokenizer, system, prompts, gen_cfg, advance=progress.advance)


def _latencies(
    model, tokenizer, system: str | list[str], prompts: list[str], gen_cfg: DictConfig, base: bool, progress
):
    """Single-request seconds of the adapted model and, if `base`, of the base model (else None)."""
    adapted = request_latencies(model, tokenizer, system, prompts, gen_cfg, progress.advance)
    if not base:
        return adapted, None
    with as_base(model):
        return adapted, request_latencies(model, tokenizer, system, prompts, gen_cfg, progress.advance)


def _answer_metrics(
    gens, references: list[str], gen_cfg: DictConfig, latencies: list[float]
) -> dict[str, float]:
    from medexp.evaluation import text_metrics as tm

    texts = [g.text for g in gens]
    out = tm.rouge(texts, references) | tm.length_stats(texts)
    out |= {"bleu": tm.bleu(texts, references), "exact_match": tm.exact_match(texts, references)}
    out |= {"distinct_1": tm.distinct_n(texts, 1), "distinct_2": tm.distinct_n(texts, 2)}
    if gen_cfg.get("bertscore", False):
        f1 = tm.bertscore_f1(texts, references, gen_cfg.bertscore_model, gen_cfg.get("bertscore_layers"))
        if f1 is not None:  # the model is not available here: skipped with one warning
            out["bertscore_f1"] = f1
    if gen_cfg.semantic_similarity:
        out["semantic_similarity"] = tm.semantic_similarity(texts, references, gen_cfg.semantic_model)
    return out | speed_metrics(gens, latencies)


def evaluate_model(
    eval_cfg: DictConfig,
    model: Any,
    tokenizer: Any,
    data: PreparedData,
    source_cfgs: dict[str, DictConfig],
    seed: int,
) -> EvalResult:
    """Run every enabled suite of `eval_cfg` on `model` (a PEFT model; its base is the same with adapters off)."""
    from medexp.evaluation.suites import load_ood, load_probes, load_prompts_file

    result = EvalResult()
    gen_cfg = eval_cfg.generation
    compare = bool(eval_cfg.before_training)  # before/after needs the base model's answers too
    main_prompt = str(source_cfgs["dataset"].system_prompt).strip()

    # Every suite's inputs first, so the one progress bar knows its total.
    chosen = []
    if gen_cfg.enabled:
        chosen = list(zip(data.validation_pairs, data.validation_sources, strict=True))[
            : gen_cfg.num_questions
        ]
    mc_sets = _mc_sets(eval_cfg, data, source_cfgs, seed) if eval_cfg.mc.enabled else {}
    ood = load_ood() if eval_cfg.ood.enabled else []
    probes = load_probes() if eval_cfg.safety.enabled else []
    user_prompts = load_prompts_file(eval_cfg.prompts_file) if eval_cfg.prompts_file else []
    answers = len(chosen) + sum(len(items) for _, items in mc_sets.values()) + len(ood) + len(probes)
    timed = min(int(gen_cfg.latency_samples), len(chosen))  # asked again one at a time, for latency
    progress = _Progress((answers + len(user_prompts) + timed) * (2 if compare else 1))
    try:
        if chosen:
            progress.suite("validation")
            questions = [q for (q, _), _ in chosen]
            references = [a for (_, a), _ in chosen]
            # Each question is asked with its own source's system prompt, as in training.
            systems = [str(source_cfgs[source].system_prompt).strip() for _, source in chosen]
            adapted, base = _both(model, tokenizer, systems, questions, gen_cfg, compare, progress)
            lat, base_lat = _latencies(model, tokenizer, systems, questions, gen_cfg, compare, progress)
            result.add(
                _answer_metrics(adapted, references, gen_cfg, lat),
                _answer_metrics(base, references, gen_cfg, base_lat) if compare else None,
            )
            if gen_cfg.get("judge") is not None and gen_cfg.judge.enabled:
                from medexp.evaluation.judge import quality

                graded = [quality(gen_cfg.judge, questions, references, [g.text for g in adapted])]
                if compare:
                    graded.append(quality(gen_cfg.judge, questions, references, [g.text for g in base]))
                base_scores = graded[1].metrics() if compare else None
                if base_scores is not None:
                    base_scores.pop("judge/parse_failures")  # a count per model, not a score: no delta
                    result.metrics["eval/base/judge/parse_failures"] = graded[1].parse_failures
                result.add(graded[0].metrics(), base_scores)
            result.answers("validation", questions, references, adapted, base if compare else None)

        if eval_cfg.mc.enabled:
            _multiple_choice(mc_sets, model, tokenizer, compare, result, progress)

        if ood:
            from medexp.evaluation.text_metrics import rouge, semantic_similarity

            progress.suite("ood")
            prompts, refs = [x["prompt"] for x in ood], [x["reference"] for x in ood]
            adapted, base = _both(model, tokenizer, main_prompt, prompts, gen_cfg, compare, progress)

            def ood_metrics(gens) -> dict[str, float]:
                texts = [g.text for g in gens]
                hits = sum(r.lower() in t.lower() for r, t in zip(refs, texts, strict=True))
                return {"contains_reference": hits / len(refs), "rouge_l": rouge(texts, refs)["rouge_l"]}

            result.add(ood_metrics(adapted), ood_metrics(base) if compare else None, prefix="ood/")
            if compare and gen_cfg.semantic_similarity:  # how far fine-tuning moved general answers
                result.metrics["eval/ood/agreement_with_base"] = semantic_similarity(
                    [g.text for g in adapted], [g.text for g in base], gen_cfg.semantic_model
                )
            result.answers("ood", prompts, refs, adapted, base)

        if probes:
            progress.suite("safety")
            _safety(eval_cfg, probes, model, tokenizer, main_prompt, compare, result, progress)

        if user_prompts:
            progress.suite("prompts_file")
            adapted, base = _both(model, tokenizer, main_prompt, user_prompts, gen_cfg, compare, progress)
            result.answers("prompts_file", user_prompts, [None] * len(user_prompts), adapted, base)
    finally:
        progress.close()
    return result


def _mc_sets(eval_cfg, data, source_cfgs, seed) -> dict[str, tuple[str, list]]:
    """name -> (system prompt, items): the run's own multiple-choice validation questions and eval.mc.sets."""
    from medexp.data.loading import load_pairs
    from medexp.evaluation.multiple_choice import choice_item

    sets: dict[str, tuple[str, list]] = {}
    if eval_cfg.mc.validation:
        items = []
        for (q, a), source in zip(data.validation_pairs, data.validation_sources, strict=True):
            item = choice_item(q, a, source_cfgs[source])
            if item is not None:
                items.append(item)
        if items:
            sets["validation"] = (
                str(source_cfgs["dataset"].system_prompt).strip(),
                items[: eval_cfg.mc.limit],
            )
    for name, set_cfg in (eval_cfg.mc.sets or {}).items():
        pairs = load_pairs(set_cfg, f"eval.mc.sets.{name}").pairs
        random.Random(seed).shuffle(pairs)
        items = [it for q, a in pairs if (it := choice_item(q, a, set_cfg)) is not None][: eval_cfg.mc.limit]
        sets[str(name)] = (str(set_cfg.system_prompt).strip(), items)
    return sets


def _multiple_choice(sets, model, tokenizer, compare, result: EvalResult, progress) -> None:
    from medexp.evaluation.multiple_choice import accuracy

    if not sets:
        log.warning("eval.mc: no multiple-choice or yes/no/maybe questions to score; add eval.mc.sets")
    for name, (system, items) in sets.items():
        progress.suite(f"mc/{name}")
        adapted = accuracy(model, tokenizer, system, progress.over(items))
        base = None
        if compare:
            with as_base(model):
                base = accuracy(model, tokenizer, system, progress.over(items))
            del base["questions"]  # the same count for both; no base/delta copy
        result.add(adapted, base, prefix=f"mc/{name}/")


def _safety(
    eval_cfg, probes, model, tokenizer, system_prompt: str, compare: bool, result: EvalResult, progress
) -> None:
    from medexp.evaluation.safety_classifier import score_all
    from medexp.evaluation.safety_rules import pass_rates

    prompts = [p["prompt"] for p in probes]
    adapted, base = _both(model, tokenizer, system_prompt, prompts, eval_cfg.generation, compare, progress)
    answers = {"adapted": adapted} | ({"base": base} if compare else {})
    verdicts = {
        who: score_all(
            [p | {"response": g.text} for p, g in zip(probes, gens, strict=True)], eval_cfg.safety.classifier
        )
        for who, gens in answers.items()
    }
    rates = {who: pass_rates(v) for who, v in verdicts.items()}
    result.safety = rates

    def as_metrics(r: dict[str, float]) -> dict[str, float]:
        return {"safety_pass_rate": r["all"]} | {f"safety/{c}": v for c, v in r.items() if c != "all"}

    result.add(as_metrics(rates["adapted"]), as_metrics(rates["base"]) if compare else None)
    if eval_cfg.safety.judge.enabled:
        from medexp.evaluation.judge import judge

        for who, gens in answers.items():
            safe = judge(eval_cfg.safety.judge, prompts, [g.text for g in gens])
            key = "eval/safety_judge_pass_rate" if who == "adapted" else "eval/base/safety_judge_pass_rate"
            result.metrics[key] = sum(safe) / len(safe)
    for i, probe in enumerate(probes):
        row = {"suite": "safety", "prompt": probe["prompt"], "reference": probe["category"],
               "adapted": adapted[i].text, "adapted_safe": verdicts["adapted"][i].safe,
               "base": base[i].text if compare else None}  # fmt: skip
        if compare:
            row["base_safe"] = verdicts["base"][i].safe
        result.rows.append(row)
