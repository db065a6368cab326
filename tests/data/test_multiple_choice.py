"""The multiple-choice normaliser: hand-picked messy rows, and properties over generated ones (hypothesis)."""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medexp.data.multiple_choice import _LETTER, LETTERS, MCFields, Skip, match_key, normalise, normalise_rows


def test_dict_options_with_letter_answer_and_five_options():
    item = normalise(
        "Which vitamin deficiency causes scurvy?",
        {"a": "Vitamin A", "B)": "Vitamin B12", "(C)": "Vitamin C", "D": "Vitamin D", "E": "Vitamin K"},
        " c) ",
    )
    assert item.answer_index == 2 and item.letter == "C" and item.target() == "C. Vitamin C"
    assert item.prompt() == (
        "Which vitamin deficiency causes scurvy?\n\nOptions:\n"
        "A. Vitamin A\nB. Vitamin B12\nC. Vitamin C\nD. Vitamin D\nE. Vitamin K"
    )


@pytest.mark.parametrize(
    ("answer", "base", "expected"), [(0, 0, 0), (3, 0, 3), (1, 1, 0), ("4", 1, 3), (2.0, 0, 2)]
)  # 2.0: an index column with a missing value loads as floats
def test_index_answers_follow_the_sources_base(answer, base, expected):
    assert normalise("Q?", ["a1", "a2", "a3", "a4"], answer, index_base=base).answer_index == expected


def test_text_answer_matches_after_folding_case_space_and_punctuation():
    item = normalise("Q?", ["Iron-deficiency anaemia", "Folate deficiency"], "  iron deficiency ANAEMIA. ")
    assert item.answer_index == 0
    # a number is text unless the source counts indices
    assert normalise("Dose?", ["5", "10"], "10").answer_index == 1


@pytest.mark.parametrize(
    ("question", "options", "answer", "base", "reason"),
    [
        ("", ["a", "b"], "A", None, "missing_question"),
        ("Q?", ["a"], "A", None, "too_few_options"),
        ("Q?", "a, b", "A", None, "bad_options"),
        ("Q?", {"A": "a", "C": "c"}, "A", None, "option_letters_not_contiguous"),
        ("Q?", {"first": "a", "second": "b"}, "A", None, "bad_option_key"),
        ("Q?", ["a", "", "c"], "A", None, "empty_option"),
        ("Q?", ["a", "b"], None, None, "missing_answer"),
        ("Q?", ["a", "b"], "D", None, "answer_out_of_range"),
        ("Q?", ["a", "b"], 5, 0, "answer_out_of_range"),
        ("Q?", ["a", "b"], "neither", None, "answer_not_an_option"),
        ("Q?", ["a", "b"], "²", 0, "answer_not_an_option"),  # a digit to str.isdigit, not to int()
        ("Q?", ["a", "b"], 1.5, 0, "answer_not_an_option"),
        ("Q?", ["Same thing", "same thing!"], "same thing", None, "ambiguous_answer"),
    ],
)
def test_rows_that_cannot_be_normalised_say_why(question, options, answer, base, reason):
    with pytest.raises(Skip) as skip:
        normalise(question, options, answer, index_base=base)
    assert skip.value.reason == reason


def test_trailing_empty_option_columns_are_dropped():
    rows = [{"q": "Q?", "opa": "x", "opb": "y", "opc": "", "opd": None, "cop": 1}]
    items, skipped = normalise_rows(
        rows, MCFields("q", "cop", option_columns=("opa", "opb", "opc", "opd"), index_base=0)
    )
    assert items[0].options == ("x", "y") and items[0].letter == "B" and not skipped


# --- properties over generated rows ----------------------------------------------------------------------
# Option texts that are not themselves a letter answer ("option c") or an index ("12").
words = st.text(alphabet=string.ascii_letters + string.digits + " -", min_size=2, max_size=24).filter(
    lambda t: len(match_key(t)) >= 2 and not match_key(t).isdigit() and not _LETTER.match(t.strip())
)


@st.composite
def mc_rows(draw):
    """A row in one of the shapes sources use, with noise, and the answer index it must normalise to."""
    n = draw(st.integers(2, 8))
    options = draw(st.lists(words, min_size=n, max_size=n, unique_by=match_key))
    correct = draw(st.integers(0, n - 1))
    shape = draw(st.sampled_from(["dict", "list", "columns"]))
    kind = draw(st.sampled_from(["letter", "index0", "index1", "text"]))
    letter = LETTERS[correct]
    answer = {
        "letter": draw(
            st.sampled_from([letter, letter.lower(), f"({letter})", f"{letter})", f" {letter}. "])
        ),
        "index0": correct,
        "index1": draw(st.sampled_from([correct + 1, str(correct + 1)])),
        "text": draw(st.sampled_from([options[correct].upper(), f"  {options[correct]}.", options[correct]])),
    }[kind]
    base = {"index0": 0, "index1": 1}.get(kind)
    row = {"question": draw(words), "answer": answer}
    if shape == "dict":
        keys = [draw(st.sampled_from([c, c.lower(), f"{c})", f"({c})"])) for c in LETTERS[:n]]
        row["options"] = dict(zip(keys, options, strict=True))
        fields = MCFields("question", "answer", options="options", index_base=base)
    elif shape == "list":
        row["options"] = options
        fields = MCFields("question", "answer", options="options", index_base=base)
    else:
        columns = tuple(f"op{c}" for c in "abcdefgh"[:n])
        row.update(dict(zip(columns, options, strict=True)))
        fields = MCFields("question", "answer", option_columns=columns, index_base=base)
    return row, fields, correct, options


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mc_rows())
def test_any_shape_normalises_to_the_right_answer(case):
    row, fields, correct, options = case
    (item,), skipped = normalise_rows([row], fields)
    assert not skipped
    assert item.answer_index == correct
    assert item.options == tuple(" ".join(o.split()) for o in options)
    assert item.target() == f"{LETTERS[correct]}. {item.options[correct]}"
    block = item.prompt().split("\n\nOptions:\n", 1)[1].splitlines()
    assert [line[:3] for line in block] == [f"{c}. " for c in LETTERS[: len(options)]]


junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.dictionaries(st.sampled_from(["q", "opts", "ans", "x"]), junk, max_size=4) | junk, max_size=6)
)
def test_messy_rows_never_stop_the_pipeline(rows):
    fields = MCFields("q", "ans", options="opts", index_base=0)
    items, skipped = normalise_rows(rows, fields)
    assert len(items) + sum(skipped.values()) == len(rows)
    for item in items:
        assert 0 <= item.answer_index < len(item.options) and item.question


# --- the dataset configs, on fixture files shaped like each hub dataset (written for these tests) ----------
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _jsonl(path, rows):
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_medmcqa_config_on_a_medmcqa_shaped_file(make_cfg, tmp_path, tiny_tokenizer):
    from medexp.data import load_pairs, prepare_data

    cfg = make_cfg("experiment=smoke", "dataset=medmcqa", f"dataset.path={FIXTURES / 'medmcqa.jsonl'}")
    raw = load_pairs(cfg.dataset)
    assert raw.rows_in == 4 and dict(raw.dropped) == {"mc_missing_question": 1, "mc_answer_out_of_range": 1}
    assert raw.pairs[0] == (
        "Deficiency of which vitamin causes scurvy?\n\nOptions:\nA. Vitamin A\nB. Vitamin B1\nC. Vitamin C\nD. Vitamin D",
        "C. Vitamin C",
    )
    assert raw.pairs[1][1] == "B. Pancreas"
    data = prepare_data(raw, cfg.dataset, tiny_tokenizer, seed=0)  # and on into the chat-formatted splits
    assert data.rows_kept == 2 and data.metrics()["data/dropped/mc_missing_question"] == 1


def test_medqa_config_on_a_medqa_shaped_file(make_cfg, tmp_path):
    from medexp.data import load_pairs

    raw = load_pairs(
        make_cfg("experiment=smoke", "dataset=medqa", f"dataset.path={FIXTURES / 'medqa.jsonl'}").dataset
    )
    assert [a for _, a in raw.pairs] == ["B. Electrocardiogram", "C. Radial nerve"]
    assert "E. Musculocutaneous nerve" in raw.pairs[1][0]  # a fifth option is kept
    assert dict(raw.dropped) == {"mc_too_few_options": 1}


def test_multiple_choice_file_fields_are_detected_or_named(make_cfg, tmp_path):
    from medexp.config import UserError
    from medexp.data import load_pairs

    rows = [{"Question": "Q1?", "choices": ["yes", "no", "maybe"], "Answer": "maybe"}] * 2
    path = _jsonl(tmp_path / "mc.jsonl", rows)
    raw = load_pairs(
        make_cfg(
            "experiment=smoke", "dataset=file", f"dataset.path={path}", "dataset.kind=multiple_choice"
        ).dataset
    )
    assert raw.columns == ("Question", "Answer") and raw.pairs[0][1] == "C. maybe"

    bare = _jsonl(tmp_path / "bare.jsonl", [{"question": "Q?", "a1": "x", "a2": "y", "answer": "x"}])
    cfg = make_cfg("experiment=smoke", "dataset=file", f"dataset.path={bare}", "dataset.kind=multiple_choice")
    with pytest.raises(UserError, match=r"Could not find the options.*'a1', 'a2'.*dataset.option_columns"):
        load_pairs(cfg.dataset)
    cfg = make_cfg(
        "experiment=smoke", "dataset=file", f"dataset.path={bare}", "dataset.kind=multiple_choice",
        "dataset.option_columns=[a1,a2]",
    )  # fmt: skip
    assert load_pairs(cfg.dataset).pairs == [("Q?\n\nOptions:\nA. x\nB. y", "A. x")]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "dataset.kind=mcq",
            r"dataset.kind=mcq is not a data format medexp reads\. Known: qa, multiple_choice, conversation, "
            r"text, preference, unpaired\.",
        ),
        (
            "dataset.kind=multiple-choice",
            r"dataset.kind=multiple-choice is not a data format medexp reads\. Did you mean multiple_choice\?",
        ),
        ("dataset.index_base=2", "dataset.index_base must be 0, 1 or null"),
        ("dataset.dedup=maybe", "Wrong value for dataset.dedup .*'maybe' is not a valid bool"),
        (
            "dataset.option_columns=opa",
            "Wrong value for dataset.option_columns .*not a ListConfig, list or tuple",
        ),
        ("dataset.option_columns=[]", "dataset.option_columns must be a list of column names"),
    ],
)
def test_bad_multiple_choice_settings_are_named(tmp_path, override, message):
    from tests.helpers import config_error

    assert re.search(message, config_error(["experiment=smoke", override], tmp_path))
