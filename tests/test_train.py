"""The smoke run end to end, in-process, against a real MLflow SQLite store; failures; the CLI's bad input."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from safetensors.torch import load_file

from medexp.train import train
from tests.helpers import TINY_MODEL, compose_config, run_cli

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke(cli_smoke):
    """The README's CLI smoke run (`python -m medexp.train experiment=smoke`, shared with test_console and
    test_resume), read back from what it left: its config.yaml, run.json and MLflow store."""
    _, cwd = cli_smoke
    (run_dir,) = [p.parent for p in cwd.glob("outputs/*/*/run.json")]
    record = json.loads((run_dir / "run.json").read_text())
    result = SimpleNamespace(
        run_id=record["run_id"],
        metrics=record["metrics"],
        output_dir=run_dir,
        adapter_dir=run_dir / "adapter",
    )
    client = MlflowClient(record["tracking_uri"])
    experiment = client.get_experiment_by_name("medexp-smoke")
    runs = client.search_runs([experiment.experiment_id])
    return OmegaConf.load(run_dir / "config.yaml"), result, client, runs


def test_one_finished_run(smoke):
    _, result, _, runs = smoke
    assert len(runs) == 1
    assert runs[0].info.status == "FINISHED"
    assert runs[0].info.run_id == result.run_id


def test_params_are_the_flattened_resolved_config(smoke):
    *_, runs = smoke
    params = runs[0].data.params
    assert params["lora.r"] == "8"
    assert params["lora.alpha"] == "32.0"  # typed float in the schema (peft's lora_alpha)
    assert params["trainer.learning_rate"] == "0.003"
    assert params["trainer.max_steps"] == "40"
    assert params["dataset.val_fraction"] == "0.1"
    assert params["model.name_or_path"] == str(TINY_MODEL)  # resolved, not ${paths.assets_dir}/...
    assert params["seed"] == "42"


def test_metrics_at_each_step(smoke):
    _, _, client, runs = smoke
    run_id = runs[0].info.run_id

    def steps(name):
        return [m.step for m in client.get_metric_history(run_id, name)]

    assert steps("train_loss") == [5, 10, 15, 20, 25, 30, 35, 40]
    assert steps("learning_rate") == steps("train_loss")
    assert steps("grad_norm") == steps("train_loss")
    assert steps("throughput_tokens_per_s") == steps("train_loss")
    assert steps("eval_loss") == [0, 10, 20, 30, 40]  # step 0 = the base model, before training
    # the default eval group: generation metrics on held-out questions, for both models, and the deltas
    for name in ("rouge_1", "rouge_2", "rouge_l", "bleu", "exact_match", "bertscore_f1", "semantic_similarity",
                 "distinct_2", "answer_words_mean", "latency_p50_s", "latency_p95_s", "tokens_per_s", "peak_memory_mb"):  # fmt: skip
        for prefix in ("eval/", "eval/base/", "eval/delta/"):
            assert prefix + name in runs[0].data.metrics, prefix + name
    assert all(m.value > 0 for m in client.get_metric_history(run_id, "throughput_tokens_per_s"))
    metrics = runs[0].data.metrics
    for name in ("eval/loss", "eval/perplexity", "eval/base/loss", "eval/base/perplexity", "data/rows_in"):
        assert name in metrics
    assert metrics["data/rows_in"] == 360 and metrics["data/rows_kept"] == 360


def test_the_runs_cost_is_logged(smoke):
    """Wall time, non-padding tokens/s, padding fraction, peak memory and effective batch of the training."""
    *_, runs = smoke
    m = runs[0].data.metrics
    assert m["train/wall_time_s"] > 0 and m["train/tokens_per_s"] > 0 and m["train/peak_memory_mb"] > 100
    assert m["train/effective_batch_size"] == 16  # the smoke preset: batch 16 x 1 accumulation x 1 process
    # length-grouped batches (trainer.batching=auto on a CPU) leave little padding; 0 would mean nothing counted
    assert 0 < m["train/padding_fraction"] < 0.15
    # MLflow's system metrics monitor (psutil is installed with the dev extra): CPU and memory utilisation
    assert (
        0 <= m["system/cpu_utilization_percentage"] <= 100 and m["system/system_memory_usage_megabytes"] > 0
    )


def test_eval_loss_fell_at_least_ten_percent(smoke):
    _, result, client, runs = smoke
    m = result.metrics
    assert m["eval/loss"] <= 0.9 * m["eval/base/loss"], m
    history = [x.value for x in client.get_metric_history(runs[0].info.run_id, "eval_loss")]
    assert history[-1] <= 0.9 * history[0]
    # train() returns the best eval_loss seen during training, which a sweeper optimizes
    assert m["eval_loss"] == pytest.approx(min(history[1:]))
    assert m["eval/loss"] == pytest.approx(m["eval_loss"], rel=1e-4)  # the best checkpoint is what was kept


def test_artifacts(smoke):
    _, result, client, runs = smoke
    run_id = runs[0].info.run_id
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "adapter", "data", "eval", "report.html"} <= top
    assert {a.path for a in client.list_artifacts(run_id, "eval")} >= {
        "eval/report.md", "eval/generations.json", "eval/loss_curves.png", "eval/before_after.png",
    }  # fmt: skip
    report = Path(client.download_artifacts(run_id, "report.html", str(result.output_dir / "dl"))).read_text()
    assert "<td>rouge_l</td>" in report and "data:image/png;base64," in report
    adapter = {Path(a.path).name for a in client.list_artifacts(run_id, "adapter")}
    assert {
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    } <= adapter
    config = Path(client.download_artifacts(run_id, "config.yaml", str(result.output_dir / "dl"))).read_text()
    assert "${" not in config and "r: 8" in config  # resolved
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()  # also in the Hydra run directory


def test_tags(smoke):
    cfg, _, _, runs = smoke
    tags = runs[0].data.tags
    assert tags["medexp.base_model"] == str(TINY_MODEL)
    assert len(tags["medexp.dataset_fingerprint"]) == 16
    assert tags["medexp.output_dir"] == str(Path(cfg.paths.output_dir).resolve())
    assert "medexp.git_commit" not in tags  # launched from a temp directory outside any git repository
    assert tags["medexp.overrides"] == "experiment=smoke"


def test_adapter_weights_changed_and_base_weights_did_not(trained):
    """The session's in-process smoke run (tests/conftest.py, 20 steps), so the trained model itself can be
    inspected."""
    from transformers import AutoModelForCausalLM

    from medexp.training.model import base_state

    _, result, _ = trained
    saved = load_file(str(result.adapter_dir / "adapter_model.safetensors"))
    assert saved and all("lora_" in name for name in saved)  # the adapter holds no base weights
    lora_b = [t for name, t in saved.items() if "lora_B" in name]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b)  # B starts at zero: training moved it

    fresh = AutoModelForCausalLM.from_pretrained(TINY_MODEL).state_dict()
    trained = base_state(result.model)
    assert set(trained) == set(fresh)
    for name, tensor in fresh.items():
        assert torch.equal(trained[name], tensor), name


def test_exception_mid_run_marks_the_run_failed(tmp_path):
    """An error after the run opened (here: an optimizer transformers does not know) ends it FAILED."""
    cfg = compose_config(["experiment=smoke", "trainer.optim=no_such_optimizer"], tmp_path)
    with pytest.raises(ValueError, match="no_such_optimizer"):
        train(cfg)
    client = MlflowClient(cfg.tracking.uri)
    (run,) = client.search_runs([client.get_experiment_by_name("medexp-smoke").experiment_id])
    assert run.info.status == "FAILED"
    assert "no_such_optimizer" in run.data.tags["error"]
    assert run.data.params["trainer.optim"] == "no_such_optimizer"  # what was asked for is on record


BAD_INPUT = [
    (["lora.r=1.5"], "Wrong value for lora.r (from the command-line override lora.r=1.5)"),
    (["trainer.learnig_rate=1e-3"], "Did you mean learning_rate?"),
    (["trainer.learning_rate=0"], "trainer.learning_rate must be positive, got 0"),
    (["dataset.val_fraction=0"], "dataset.val_fraction must be strictly between 0 and 1, got 0"),
    (["dataset=file"], "dataset.path is required"),
    (["dataset=file", "dataset.path=COLUMNS"], "Could not find an answer column. Columns found: 'q', 'resp'"),
    (["model.name_or_path=/no/such/model"], "looks like a local path but no such directory exists"),
    (["lora=qlora"], "pip install 'medexp[qlora]'"),
    (
        ["trainer.effective_batch_size=24"],
        "trainer.effective_batch_size=24 is not a multiple of trainer.batch_size=16",
    ),
    (["tracking.system_metrics_interval=-1"], "tracking.system_metrics_interval must be positive, got -1"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_INPUT, ids=[" ".join(o) for o, _ in BAD_INPUT])
def test_bad_input_is_one_paragraph_and_exit_2(tmp_path, overrides, message):
    (tmp_path / "cols.csv").write_text("q,resp\nWhat is gout?,A joint condition.\n")
    overrides = [o.replace("COLUMNS", "cols.csv") for o in overrides]
    # bitsandbytes hidden, so the qlora case behaves as on a machine without the extra
    proc = run_cli(
        ["experiment=smoke", *overrides], tmp_path, prelude="import sys; sys.modules['bitsandbytes'] = None"
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("medexp: error: ") and proc.stderr.strip().count("\n") == 0
    assert not (tmp_path / "mlruns").exists()  # stopped before any run was opened


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="needs the qlora extra")
def test_qlora_smoke_run(tmp_path):
    """lora=qlora end to end: a 4-bit NF4 base (on the CPU here, through bitsandbytes), loss still falls."""
    cfg = compose_config(["experiment=smoke", "lora=qlora"], tmp_path)
    result = train(cfg)
    assert result.metrics["eval/loss"] <= 0.9 * result.metrics["eval/base/loss"], result.metrics
    q_proj = result.model.get_base_model().model.layers[0].self_attn.q_proj.base_layer
    assert type(q_proj).__name__ == "Linear4bit"

    # Export with merge=true: the adapter is folded into the unquantized base (4-bit weights cannot take it).
    from omegaconf import OmegaConf
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from medexp.serving.publish import export

    out = tmp_path / "export"
    export(OmegaConf.create({"source": str(result.output_dir), "output_dir": str(out), "merge": True, "register": False,
                             "registered_name": None, "push_to_hub": False, "hub_repo": None, "hub_private": True,
                             "tracking": {"uri": cfg.tracking.uri}}))  # fmt: skip
    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    assert type(merged.model.layers[0].self_attn.q_proj).__name__ == "Linear"
    unquantized = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(cfg.model.name_or_path), out / "adapter"
    )
    ids = torch.tensor([[1, 100, 200, 300, 400]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, unquantized(ids).logits, atol=1e-4)


def test_cli_smoke_run(cli_smoke):
    """`python -m medexp.train experiment=smoke` from a fresh directory, as the README says."""
    _, tmp_path = cli_smoke
    (adapter,) = tmp_path.glob("outputs/*/*/adapter/adapter_model.safetensors")
    assert (adapter.parent.parent / "config.yaml").is_file()
    # run.json lets source=<this directory> find the run from anywhere: the store's path is absolute
    run = json.loads((adapter.parent.parent / "run.json").read_text())
    assert (
        run["tracking_uri"] == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}" and len(run["run_id"]) == 32
    )
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()
    assert list((tmp_path / "mlruns" / "artifacts").glob("*/artifacts/adapter/adapter_model.safetensors"))


def test_data_report_is_logged(smoke):
    import json

    _, result, client, _ = smoke
    run = client.get_run(result.run_id)
    assert {f.path for f in client.list_artifacts(result.run_id, "data")} == {
        "data/report.json",
        "data/token_lengths.png",
    }
    local = Path(client.download_artifacts(result.run_id, "data"))
    assert (local / "token_lengths.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((local / "report.json").read_text())
    assert report["fingerprint"] == run.data.tags["medexp.dataset_fingerprint"]
    assert report["metrics"]["data/rows_kept"] == 360 and report["token_length"]["max"] <= 256
    inputs = {
        (i.dataset.name, {t.key: t.value for t in i.tags}["mlflow.data.context"]): i.dataset
        for i in run.inputs.dataset_inputs
    }
    assert set(inputs) == {("medquad_sample.jsonl", "training"), ("medquad_sample.jsonl", "validation")}
    assert json.loads(inputs["medquad_sample.jsonl", "validation"].profile)["num_rows"] == 36
