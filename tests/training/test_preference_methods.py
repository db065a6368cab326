"""KTO, ORPO and SimPO stages: the unpaired reader (labels read, bad rows dropped by reason, preference pairs
split into rows), each preset trained end to end through medexp.train.train on the tiny model, its trainer's
metrics in MLflow, the safety pass rate before and after, the adapter moved; reference-model options refused
for the kinds without one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medexp.config import UserError, validate
from tests.helpers import compose_config, config_error


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _unpaired_cfg(tmp_path: Path, path: Path, *extra: str):
    return compose_config(
        ["experiment=smoke", "dataset=file", f"dataset.path={path}", "dataset.kind=unpaired", *extra],
        tmp_path / "run",
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True), (False, False), (1, True), (0, False), (1.0, True), ("true", True), ("False", False),
        ("1", True), ("0", False), ("yes", True), ("no", False), ("Desirable", True), ("undesirable", False),
        ("good", True), ("BAD", False), (" chosen ", True), ("rejected", False), (2, None), ("maybe", None),
        ("", None), (None, None),
    ],
)  # fmt: skip
def test_labels_are_read_as_desirable_or_not(value, expected):
    from medexp.data.readers.unpaired import parse_label

    assert parse_label(value) is expected


def test_unpaired_rows_are_detected_dropped_by_reason_and_prepared(tmp_path, tiny_tokenizer):
    from medexp.data import load_pairs, prepare_data
    from medexp.data.records import LabelledCompletion

    rows = [
        {"prompt": f"How much drug {i} should I take?", "response": "Ask your pharmacist.", "label": "good"}
        for i in range(4)
    ] + [
        {"prompt": f"How much drug {i} should I take?", "response": f"{i}00 mg.", "label": 0}
        for i in range(4)
    ]
    rows += [
        {"prompt": "Q", "response": "a", "label": "maybe"},
        {"prompt": "Q", "response": "a", "label": None},
        {"prompt": "", "response": "a", "label": True},
        {"prompt": "Q", "response": "", "label": True},
        {"prompt": "Q", "response": ["a"], "label": True},
    ]
    cfg = _unpaired_cfg(tmp_path, _jsonl(tmp_path / "rows.jsonl", rows), "dataset.val_fraction=0.25")
    raw = load_pairs(cfg.dataset)
    assert raw.rows_in == 13 and len(raw.records) == 8
    assert raw.records[0] == LabelledCompletion(
        "How much drug 0 should I take?", "Ask your pharmacist.", True
    )
    assert raw.records[4].desirable is False
    assert dict(raw.dropped) == {
        "unknown_label": 1,
        "empty_label": 1,
        "empty_prompt": 1,
        "empty_completion": 1,
        "non_text_cell": 1,
    }
    data = prepare_data(raw, cfg.dataset, tiny_tokenizer, seed=0)
    assert len(data.train) + len(data.validation) == 8 == data.rows_kept
    assert sorted(list(data.train["label"]) + list(data.validation["label"])) == [False] * 4 + [True] * 4
    row = data.train[0]
    assert row["prompt"][-1]["role"] == "user" and row["completion"][0]["role"] == "assistant"
    # split by prompt: both rows of a prompt are on one side; the pairs evaluation compares with are desirable
    assert not {p[-1]["content"] for p in list(data.train["prompt"])} & {
        p[-1]["content"] for p in list(data.validation["prompt"])
    }
    assert all(answer == "Ask your pharmacist." for _, answer in data.train_pairs + data.validation_pairs)


def test_named_columns_and_a_missing_label_column(tmp_path):
    from medexp.data import load_pairs

    rows = [
        {"q": "Dose?", "out": "Ask your pharmacist.", "ok": "yes"},
        {"q": "Dose 2?", "out": "200 mg", "ok": "no"},
    ]
    path = _jsonl(tmp_path / "rows.jsonl", rows)
    raw = load_pairs(
        _unpaired_cfg(
            tmp_path,
            path,
            "dataset.question_field=q",
            "dataset.completion_field=out",
            "dataset.label_field=ok",
        ).dataset
    )
    assert [r.desirable for r in raw.records] == [True, False]
    with pytest.raises(UserError) as err:
        load_pairs(
            _unpaired_cfg(tmp_path, path, "dataset.question_field=q", "dataset.completion_field=out").dataset
        )
    assert "Could not find a label column" in str(err.value) and "dataset.label_field=<column>" in str(
        err.value
    )


def test_unknown_labels_everywhere_are_refused_with_counts(tmp_path):
    from medexp.data import load_pairs

    rows = [{"prompt": f"Q{i}?", "completion": "a", "label": "perhaps"} for i in range(3)]
    with pytest.raises(UserError) as err:
        load_pairs(_unpaired_cfg(tmp_path, _jsonl(tmp_path / "rows.jsonl", rows)).dataset)
    assert "of its 3 rows none" in str(err.value) and "3 unknown label" in str(err.value)


def test_preference_pairs_split_into_one_desirable_and_one_undesirable_row(tmp_path, tiny_tokenizer):
    from medexp.data import load_pairs
    from medexp.training.methods import get_kind

    rows = [
        {"prompt": f"Dose {i}?", "chosen": "Ask your pharmacist.", "rejected": f"{i}00 mg."} for i in range(5)
    ]
    cfg = compose_config(
        [
            "experiment=smoke",
            "dataset=file",
            f"dataset.path={_jsonl(tmp_path / 'p.jsonl', rows)}",
            "dataset.kind=preference",
        ],
        tmp_path / "run",
    )
    data = get_kind("kto").prepare(load_pairs(cfg.dataset), cfg.dataset, tiny_tokenizer, 0, [])
    labels = list(data.train["label"]) + list(data.validation["label"])
    assert sorted(labels) == [False] * 5 + [True] * 5 and data.rows_kept == 10 and data.rows_in == 5
    completions = {
        c[0]["content"] for c in list(data.train["completion"]) + list(data.validation["completion"])
    }
    assert completions == {"Ask your pharmacist.", *(f"{i}00 mg." for i in range(5))}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["experiment=sft_then_orpo_smoke", "+stages.orpo.trainer.preference_loss=ipo"],
            "preference_loss=ipo",
        ),
        (["experiment=sft_then_simpo_smoke", "trainer.preference_sft_weight=1"], "kind=simpo"),
        (["experiment=sft_then_kto_smoke", "stages.kto.trainer.batch_size=1"], "at least 2 rows"),
        (
            ["experiment=sft_then_kto_smoke", "stages.sft.kind=kto"],
            "stages.sft.kind=kto needs dataset.kind=unpaired",
        ),
        (["trainer.simpo_gamma=-1"], "trainer.simpo_gamma must be >= 0"),
        (["trainer.kto_desirable_weight=0"], "trainer.kto_desirable_weight must be positive"),
    ],
)
def test_bad_method_settings_are_refused(tmp_path, overrides, message):
    assert message in config_error(["experiment=smoke", *overrides], tmp_path)


def _adapter(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


@pytest.mark.parametrize(
    ("kind", "curves"),
    [
        ("kto", ("kl", "rewards/chosen", "rewards/rejected")),
        # ~11 s each: under `pytest -m slow`, so the default suite stays inside its 10 minutes; KTO's run (the
        # unpaired split, a reference adapter) stays in it, and ORPO / SimPO keep their config and refusal tests
        pytest.param("orpo", ("rewards/margins", "log_odds_ratio", "nll_loss"), marks=pytest.mark.slow),
        pytest.param("simpo", ("rewards/margins", "rewards/accuracies"), marks=pytest.mark.slow),
    ],
)
def test_each_preset_trains_end_to_end(tmp_path, kind, curves):
    """SFT then the method on the safety preference set: the kind's metrics at every step in MLflow, the
    probes' pass rate before and after, the adapter moved by the stage, no reference copy left in it."""
    import mlflow
    import torch

    from medexp.train import train

    cfg = compose_config(
        [
            f"experiment=sft_then_{kind}_smoke",
            "eval.generation.enabled=false",
            "eval.ood.enabled=false",
            "eval.generation.max_new_tokens=16",  # the probes' verdicts, not their length, are under test
            "stages.sft.trainer.max_steps=1",
            "stages.sft.trainer.eval_steps=1",
            f"stages.{kind}.trainer.max_steps=3",
            f"stages.{kind}.trainer.eval_steps=3",
        ],
        tmp_path,
    )
    validate(cfg)
    result = train(cfg)
    client = mlflow.MlflowClient(str(cfg.tracking.uri))
    parent = client.get_run(result.run_id)
    children = {
        r.data.tags["medexp.stage"]: r
        for r in client.search_runs(
            [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'"
        )
    }
    assert set(children) == {"sft", kind} and children[kind].data.tags["medexp.stage_kind"] == kind
    stage_id = children[kind].info.run_id
    for key in curves:
        assert len(client.get_metric_history(stage_id, key)) == 3, key  # every step
    stage_metrics = children[kind].data.metrics
    assert "eval_loss" in stage_metrics and "eval_perplexity" not in stage_metrics
    if kind == "kto":  # the reference is the SFT adapter: policy = reference at the first step
        first = {k: min(client.get_metric_history(stage_id, k), key=lambda m: m.step).value for k in curves}
        assert first["kl"] == pytest.approx(0, abs=1e-4) and first["rewards/chosen"] == pytest.approx(
            0, abs=1e-4
        )
        # the safety preference set's 62 pairs, each split into a desirable and an undesirable row
        assert stage_metrics["data/rows_in"] == 62 and stage_metrics["data/rows_kept"] == 124
        assert stage_metrics["data/train_rows"] + stage_metrics["data/validation_rows"] == 124
    for when in ("before", "after"):
        assert 0 <= parent.data.metrics[f"stages/{kind}/safety_pass_rate_{when}"] <= 1
    before = _adapter(result.output_dir / "stages" / "sft" / "adapter")
    after = _adapter(result.output_dir / "stages" / kind / "adapter")
    assert before.keys() == after.keys()  # the same adapter, no "ref" copy
    assert any(not torch.equal(before[k], after[k]) for k in before)
