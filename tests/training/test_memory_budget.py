"""trainer.memory_budget_gb: the estimate of a run's peak (medexp.training.memory_budget), the order in which the
levers come on, the plan applied to a run's config, and a real tiny-model run that the budget puts on activation
checkpointing and that still trains."""

from __future__ import annotations

import math
import sys

import pytest

from medexp.training.memory_budget import (
    GIB,
    HEAD_COLUMNS,
    Batch,
    Levers,
    ModelShape,
    Workload,
    estimate,
    plan,
)
from medexp.training.memory_plan import apply, longest_batch, return_freed_memory
from tests.helpers import TINY_MODEL

# SmolLM-135M / SmolLM2-135M: 30 layers, hidden 576, 9 heads of 64, 3 kv heads, intermediate 1536, vocab 49152
SMOLLM = ModelShape(layers=30, hidden=576, intermediate=1536, kv_width=192, heads=9, vocab=49152)
LONGEST = Batch(sequences=8, length=1024, answer_tokens=6144)  # batch 8 x 1024 tokens, 3/4 of them answers


def _work(**kw) -> Workload:
    defaults = {
        "shape": SMOLLM,
        "base": 1.2 * GIB,
        "trainable": 4_884_480,
        "batch": LONGEST,
        "eval_sequences": 8,
    }
    return Workload(**(defaults | kw))


def test_shape_from_the_tiny_models_config():
    from transformers import AutoConfig

    shape = ModelShape.from_config(AutoConfig.from_pretrained(TINY_MODEL))
    assert shape == ModelShape(layers=4, hidden=128, intermediate=384, kv_width=64, heads=4, vocab=1024)


def test_each_lever_lowers_the_estimate_of_smollm_at_batch_8_by_1024():
    work = _work()
    plain = estimate(work, Levers())
    checkpointed = estimate(work, Levers(checkpointing=True))
    tiled = estimate(work, Levers(checkpointing=True, head_columns=HEAD_COLUMNS))
    halves = estimate(work, Levers(checkpointing=True, head_columns=HEAD_COLUMNS, micro_batch=4))
    # 30 layers x 8192 tokens x ~109 KB: ~25 GB of activations, the "nobody can train batch 8 on 24 GB"
    assert 20 * GIB < plain["activations"] < 30 * GIB
    assert plain["total"] > checkpointed["total"] > tiled["total"] > halves["total"]
    assert checkpointed["activations"] < plain["activations"] / 10  # each layer's input plus one layer
    assert tiled["head"] < checkpointed["head"] / 10  # 6144 x 49152 kept logits -> 4096 x 4096 tiles
    assert tiled["total"] < 8 * GIB  # the target fits without dropping tokens


def test_levers_come_on_in_order_of_cost():
    work = _work()
    totals = [
        estimate(work, levers)["total"]
        for levers in (Levers(), Levers(checkpointing=True), Levers(True, HEAD_COLUMNS))
    ]
    assert not plan(work, totals[0] + 1, "test").actions  # fits: nothing turned on
    assert plan(work, totals[0] - 1, "test").levers == Levers(checkpointing=True)
    assert plan(work, totals[1] - 1, "test").levers == Levers(True, HEAD_COLUMNS)
    capped = plan(work, totals[2] - 1, "test")
    assert capped.fits and capped.levers.micro_batch in (4, 2, 1)  # the batch split into whole micro-batches
    assert capped.after <= totals[2] - 1
    # on CUDA TRL computes the head: no head lever, checkpointing then micro-batches
    cuda = plan(
        _work(stored_limit=0),
        estimate(_work(stored_limit=0), Levers(True))["total"] - 1,
        "t",
        head_lever=False,
    )
    assert cuda.levers.head_columns is None and cuda.levers.micro_batch is not None


def test_a_budget_below_one_sequence_does_not_fit_and_says_how_much_it_needs():
    p = plan(_work(), 1.5 * GIB, "test")
    assert not p.fits
    assert p.levers == Levers(True, HEAD_COLUMNS, 1)
    one = estimate(_work(), Levers(True, HEAD_COLUMNS, 1))["total"]
    assert p.after == one and 1.5 * GIB < one < 2.5 * GIB


