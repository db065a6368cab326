"""Training in stages on the tiny model: child MLflow runs, each stage continuing from the previous adapter,
with a weighted mixture added to every stage."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

from medexp.tracking import git_commit
from medexp.train import train
from tests.helpers import compose_config

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
OVERRIDES = [
    "experiment=smoke",
    "+dataset@stages.first.dataset=sample",
    "+dataset@stages.second.dataset=safety",
    "+stages.first.trainer.max_steps=10",
    "+stages.second.trainer.max_steps=10",
    "trainer.eval_steps=5",
    "eval.generation.enabled=false",  # the suites run once, after the last stage; test_train covers them
    "+dataset@mixture.extra=file",
    f"mixture.extra.path={FIXTURES / 'medquad.csv'}",
    "mixture.extra.weight=2",
]


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stages")
    cfg = compose_config(OVERRIDES, tmp)
    result = train(cfg)
    client = MlflowClient(cfg.tracking.uri)
    runs = client.search_runs([client.get_experiment_by_name("medexp-smoke").experiment_id])
    return cfg, result, client, runs


def test_each_stage_is_a_child_run_of_the_run(staged):
    _, result, _, runs = staged
    parent = next(r for r in runs if r.info.run_id == result.run_id)
    children = sorted((r for r in runs if r is not parent), key=lambda r: r.info.run_name)
    assert parent.info.status == "FINISHED" and parent.data.tags["medexp.stages"] == "first -> second"
    commit = git_commit()  # launched from the repository (None only in a source tree without git)
    assert (
        parent.data.tags.get("medexp.git_commit")
        == commit
        == parent.data.tags.get("mlflow.source.git.commit")
    )
    assert [c.info.run_name for c in children] == ["stage_1_first", "stage_2_second"]
    for child, name in zip(children, ["first", "second"], strict=True):
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == result.run_id
        assert child.data.tags["medexp.stage"] == name
        assert child.data.params["trainer.max_steps"] == "10"  # the stage's own trainer settings
        assert child.data.metrics["data/mix/extra/weight"] == 2  # the mixture joins every stage
    assert children[1].data.params["dataset.path"].endswith("safety/safety_sft.jsonl")
    assert parent.data.metrics["stages/second/eval_loss"] == pytest.approx(result.metrics["eval_loss"])
    assert parent.data.metrics["eval_loss"] == pytest.approx(result.metrics["eval_loss"])


def test_every_stage_logs_its_data_inputs(staged):
    _, _, client, runs = staged
    for run in runs:
        if "medexp.stage" not in run.data.tags:
            continue
        names = {i.dataset.name for i in client.get_run(run.info.run_id).inputs.dataset_inputs}
        own = "medquad_sample.jsonl" if run.data.tags["medexp.stage"] == "first" else "safety_sft.jsonl"
        assert names == {own, "medquad.csv"}


def test_the_second_stage_starts_from_the_first_stages_adapter(staged):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from medexp.config import stage_configs
    from medexp.data import load_mixture, load_pairs, prepare_data
    from medexp.training.model import load_model, load_tokenizer
    from medexp.training.trainer import build_trainer

    cfg, result, client, runs = staged
    out = result.output_dir
    second = next(r for r in runs if r.data.tags.get("medexp.stage") == "second")
    start_loss = client.get_metric_history(second.info.run_id, "eval_loss")[0]
    assert start_loss.step == 0

    # Rebuild stage 2's validation data and evaluate base + the stage-1 adapter read back from disk.
    stage_cfg = stage_configs(cfg)[1][1]
    tokenizer = load_tokenizer(cfg.model)
    data = prepare_data(
        load_pairs(stage_cfg.dataset), stage_cfg.dataset, tokenizer, cfg.seed, load_mixture(cfg)
    )

    def evaluate(model) -> float:
        trainer = build_trainer(stage_cfg, model, tokenizer, data, out / "check", "fp32", [])
        return trainer.evaluate()["eval_loss"]

    base = AutoModelForCausalLM.from_pretrained(cfg.model.name_or_path)
    from_stage_one = PeftModel.from_pretrained(base, out / "stages" / "first" / "adapter", is_trainable=True)
    assert evaluate(from_stage_one) == pytest.approx(start_loss.value, rel=1e-4)
    fresh = load_model(cfg.model, cfg.lora, "fp32", False)  # LoRA B = 0: the base model
    assert evaluate(fresh) > start_loss.value * 1.2  # stage 2 did not start from the base

    # The run's adapter is the last stage's.
    final = load_file(out / "adapter" / "adapter_model.safetensors")
    last = load_file(out / "stages" / "second" / "adapter" / "adapter_model.safetensors")
    assert final.keys() == last.keys() and all(torch.equal(final[k], last[k]) for k in final)


def test_resume_continues_in_the_stage_it_was_in(staged, tmp_path):
    """Last in this module, since it rewinds the staged run to one that died in stage 2 right after its first
    kept checkpoint: resume skips stage 1 (its adapter is loaded, its child run untouched), continues stage 2 in
    its own child run from that checkpoint, and ends where the uninterrupted run ended."""
    import json
    import shutil

    _, result, client, runs = staged
    out, runs_by_stage = result.output_dir, {r.data.tags.get("medexp.stage"): r for r in runs}
    second = out / "stages" / "second"
    kept = sorted((second / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    for path in [*kept[1:], second / "adapter", out / "adapter"]:
        shutil.rmtree(path)
    (second / "stage.json").unlink()
    record = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(
        json.dumps({"run_id": record["run_id"], "tracking_uri": record["tracking_uri"]})
    )
    for stage in (None, "second"):
        client.update_run(runs_by_stage[stage].info.run_id, "RUNNING")
    first_before = client.get_run(runs_by_stage["first"].info.run_id).data.metrics

    resumed = train(compose_config([f"resume={out}"], tmp_path))

    assert resumed.run_id == result.run_id and resumed.metrics["eval_loss"] == pytest.approx(
        result.metrics["eval_loss"], rel=0.01
    )
    after = client.search_runs([client.get_experiment_by_name("medexp-smoke").experiment_id])
    assert len(after) == len(runs) and {r.info.status for r in after} == {"FINISHED"}  # no new runs
    assert client.get_run(runs_by_stage["first"].info.run_id).data.metrics == first_before
    second_id = runs_by_stage["second"].info.run_id
    steps = [m.step for m in client.get_metric_history(second_id, "eval_loss")]
    assert len(steps) == len(set(steps))  # nothing logged twice
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
