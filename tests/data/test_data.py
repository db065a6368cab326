"""The data path on local files with odd rows, column detection, the answer-only loss mask and the split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medexp.config import UserError, validate
from medexp.data import chat_messages, load_pairs, prepare_data, resolve_columns, tokenize_pairs

ODD_CSV = """Question,Answer,qtype
What is asthma?,Asthma is a condition of the airways.,information
What causes gout?,,causes
,Orphan answer without a question.,causes
   ,   ,blank
"What is ""NA""?",NA,information
What is anemia?,"Anemia means too few
healthy red blood cells.",information
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def jsonl(path: Path, rows: list[dict]) -> Path:
    return write(path, "".join(json.dumps(r) + "\n" for r in rows))


def test_csv_with_odd_rows(make_cfg, tmp_path, tiny_tokenizer):
    path = write(tmp_path / "odd.csv", ODD_CSV)
    cfg = make_cfg("experiment=smoke", "dataset=file", f"dataset.path={path}", "dataset.val_fraction=0.34")
    validate(cfg)
    raw = load_pairs(cfg.dataset)
    assert raw.rows_in == 6
    assert raw.columns == ("Question", "Answer")
    assert dict(raw.dropped) == {"empty_answer": 1, "empty_question": 2}
    # "NA" is an answer, not a missing value; a quoted multi-line answer stays one answer
    assert ('What is "NA"?', "NA") in raw.pairs
    assert ("What is anemia?", "Anemia means too few\nhealthy red blood cells.") in raw.pairs

    data = prepare_data(raw, cfg.dataset, tiny_tokenizer, seed=0)
    assert data.rows_kept == 3 and len(data.validation_pairs) == 1 and len(data.train_pairs) == 2
    assert data.metrics() == {
        "data/rows_in": 6,
        "data/rows_kept": 3,
        "data/train_rows": 2,
        "data/validation_rows": 1,
        "data/leakage": 0,
        "data/dropped/empty_answer": 1,
        "data/dropped/empty_question": 2,
    }
    assert "read 6 rows, kept 3" in data.summary()


def test_jsonl_with_missing_keys_and_unusual_names(make_cfg, tmp_path, tiny_tokenizer):
    rows = [
        {"instruction": "What is eczema?", "output": "Eczema is a skin condition.", "id": 1},
        {"instruction": "What is gout?", "id": 2},  # no output key at all
        {"output": "An answer with no instruction.", "id": 3},
        {"instruction": "What is acne?", "output": None},
        {"instruction": "  What is a cataract?  ", "output": " Clouding of the lens. "},
        {"instruction": 42, "output": 7},  # numbers are text too
    ]
    path = jsonl(tmp_path / "alpaca.jsonl", rows)
    cfg = make_cfg("experiment=smoke", "dataset=file", f"dataset.path={path}")
    raw = load_pairs(cfg.dataset)
    assert raw.columns == ("instruction", "output")
    assert raw.rows_in == 6
    assert dict(raw.dropped) == {"empty_answer": 2, "empty_question": 1}
    assert raw.pairs == [
        ("What is eczema?", "Eczema is a skin condition."),
        ("What is a cataract?", "Clouding of the lens."),
        ("42", "7"),
    ]


def test_alpaca_input_is_shown_below_the_instruction(make_cfg, tmp_path):
    rows = [
        {
            "instruction": "Explain this lab value.",
            "input": "HbA1c 6.9%",
            "output": "It is above the usual range.",
        },
        {"instruction": "What is gout?", "input": "", "output": "A form of arthritis."},  # empty input: none
        {"instruction": "Summarise.", "input": None, "output": "Short."},
    ]
    path = jsonl(tmp_path / "alpaca.jsonl", rows)
    raw = load_pairs(make_cfg("experiment=smoke", "dataset=file", f"dataset.path={path}").dataset)
    assert raw.pairs == [
        ("Explain this lab value.\n\nHbA1c 6.9%", "It is above the usual range."),
        ("What is gout?", "A form of arthritis."),
        ("Summarise.", "Short."),
    ]
    renamed = jsonl(
        tmp_path / "renamed.jsonl", [{"task": "Define.", "ctx": "fever", "out": "A raised temperature."}]
    )
    cfg = make_cfg(
        "experiment=smoke", "dataset=file", f"dataset.path={renamed}", "dataset.question_field=task",
        "dataset.answer_field=out", "dataset.input_field=ctx",
    )  # fmt: skip
    assert load_pairs(cfg.dataset).pairs == [("Define.\n\nfever", "A raised temperature.")]
    cfg.dataset.input_field = "missing"
    with pytest.raises(UserError, match=r"dataset.input_field='missing' is not a column"):
        load_pairs(cfg.dataset)


