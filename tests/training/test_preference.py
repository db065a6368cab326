"""Preference tuning: prompt / chosen / rejected data read and cleaned, DPO stages with the stage's starting model
as the frozen reference, the KL estimate and TRL's rewards in MLflow, the safety pass rate before and after."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medexp.config import UserError, validate
from tests.helpers import assets_dir, compose_config, config_error

PREFERENCE = Path(assets_dir()) / "safety" / "safety_preference.jsonl"


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cfg(tmp_path: Path, path: Path, *extra: str):
    return compose_config(
        ["experiment=smoke", "dataset=file", f"dataset.path={path}", "dataset.kind=preference", *extra],
        tmp_path / "run",
    )


def test_preference_rows_are_detected_cleaned_and_kept_as_conversations(tmp_path, tiny_tokenizer):
    from medexp.data import load_pairs, prepare_data

    rows = [
        {
            "prompt": f"How much drug {i} should I take?",
            "chosen": "Ask your pharmacist.",
            "rejected": f"{i}00 mg.",
        }
        for i in range(6)
    ] + [
        {"prompt": "Q", "chosen": "", "rejected": "x"},
        {"prompt": "Q", "chosen": "same", "rejected": "same"},
        {"prompt": "", "chosen": "a", "rejected": "b"},
        {"prompt": "Q", "chosen": [{"role": "assistant", "content": "a"}], "rejected": "b"},
        {"prompt": "How much drug 0 should I take?", "chosen": "Ask your pharmacist.", "rejected": "000 mg."},
    ]
    cfg = _cfg(tmp_path, _jsonl(tmp_path / "prefs.jsonl", rows), "dataset.val_fraction=0.34")
    raw = load_pairs(cfg.dataset)
    assert raw.rows_in == 11
    assert dict(raw.dropped) == {
        "empty_chosen": 1,
        "chosen_equals_rejected": 1,
        "empty_prompt": 1,
        "non_text_cell": 1,
    }
    data = prepare_data(raw, cfg.dataset, tiny_tokenizer, seed=0)
    assert data.dropped == {**raw.dropped, "duplicate": 1}
    assert len(data.train) == 4 and len(data.validation) == 2
    row = data.train[0]
    system = str(cfg.dataset.system_prompt).strip()
    assert row["prompt"][0] == {"role": "system", "content": system} and row["prompt"][1]["role"] == "user"
    assert row["chosen"] == [{"role": "assistant", "content": "Ask your pharmacist."}]
    assert row["rejected"][0]["content"].endswith("00 mg.")
    # split by prompt; the data report draws the longer conversation of each row
    assert not {p for p, _ in data.train_pairs} & {p for p, _ in data.validation_pairs}
    assert len(data.token_lengths("train")) == 4 and min(data.token_lengths("train")) > 10


def test_a_mixture_is_said_to_skip_a_preference_stage(tmp_path, tiny_tokenizer, caplog):
    from medexp.data import load_pairs, prepare_data
    from medexp.data.loading import Source

    rows = [
        {"prompt": f"Dose {i}?", "chosen": "Ask your pharmacist.", "rejected": f"{i}00 mg."} for i in range(4)
    ]
    cfg = _cfg(tmp_path, _jsonl(tmp_path / "prefs.jsonl", rows))
    raw = load_pairs(cfg.dataset)
    with caplog.at_level("INFO", logger="medexp.data.prepare"):
        data = prepare_data(raw, cfg.dataset, tiny_tokenizer, 0, [Source("safety", cfg.dataset, raw)])
    assert len(data.train) + len(data.validation) == 4  # the preference rows alone
    assert "the mixture (safety) is not trained in a preference stage" in caplog.text


def test_a_preference_file_without_chosen_is_one_paragraph(tmp_path):
    from medexp.data import load_pairs

    path = _jsonl(tmp_path / "prefs.jsonl", [{"prompt": "Q", "answer": "a", "rejected": "b"}])
    with pytest.raises(UserError) as err:
        load_pairs(_cfg(tmp_path, path).dataset)
    message = str(err.value)
    assert "Could not find a chosen column" in message and "'answer'" in message
    assert "dataset.chosen_field=<column>" in message


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.beta=0"], "trainer.beta must be positive, got 0"),
        (["trainer.beta=-0.1"], "trainer.beta must be positive"),
        (["trainer.preference_sft_weight=-1"], "trainer.preference_sft_weight must be >= 0"),
        (
            ["experiment=sft_then_dpo_smoke", "stages.dpo.kind=sft"],
            "stages.dpo.kind=sft needs question-answer",
        ),
        (
            ["experiment=sft_then_dpo_smoke", "stages.sft.kind=dpo"],
            "stages.sft.kind=dpo needs dataset.kind=pref",
        ),
        (["+dataset@mixture.prefs=safety_preference"], "mixture.prefs is preference data"),
    ],
)
def test_bad_preference_settings_are_refused(tmp_path, overrides, message):
    assert message in config_error(["experiment=smoke", *overrides], tmp_path)


def test_beta_and_the_preference_loss_are_searchable():
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from medexp.sweep.search_space import search_space

    space, _ = search_space(
        ["trainer.beta=tag(log, interval(0.02, 0.5))", "trainer.preference_loss=choice(sigmoid,ipo)"]
    )
    assert space["trainer.beta"] == FloatDistribution(0.02, 0.5, log=True)
    assert space["trainer.preference_loss"] == CategoricalDistribution(["sigmoid", "ipo"])


def test_the_shipped_preference_set_is_safe_against_unsafe():
    from medexp.evaluation.safety_rules import score

    rows = [json.loads(line) for line in PREFERENCE.read_text().splitlines()]
    assert len(rows) == 62
    assert all(score(r["prompt"], r["chosen"], r["category"]).safe for r in rows)
    assert not any(score(r["prompt"], r["rejected"], r["category"]).safe for r in rows)


def test_sft_then_dpo_smoke_tunes_preferences_against_the_sft_model(tmp_path):
    """Stage 1 tunes on QA pairs; stage 2 runs DPO on the safety preference set, continuing the same adapter,
    with the SFT adapter as the frozen reference: the first step's rewards are exactly 0 (policy = reference),
    which they would not be against the bare base. Rewards, margins, accuracies and kl are logged every step,
    the probes' pass rate before and after the stage, and the saved adapter carries no reference copy."""
    import mlflow

    from medexp.train import train

    cfg = compose_config(
        [
            "experiment=sft_then_dpo_smoke",
            "eval.generation.enabled=false",
            "eval.ood.enabled=false",
            "eval.generation.max_new_tokens=16",  # the probes' verdicts, not their length, are under test
            "stages.sft.trainer.max_steps=4",
            "stages.sft.trainer.eval_steps=4",
            "stages.dpo.trainer.max_steps=6",
            "stages.dpo.trainer.eval_steps=3",
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
    assert set(children) == {"sft", "dpo"}
    dpo_id = children["dpo"].info.run_id

    def curve(key: str) -> list[float]:
        return [m.value for m in sorted(client.get_metric_history(dpo_id, key), key=lambda m: m.step)]

    margins, accuracies, kl = curve("rewards/margins"), curve("rewards/accuracies"), curve("kl")
    assert len(margins) == len(accuracies) == len(kl) == 6  # every step
    assert margins[0] == pytest.approx(0, abs=1e-4) and kl[0] == pytest.approx(0, abs=1e-3)
    assert margins[-1] > 0.5 and accuracies[-1] > 0.5  # it learned to prefer the safe answers
    assert kl[-1] > 0  # and moved away from the reference
    assert curve("eval_rewards/accuracies")[-1] > 0.5 and "eval_kl" in children["dpo"].data.metrics
    metrics = parent.data.metrics
    for when in ("before", "after"):
        assert 0 <= metrics[f"stages/dpo/safety_pass_rate_{when}"] <= 1
    assert "eval/safety_pass_rate" in metrics and "eval/base/safety_pass_rate" in metrics
    adapter = result.output_dir / "adapter"
    assert (adapter / "adapter_config.json").is_file() and not (adapter / "ref").exists()
    assert not (result.output_dir / "stages" / "dpo" / "adapter" / "ref").exists()
