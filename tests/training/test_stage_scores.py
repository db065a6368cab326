"""Multiple-choice accuracy around every stage of a staged run (eval.mc.each_stage): experiment=sft_then_grpo on
the tiny model and a small multiple-choice file, in a few real steps, read back from the real MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import compose_config

ORGANS = ["Liver", "Pancreas", "Spleen", "Kidney", "Heart", "Lung", "Thyroid", "Stomach"]


def _questions(path: Path, count: int = 48) -> Path:
    """A MedMCQA-shaped file of `count` four-option questions (the fixture holds three)."""
    with path.open("w") as f:
        for i in range(count):
            options = [ORGANS[(i + k) % len(ORGANS)] for k in range(4)]
            row = {"id": str(i), "question": f"Question {i}: which organ is meant by clue {i * 7 % 13}?",
                   "opa": options[0], "opb": options[1], "opc": options[2], "opd": options[3], "cop": i % 4}  # fmt: skip
            f.write(json.dumps(row) + "\n")
    return path


def _overrides(path: Path) -> list[str]:
    """sft_then_grpo shrunk to the tiny model and a few steps per stage."""
    return [
        "experiment=sft_then_grpo", "model=tiny", "trainer=cpu", "tracking.experiment=stage-scores",
        f"stages.sft.dataset.path={path}", f"stages.grpo.dataset.path={path}",
        "++stages.sft.dataset.val_fraction=0.25", "++stages.grpo.dataset.val_fraction=0.25",
        "++stages.sft.trainer.max_steps=4", "++stages.sft.trainer.eval_steps=4", "++stages.sft.trainer.learning_rate=3e-3",
        "++stages.grpo.trainer.max_steps=2", "++stages.grpo.trainer.eval_steps=2",
        "++stages.grpo.trainer.batch_size=8", "++stages.grpo.trainer.eval_batch_size=8",
        "++stages.grpo.trainer.grpo_num_generations=4", "++stages.grpo.trainer.grpo_max_completion_length=8",
    ]  # fmt: skip


def test_sft_then_grpo_scores_the_held_out_questions_before_and_after_each_stage(tmp_path):
    import mlflow
    import torch

    from medexp.train import train

    cfg = compose_config(_overrides(_questions(tmp_path / "mc.jsonl")), tmp_path)
    assert cfg.eval.mc.each_stage  # on by default: the preset needs nothing more
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # generation of a 1M model is many tiny matmuls: one thread is faster
    try:
        result = train(cfg)
    finally:
        torch.set_num_threads(threads)

    client = mlflow.MlflowClient(str(cfg.tracking.uri))
    parent = client.get_run(result.run_id).data.metrics
    children = {
        r.data.tags["medexp.stage"]: r.data.metrics
        for r in client.search_runs(
            [client.get_run(result.run_id).info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'"
        )
    }
    figures = {}
    for stage in ("sft", "grpo"):
        for when in ("before", "after"):
            for name in ("accuracy", "accuracy_norm"):
                key = f"mc/validation/{name}_{when}"
                value = parent[f"stages/{stage}/{key}"]
                assert children[stage][key] == value  # the stage's own run holds it too
                assert 0 <= value <= 1 and value * 12 == pytest.approx(round(value * 12))  # 12 questions
                figures[stage, when, name] = value
    # the GRPO stage starts where the SFT stage ended (measured once); the last figure is the final evaluation's
    assert figures["grpo", "before", "accuracy"] == figures["sft", "after", "accuracy"]
    assert figures["grpo", "after", "accuracy"] == pytest.approx(parent["eval/mc/validation/accuracy"])
    # before the first stage is the untouched base model (LoRA starts as a no-op)
    assert figures["sft", "before", "accuracy"] == pytest.approx(parent["eval/base/mc/validation/accuracy"])
    assert parent["eval/mc/validation/questions"] == 12
    # the GRPO stage is judged by its rollouts' reward: its last evaluation's, reused, not run again
    assert parent["stages/grpo/eval_reward"] == children["grpo"]["eval_reward"]


def test_a_plain_run_or_the_switch_off_adds_no_stage_scores(tmp_path):
    """The scorer is built only for a staged run with eval.mc on and each_stage on."""
    from medexp.evaluation.suites import stage_scorer

    path = _questions(tmp_path / "mc.jsonl")
    cfg = compose_config([*_overrides(path), "eval.mc.each_stage=false"], tmp_path)
    assert stage_scorer(cfg, None) is None
    cfg = compose_config([*_overrides(path), "eval=default"], tmp_path)
    assert stage_scorer(cfg, None) is None