def test_json_array_and_named_fields(make_cfg, tmp_path):
    path = write(
        tmp_path / "qa.json",
        json.dumps([{"Patient asks": "Is flu serious?", "Doctor says": "It can be.", "input": "x"}] * 3),
    )
    cfg = make_cfg(
        "experiment=smoke",
        "dataset=file",
        f"dataset.path={path}",
        "dataset.question_field=Patient asks",
        "dataset.answer_field=Doctor says",
    )
    raw = load_pairs(cfg.dataset)
    assert raw.columns == ("Patient asks", "Doctor says")
    assert raw.pairs == [("Is flu serious?", "It can be.")] * 3


def test_parquet(make_cfg, tmp_path):
    import pandas as pd

    path = tmp_path / "qa.parquet"
    pd.DataFrame({"QUESTION": ["q1", "q2"], "Answer ": ["a1", ""]}).to_parquet(path)
    raw = load_pairs(make_cfg("experiment=smoke", "dataset=file", f"dataset.path={path}").dataset)
    assert raw.columns == ("QUESTION", "Answer ")
    assert raw.pairs == [("q1", "a1")] and dict(raw.dropped) == {"empty_answer": 1}


def test_columns_not_found_lists_the_columns(make_cfg, tmp_path):
    path = jsonl(tmp_path / "odd.jsonl", [{"title": "t", "body": "b"}])
    cfg = make_cfg("experiment=smoke", "dataset=file", f"dataset.path={path}")
    with pytest.raises(UserError, match=r"Could not find a question column. Columns found: 'title', 'body'"):
        load_pairs(cfg.dataset)


def test_named_column_that_does_not_exist(make_cfg, tmp_path):
    path = jsonl(tmp_path / "qa.jsonl", [{"question": "q", "answer": "a"}])
    cfg = make_cfg("experiment=smoke", "dataset=file", f"dataset.path={path}", "dataset.answer_field=reply")
    with pytest.raises(
        UserError, match=r"dataset.answer_field='reply' is not a column.*'question', 'answer'"
    ):
        load_pairs(cfg.dataset)


def test_malformed_jsonl_is_a_clear_error(make_cfg, tmp_path):
    path = write(tmp_path / "bad.jsonl", '{"question": "q", "answer": "a"}\n{"question": \n')
    with pytest.raises(UserError, match=r"Could not read .*bad.jsonl as jsonl"):
        load_pairs(make_cfg("experiment=smoke", "dataset=file", f"dataset.path={path}").dataset)


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (["Question", "Answer"], ("Question", "Answer")),
        (["question", "answer", "qtype"], ("question", "answer")),
        (["instruction", "input", "output"], ("instruction", "output")),
        (["input", "output"], ("input", "output")),
        (["prompt", "response"], ("prompt", "response")),
        (["query", "completion"], ("query", "completion")),
    ],
)
def test_column_detection(columns, expected):
    assert resolve_columns(columns, None, None) == expected


def test_answer_only_loss_mask(tiny_tokenizer):
    system = "Be careful."
    pairs = [("What is gout?", "Gout is a joint condition."), ("Why?", "Because.")]
    ids, masks = tokenize_pairs(tiny_tokenizer, system, pairs)
    for (question, answer), seq, mask in zip(pairs, ids, masks, strict=True):
        assert len(seq) == len(mask)
        answer_part = tiny_tokenizer.decode([t for t, m in zip(seq, mask, strict=True) if m])
        prompt_part = tiny_tokenizer.decode([t for t, m in zip(seq, mask, strict=True) if not m])
        assert answer_part == answer + "<|im_end|>\n"  # the model learns the answer and to stop
        assert prompt_part == tiny_tokenizer.apply_chat_template(
            chat_messages(system, question), tokenize=False, add_generation_prompt=True
        )
        assert mask == sorted(mask)  # zeros (prompt) then ones (answer), never interleaved