def test_the_plan_line_and_its_params():
    p = plan(_work(), 8 * GIB, "trainer.memory_budget_gb=8")
    assert p.fits and p.actions == ["activation checkpointing", f"answer head in {HEAD_COLUMNS}-column tiles"]
    assert p.line().startswith(
        "memory budget 8.0 GB (trainer.memory_budget_gb=8): longest batch (8 x 1024 tokens)"
    )
    params = p.params()
    assert params["memory_budget/gradient_checkpointing"] == "True"
    assert params["memory_budget/micro_batch"] == "8"
    # checkpointing asked for by trainer.gradient_checkpointing is not the budget's doing
    assert "activation checkpointing" not in plan(_work(), 8 * GIB, "t", checkpointing=True).actions


def test_apply_keeps_the_optimizer_steps_batch(make_cfg):
    cfg = make_cfg("experiment=smoke", "trainer.batch_size=8", "trainer.gradient_accumulation_steps=2")
    p = plan(_work(), 1.9 * GIB, "test")  # needs micro-batches
    assert p.levers.micro_batch in (1, 2, 4)
    out = apply(cfg, p)
    t = out.trainer
    assert t.gradient_checkpointing is True
    assert t.batch_size == p.levers.micro_batch and t.eval_batch_size <= t.batch_size
    assert t.batch_size * t.gradient_accumulation_steps == 16  # the same sequences per optimizer step
    assert cfg.trainer.batch_size == 8  # the run's own config is untouched
    eff = apply(make_cfg("experiment=smoke", "trainer.batch_size=8", "trainer.effective_batch_size=32"), p)
    from medexp.config.runtime import gradient_accumulation

    assert eff.trainer.batch_size * gradient_accumulation(eff.trainer) == 32


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_memory_is_returned_to_the_os_on_linux():
    assert return_freed_memory()  # mallopt(M_MMAP_THRESHOLD, 64 KiB) accepted


def test_longest_batch_of_a_tokenized_split():
    from datasets import Dataset

    rows = {
        "input_ids": [[1] * n for n in (5, 9, 7, 3)],
        "completion_mask": [[0, 1, 1, 0, 0], [1] * 9, [0] * 7, [1] * 3],
    }
    batch = longest_batch(Dataset.from_dict(rows), 2, None)
    assert batch == Batch(2, 9, 12)  # padded to the longest row; the two largest answer counts (9 + 3)
    assert longest_batch(Dataset.from_dict(rows), 2, 16) == Batch(2, 16, 32)  # packed blocks


@pytest.mark.slow
def test_a_tight_budget_turns_on_checkpointing_in_a_real_run_that_still_trains(make_cfg, monkeypatch):
    """The tiny model at batch 32 of the sample's longest rows. The budget is set where the run plans, half-way
    between its own estimates with and without checkpointing (what the process holds then is only known there),
    so the real plan turns checkpointing on, and the run trains with it."""
    from mlflow import MlflowClient

    from medexp.train import train
    from medexp.training import memory_plan

    def half_way(work, budget, source, *args, **kwargs):
        plain, lean = (estimate(work, Levers(c))["total"] for c in (False, True))
        assert plain - lean > 0.2 * GIB  # room on either side of the midpoint
        return plan(work, (plain + lean) / 2, "test: half-way", *args, **kwargs)

    monkeypatch.setattr(memory_plan, "plan", half_way)
    overrides = ["experiment=smoke", "trainer.batch_size=32", "trainer.max_steps=2", "trainer.eval_steps=2"]
    overrides += ["trainer.logging_steps=1", "eval.generation.enabled=false", "eval.before_training=false"]
    cfg = make_cfg(*overrides)
    result = train(cfg)

    client = MlflowClient(tracking_uri=str(cfg.tracking.uri))
    run = client.get_run(result.run_id)
    assert run.data.params["memory_budget/gradient_checkpointing"] == "True"
    # on a CPU under glibc, a plan that turns levers on also has freed blocks go back to the OS
    assert run.data.params["memory_budget/actions"].startswith("activation checkpointing")
    assert run.data.params["trainer.gradient_checkpointing"] == "False"  # the config as it was asked
    assert result.model.base_model.model.model.layers[0].gradient_checkpointing  # and the model trained so
    assert run.data.metrics["train/peak_memory_mb"] > 0  # peak memory stays in the run's cost metrics
    losses = [m.value for m in client.get_metric_history(result.run_id, "train_loss")]
    assert losses and all(math.isfinite(v) for v in losses)  # it trained
    assert math.isfinite(result.metrics["eval_loss"])
