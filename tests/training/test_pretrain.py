"""Continued pretraining: plain-text sources read and cleaned like QA data, packed into blocks with EOS between
documents and the loss on every token; the cpt_then_sft recipe offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medexp.config import UserError
from tests.helpers import compose_config

DOCS = [
    "Asthma narrows and inflames the airways of the lungs.",
    "Type 2 diabetes is a disorder of blood sugar control.",
    "Gout is arthritis caused by uric acid crystals in a joint.",
    "Anemia means too few red blood cells or too little hemoglobin.",
    "Migraine is a headache disorder with attacks of throbbing pain.",
]


def _cfg(tmp_path: Path, path: Path, *extra: str):
    return compose_config(
        ["model=tiny", "dataset=text", f"dataset.path={path}", "eval=none", *extra], tmp_path / "run"
    )


def _prepare(cfg, tiny_tokenizer):
    from medexp.data import load_pairs, prepare_data

    return prepare_data(load_pairs(cfg.dataset), cfg.dataset, tiny_tokenizer, cfg.seed)


def test_a_txt_file_is_one_document_per_line_cleaned_and_packed(tmp_path, tiny_tokenizer):
    corpus = tmp_path / "notes.txt"
    corpus.write_text("\n".join([DOCS[0], "", DOCS[1], DOCS[1].upper(), *DOCS[2:], "   "]) + "\n")
    cfg = _cfg(
        tmp_path,
        corpus,
        "dataset.max_tokens=16",
        "dataset.val_fraction=0.2",
        "dataset.near_dup.threshold=null",
    )
    data = _prepare(cfg, tiny_tokenizer)
    assert data.rows_in == 8
    assert data.dropped == {"empty_text": 2, "duplicate": 1}  # the upper-case copy folds onto the original
    assert data.rows_kept == 5 and len(data.validation_pairs) == 1  # split by document

    eos = tiny_tokenizer.eos_token_id
    train_docs = [d for d, _ in data.train_pairs]
    expected = [
        t for d in train_docs for t in [*tiny_tokenizer(d, add_special_tokens=False)["input_ids"], eos]
    ]
    blocks = data.train["input_ids"]
    assert all(len(b) == 16 for b in blocks[:-1]) and 0 < len(blocks[-1]) <= 16
    assert [t for b in blocks for t in b] == expected  # every token once, in order, EOS after each document
    assert all(set(m) == {1} for m in data.train["completion_mask"])  # loss on every token
    assert [t for b in data.validation["input_ids"] for t in b][-1] == eos


def test_jsonl_text_column_is_detected_and_non_text_rows_are_counted(tmp_path, tiny_tokenizer):
    corpus = tmp_path / "corpus.jsonl"
    rows = [{"id": i, "content": d} for i, d in enumerate(DOCS)]
    rows += [{"id": 9, "content": ["a", "list"]}, {"id": 10, "content": ""}]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = _prepare(_cfg(tmp_path, corpus), tiny_tokenizer)
    assert data.dropped == {"non_text": 1, "empty_text": 1}
    assert sorted(d for d, _ in data.train_pairs + data.validation_pairs) == sorted(DOCS)

    with pytest.raises(UserError, match=r"dataset.text_field='body' is not a column.*'id', 'content'"):
        _prepare(_cfg(tmp_path, corpus, "dataset.text_field=body"), tiny_tokenizer)


def test_a_corpus_without_text_is_refused_in_one_paragraph(tmp_path, tiny_tokenizer):
    empty = tmp_path / "blank.txt"
    empty.write_text("\n   \n\n")
    with pytest.raises(
        UserError, match=r"holds no text to pretrain on: of its 3 rows none has text \(3 empty text\)"
    ):
        _prepare(_cfg(tmp_path, empty), tiny_tokenizer)
    wrong = tmp_path / "qa.jsonl"
    wrong.write_text(json.dumps({"Question": "q?", "Answer": "a"}) + "\n")
    with pytest.raises(UserError, match="Could not find a text column"):
        _prepare(_cfg(tmp_path, wrong), tiny_tokenizer)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["dataset=pretrain_sample"], "no held-out questions for eval.generation"),
        (
            ["+dataset@stages.a.dataset=sample", "+stages.a.kind=pretrain"],
            "stages.a.kind=pretrain needs dataset.kind=text",
        ),
        (
            ["+dataset@stages.a.dataset=pretrain_sample", "+stages.a.kind=sft", "eval=none"],
            "stages.a.kind=sft needs",
        ),
        (["+dataset@mixture.notes=pretrain_sample"], "mixture.notes is plain text"),
    ],
)
def test_stage_kinds_must_match_their_data(overrides, message, tmp_path):
    from medexp.config import validate
    from medexp.training.methods import check_stages

    cfg = compose_config(["experiment=smoke", *overrides], tmp_path)
    validate(cfg)  # the values are fine: the stage kinds' registry refuses the mismatch
    with pytest.raises(UserError, match=message):
        check_stages(cfg)


def test_cpt_then_sft_smoke_pretrains_then_tunes_one_adapter(tmp_path):
    """Stage 1 pretrains on the embedded passages (every token), stage 2 continues the same adapter on QA pairs;
    both are child MLflow runs with their own data report and curves."""
    import mlflow

    from medexp.train import train

    cfg = compose_config(["experiment=cpt_then_sft_smoke", "eval=none", "eval.metrics=[loss]"], tmp_path)
    result = train(cfg)
    client = mlflow.MlflowClient(str(cfg.tracking.uri))
    children = {
        r.data.tags["medexp.stage"]: r
        for r in client.search_runs(
            [r.info.experiment_id for r in [client.get_run(result.run_id)]],
            f"tags.mlflow.parentRunId = '{result.run_id}'",
        )
    }
    assert set(children) == {"cpt", "sft"}
    cpt, sft = children["cpt"].data.metrics, children["sft"].data.metrics
    assert cpt["data/rows_in"] == 40 and cpt["data/validation_rows"] >= 1
    # pretraining lowers the loss on held-out passages; the SFT stage starts from the pretrained adapter
    cpt_curve = client.get_metric_history(children["cpt"].info.run_id, "eval_loss")
    assert cpt_curve[0].step == 0 and cpt["eval/loss"] < cpt_curve[0].value
    sft_curve = client.get_metric_history(children["sft"].info.run_id, "eval_loss")
    assert sft_curve[0].step == 0 and sft["eval/loss"] < sft_curve[0].value
    stage_dir = result.output_dir / "stages"
    assert (stage_dir / "cpt" / "adapter" / "adapter_config.json").is_file()
    assert (result.output_dir / "adapter" / "adapter_config.json").is_file()