def test_sample_split_is_deterministic_and_disjoint(make_cfg, tiny_tokenizer):
    cfg = make_cfg("experiment=smoke")
    raw = load_pairs(cfg.dataset)
    a = prepare_data(raw, cfg.dataset, tiny_tokenizer, seed=1)
    b = prepare_data(raw, cfg.dataset, tiny_tokenizer, seed=1)
    c = prepare_data(raw, cfg.dataset, tiny_tokenizer, seed=2)
    assert a.rows_in == 360 and a.rows_kept == 360 and len(a.validation_pairs) == 36
    assert a.validation_pairs == b.validation_pairs and a.fingerprint == b.fingerprint
    assert a.validation_pairs != c.validation_pairs and a.fingerprint != c.fingerprint
    assert not set(a.validation_pairs) & set(a.train_pairs)
    assert a.train.column_names == ["input_ids", "completion_mask"] and len(a.train) == 324


def test_max_tokens_and_limit(make_cfg, tiny_tokenizer):
    cfg = make_cfg("experiment=smoke", "dataset.max_tokens=200", "dataset.limit=50")
    raw = load_pairs(cfg.dataset)
    data = prepare_data(raw, cfg.dataset, tiny_tokenizer, seed=0)
    too_long = data.dropped["too_long"]
    assert 100 < too_long < 300  # sample pairs are 183-226 tiny-tokenizer tokens long
    # rows the user's own limit leaves out are not drops: reported apart, in the data line and in MLflow
    assert data.rows_kept == 50 and data.unused_by_limit == 360 - too_long - 50
    assert "over_limit" not in data.dropped and data.metrics()["data/unused_by_limit"] == 360 - too_long - 50
    assert f"used 50 of {360 - too_long} usable rows (dataset.limit)" in data.summary()
    assert all(len(ids) <= 200 for ids in [*data.train["input_ids"], *data.validation["input_ids"]])


def test_nothing_left_is_a_clear_error(make_cfg, tiny_tokenizer):
    cfg = make_cfg("experiment=smoke", "dataset.max_tokens=5")
    with pytest.raises(UserError, match=r"Only 0 usable pair\(s\) left out of 360 rows.*dataset.max_tokens"):
        prepare_data(load_pairs(cfg.dataset), cfg.dataset, tiny_tokenizer, seed=0)


def test_exact_duplicates_are_dropped_and_questions_never_straddle_the_split(
    make_cfg, tmp_path, tiny_tokenizer
):
    rows = [
        {"question": f"What is condition {i}?", "answer": f"Condition {i} is a disease."} for i in range(20)
    ]
    rows += [
        {"question": "what is CONDITION 3 ", "answer": "Condition 3 is a disease!"}
    ]  # same pair, other case
    rows += [{"question": f"What is condition {i}?", "answer": f"Another answer {i}."} for i in range(10)]
    path = tmp_path / "dups.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = make_cfg("experiment=smoke", "dataset=file", f"dataset.path={path}", "dataset.val_fraction=0.3")
    data = prepare_data(load_pairs(cfg.dataset), cfg.dataset, tiny_tokenizer, seed=0)
    assert data.dropped["duplicate"] == 1 and data.rows_kept == 30
    val_questions = {q.lower().strip(" ?") for q, _ in data.validation_pairs}
    train_questions = {q.lower().strip(" ?") for q, _ in data.train_pairs}
    assert not val_questions & train_questions and data.leakage == 0
    assert data.metrics()["data/leakage"] == 0
    # with exact dedup off, near-duplicate removal still catches the repeat; with both off, it stays
    cfg = make_cfg("experiment=smoke", "dataset=file", f"dataset.path={path}", "dataset.dedup=false")
    data = prepare_data(load_pairs(cfg.dataset), cfg.dataset, tiny_tokenizer, seed=0)
    assert data.rows_kept == 30 and dict(data.dropped) == {"near_duplicate": 1}
    cfg = make_cfg(
        "experiment=smoke", "dataset=file", f"dataset.path={path}", "dataset.dedup=false",
        "dataset.near_dup.threshold=null",
    )  # fmt: skip
    assert prepare_data(load_pairs(cfg.dataset), cfg.dataset, tiny_tokenizer, seed=0).rows_kept == 31
