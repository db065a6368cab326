"""The dataset configs on fixture files shaped like each hub dataset, near-duplicate removal, mixtures, the
embedded safety set and the data report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from medexp.config import UserError, validate
from medexp.data import load_mixture, load_pairs, prepare_data
from medexp.data.near_dup import drop_near_duplicates, jaccard
from tests.helpers import SAFETY, config_error

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.mark.parametrize(
    ("option", "fixture", "kept"),
    [("medquad", "medquad.csv", 9), ("medquad_mlabonne", "medquad_mlabonne.jsonl", 9), ("medquad_128", "medquad_128.jsonl", 8)],
)  # fmt: skip
def test_medquad_variants_on_their_fixtures(make_cfg, tiny_tokenizer, option, fixture, kept):
    cfg = make_cfg("experiment=smoke", f"dataset={option}", f"dataset.path={FIXTURES / fixture}")
    validate(cfg)
    raw = load_pairs(cfg.dataset)
    assert raw.columns == ("Question", "Answer")
    data = prepare_data(raw, cfg.dataset, tiny_tokenizer, seed=0)
    assert data.rows_kept == kept
    expected = {"duplicate": 1, "empty_answer": 1}
    if option != "medquad_128":  # only the full-length files hold the long near-duplicate answer
        expected["near_duplicate"] = 1
    assert dict(data.dropped) == expected
    assert data.metrics()["data/dropped/duplicate"] == 1


def test_pubmedqa_rows_become_context_question_and_verdict(make_cfg, tiny_tokenizer):
    cfg = make_cfg("experiment=smoke", "dataset=pubmedqa", f"dataset.path={FIXTURES / 'pubmedqa.jsonl'}")
    validate(cfg)
    raw = load_pairs(cfg.dataset)
    assert raw.rows_in == 6 and dict(raw.dropped) == {"unknown_decision": 1, "empty_answer": 1}
    question, answer = raw.pairs[0]
    assert question == (
        "Context:\nBACKGROUND: We studied 200 adults over 65 with mild hypertension.\n"
        "RESULTS: Walkers had lower systolic pressure after 12 weeks.\n\n"
        "Question: Does daily walking lower blood pressure in older adults?"
    )
    assert answer == "Yes. Regular walking was associated with a modest fall in systolic blood pressure."
    assert [a.split(".")[0] for _, a in raw.pairs] == ["Yes", "No", "Maybe", "Yes"]  # "Yes" read case-blind
    assert prepare_data(raw, cfg.dataset, tiny_tokenizer, seed=0).rows_kept == 4


def test_pubmedqa_reads_its_hub_subset(make_cfg):
    # Offline (as every test is), the hub read fails fast; the message shows the subset was asked for.
    cfg = make_cfg("experiment=smoke", "dataset=pubmedqa")
    with pytest.raises(UserError, match=r"'qiaojin/PubMedQA' \(subset 'pqa_labeled', split 'train'\)"):
        load_pairs(cfg.dataset)


def test_a_missing_context_or_decision_column_is_named(make_cfg):
    cfg = make_cfg(
        "experiment=smoke", "dataset=pubmedqa", f"dataset.path={FIXTURES / 'pubmedqa.jsonl'}",
        "dataset.context_field=abstract",
    )  # fmt: skip
    with pytest.raises(UserError, match=r"dataset.context_field='abstract' is not a column.*'long_answer'"):
        load_pairs(cfg.dataset)


def test_near_duplicates_are_dropped_above_the_threshold_only():
    base = " ".join(f"word{i}" for i in range(120))
    near = base.replace("word60", "other")  # 0.95 Jaccard on 3-word shingles
    far = " ".join(f"word{i}" for i in range(30)) + " " + " ".join(f"x{i}" for i in range(30))
    pairs = [("Q?", base), ("Q?", near), ("Q?", far)]
    assert jaccard("Q? " + base, "Q? " + near) > 0.94 and jaccard("Q? " + base, "Q? " + far) < 0.5
    kept, dropped = drop_near_duplicates(pairs, threshold=0.9)
    assert kept == [pairs[0], pairs[2]] and dropped == 1  # the first occurrence stays
    assert drop_near_duplicates(pairs, threshold=0.97)[1] == 0
    with pytest.raises(UserError, match=r"near_dup.threshold=0.999 is too close to 1"):
        drop_near_duplicates(pairs, threshold=0.999)


def test_the_safety_set_covers_every_category_with_safe_answers():
    rows = [json.loads(line) for line in SAFETY.read_text().splitlines()]
    by_category: dict[str, int] = {}
    for row in rows:
        by_category[row["category"]] = by_category.get(row["category"], 0) + 1
        # general information only: no amount with a unit, and always a referral
        assert not re.search(r"\d+\s*(mg|mcg|g|ml|units?|tablets?|pills?)\b", row["answer"], re.I), row
        assert re.search(r"doctor|clinician|pharmacist|emergency|crisis|prescriber", row["answer"], re.I), row
    assert set(by_category) == {
        "dosing", "stopping_medication", "self_harm", "self_surgery", "emergency", "definitive_diagnosis",
    }  # fmt: skip
    assert min(by_category.values()) >= 8 and len({r["question"] for r in rows}) == len(rows)


def test_a_weighted_mixture(make_cfg, tiny_tokenizer):
    def prepared(weight: str):
        cfg = make_cfg(
            "experiment=smoke", "+dataset@mixture.safety=safety", f"mixture.safety.weight={weight}"
        )
        validate(cfg)
        mixture = load_mixture(cfg)
        return prepare_data(load_pairs(cfg.dataset), cfg.dataset, tiny_tokenizer, 0, mixture)

    data = prepared("3")
    sources = data.sources
    assert sources["dataset"].rows_kept == 360 and sources["safety"].rows_kept == 62
    # validation takes the main val_fraction of all kept rows, from both sources, never weighted
    assert len(data.validation) == round(422 * 0.1) and {"dataset", "safety"} <= set(data.validation_sources)
    safety_train = data.train_sources.count("safety")
    assert sources["safety"].train_rows == 3 * safety_train
    assert len(data.train) == sources["dataset"].train_rows + 3 * safety_train
    assert data.leakage == 0
    metrics = data.metrics()
    assert (
        metrics["data/mix/safety/weight"] == 3 and metrics["data/mix/safety/train_rows"] == 3 * safety_train
    )
    assert metrics["data/rows_in"] == 422 and metrics["data/train_rows"] == len(data.train)

    half = prepared("0.5")
    assert half.sources["safety"].train_rows == round(half.train_sources.count("safety") * 0.5)
    assert half.fingerprint != data.fingerprint


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["+dataset@mixture.safety=safety", "mixture.safety.weight=0"], "mixture.safety.weight must be positive"),
        (["dataset.weight=-1"], "dataset.weight must be positive"),
        (["dataset.near_dup.threshold=1.5"], "dataset.near_dup.threshold must be a Jaccard similarity"),
        (["dataset.near_dup.num_perm=0"], "dataset.near_dup.num_perm must be positive, got 0"),
        (["+mixture.extra=3"], r"mixture.extra \(from the command-line override \+mixture.extra=3\) needs a dataset option.*\+dataset@mixture.extra=<option>"),
        (["+stages.first.trainer.max_steps=3"], r"stages.first .*needs a dataset option.*\+dataset@stages.first.dataset=<option>"),
        (["+dataset@stages.a.dataset=sample", "+stages.a.trainer.bogus=1"], r"stages.a.trainer.bogus is not a trainer setting"),
        (["+dataset@stages.a.dataset=sample", "+stages.a.trainer.max_stepz=1"], r"Did you mean max_steps( or eval_steps)?\?"),
        (["+dataset@stages.a.dataset=sample", "+stages.a.trainer.max_steps=abc"], r"stages.a.trainer: Value 'abc'"),
        (["+dataset@stages.a.dataset=sample", "stages.a.dataset.val_fraction=2"], "stages.a.dataset.val_fraction must be"),
    ],
)  # fmt: skip
def test_bad_mixture_and_stage_settings_are_named(tmp_path, overrides, message):
    assert re.search(message, config_error(["experiment=smoke", *overrides], tmp_path))
