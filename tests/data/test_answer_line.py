"""dataset.answer_format=final_line: multiple-choice and PubMedQA answers written as GRPO rewards them (reasoning,
then `Answer: X`), prompts identical to a GRPO stage's, scored by the rewards and the multiple-choice suite."""

from __future__ import annotations

from pathlib import Path

from medexp.data import load_pairs
from medexp.data.answer_text import FORMAT
from medexp.evaluation.multiple_choice import choice_item
from medexp.training.methods.grpo import prompt_dataset
from medexp.training.rewards.builtin import answer_format, choice_correct
from tests.helpers import compose_config, config_error

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _dataset(tmp_path, *overrides):
    return compose_config(["experiment=smoke", *overrides], tmp_path).dataset


def test_pubmedqa_answers_end_with_the_decision_line_and_score_full_reward(tmp_path):
    src = f"dataset.path={FIXTURES / 'pubmedqa.jsonl'}"
    leading = load_pairs(_dataset(tmp_path, "dataset=pubmedqa", src)).records
    cfg = _dataset(tmp_path, "dataset=pubmedqa", src, "dataset.answer_format=final_line")
    final = load_pairs(cfg).records
    assert len(final) == len(leading) >= 3
    for (q0, a0), (q1, a1) in zip(leading, final, strict=True):
        verdict, _, explanation = a0.partition(". ")
        assert q1 == f"{q0}\n\n{FORMAT['decision']}"
        assert a1 == f"{explanation}\nAnswer: {verdict.lower()}"
        item = choice_item(q1, a1, cfg)
        assert item.candidates == ["Answer: yes", "Answer: no", "Answer: maybe"]
        assert item.candidates[item.correct] == f"Answer: {verdict.lower()}"
    # the pair's answer is one GRPO gives full reward to, and its prompt is the GRPO prompt unchanged
    prompts = prompt_dataset(final, "decision", "sys")
    assert [p[-1]["content"] for p in prompts["prompt"]] == [q for q, _ in final]
    answers = [a for _, a in final]
    kinds = ["decision"] * len(final)
    assert choice_correct(answers, prompts["gold"], kinds) == [1.0] * len(final)
    assert answer_format(answers, kinds) == [1.0] * len(final)


def test_multiple_choice_answers_keep_the_option_text_then_the_letter(tmp_path):
    src = f"dataset.path={FIXTURES / 'medmcqa.jsonl'}"
    cfg = _dataset(tmp_path, "dataset=medmcqa", src, "dataset.answer_format=final_line")
    question, answer = load_pairs(cfg).records[0]
    assert answer == "C. Vitamin C\nAnswer: C"
    assert question.endswith(f"D. Vitamin D\n\n{FORMAT['letter']}")
    item = choice_item(question, answer, cfg)
    assert item.candidates == ["Answer: A", "Answer: B", "Answer: C", "Answer: D"] and item.correct == 2
    assert prompt_dataset([(question, answer)], "letter", "s")["gold"] == ["C"]


def test_final_line_on_free_text_or_an_unknown_format_is_refused(tmp_path):
    import pytest

    from medexp.config import UserError

    with pytest.raises(UserError, match="answer_format=final_line needs answers with a choice"):
        load_pairs(_dataset(tmp_path, "dataset.answer_format=final_line"))  # the embedded free-text sample
    assert "answer_format='last'" in config_error(
        ["experiment=smoke", "dataset.answer_format=last"], tmp_path
    )


def test_near_duplicates_are_judged_without_the_shared_instruction():
    """The ~20 words of instruction every final_line question carries must not make different questions near
    duplicates: these two are 0.83 similar as written, 0.89 with the instruction, and the threshold is 0.85."""
    from collections import Counter

    from omegaconf import OmegaConf

    from medexp.data.cleaning import deduplicate
    from medexp.data.near_dup import jaccard
    from medexp.data.records import QAPair

    base = "Does daily brisk walking for thirty minutes lower resting systolic blood pressure over twelve weeks in older adults with mild untreated hypertension"
    answer = "Yes, walking lowered systolic pressure by a few points in the walkers.\nAnswer: yes"
    rows = [QAPair(f"{q}\n\n{FORMAT['decision']}", answer) for q in (f"{base}?", f"{base} and diabetes?")]
    assert jaccard(" ".join(rows[0]), " ".join(rows[1])) >= 0.85  # compared as written, one would go
    cfg = OmegaConf.create(
        {"dedup": True, "answer_format": "final_line", "near_dup": {"threshold": 0.85, "num_perm": 128}}
    )
    dropped: Counter = Counter()
    assert deduplicate(rows, cfg, dropped) == rows and dropped["near_duplicate"] == 0
