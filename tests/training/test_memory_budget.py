"""trainer.memory_budget_gb: the estimate of a run's peak (medexp.training.memory_budget), the order in which the
levers come on, the plan applied to a run's config, and a real tiny-model run that the budget puts on activation
checkpointing and that still trains."""

from __future__ import annotations

import math
import sys

import pytest

from medexp.training.memory_budget import (
    AUTOCAST_SHARE,
    CHECKPOINT_COST,
    GIB,
    HEAD_COLUMNS,
    Batch,
    Levers,
    ModelShape,
    Plan,
    Workload,
    candidates,
    checkpointed_layers,
    estimate,
    plan,
    slowdown,
)
from medexp.training.memory_plan import apply, checkpoint_kwargs, longest_batch, return_freed_memory
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
    half = estimate(work, Levers(checkpoint_every=2))
    checkpointed = estimate(work, Levers(checkpoint_every=1))
    tiled = estimate(work, Levers(checkpoint_every=1, head_columns=HEAD_COLUMNS))
    halves = estimate(work, Levers(checkpoint_every=1, head_columns=HEAD_COLUMNS, micro_batch=4))
    # 30 layers x 8192 tokens x ~109 KB: ~25 GB of activations, the "nobody can train batch 8 on 24 GB"
    assert 20 * GIB < plain["activations"] < 30 * GIB
    assert plain["total"] > half["total"] > checkpointed["total"] > tiled["total"] > halves["total"]
    # every other layer checkpointed: 15 layers keep their activations, the other 15 their input only
    assert 0.45 < half["activations"] / plain["activations"] < 0.6
    assert checkpointed["activations"] < plain["activations"] / 10  # each layer's input plus one layer
    assert tiled["head"] < checkpointed["head"] / 10  # 6144 x 49152 kept logits -> 4096 x 4096 tiles
    assert tiled["total"] < 8 * GIB  # the target fits without dropping tokens


def test_bf16_autocast_keeps_two_thirds_of_fp32s_activations_and_a_bf16_copy_of_each_weight():
    fp32, autocast = (estimate(_work(autocast=a), Levers())["activations"] for a in (False, True))
    weights = 30 * SMOLLM.layer_weights * 2  # the frozen weights' bf16 copies, one per layer's matmuls
    assert autocast == pytest.approx(fp32 * AUTOCAST_SHARE + weights)
    bf16 = estimate(_work(dtype_bytes=2), Levers())["activations"]  # bf16 weights: everything in 2 bytes
    assert bf16 == pytest.approx(fp32 / 2)
    # a checkpointed layer's input is the residual stream: fp32 under autocast
    every = estimate(_work(autocast=True), Levers(checkpoint_every=1))["activations"]
    assert every > 30 * SMOLLM.hidden * 4 * LONGEST.sequences * LONGEST.length


def test_checkpointing_every_kth_layer_counts_what_transformers_checkpoints():
    # transformers' every_n_layers checkpoints layers 0, k, 2k, ...
    assert [checkpointed_layers(30, k) for k in (0, 1, 2, 3, 7, 29, 30)] == [0, 30, 15, 10, 5, 2, 1]
    ks = {lv.checkpoint_every for lv in candidates(_work(), False, True)}
    counts = sorted(checkpointed_layers(30, k) for k in ks)
    assert counts == sorted({checkpointed_layers(30, k) for k in range(31)})  # one k per count, none repeated
    assert {lv.checkpoint_every for lv in candidates(_work(), True, True)} == {1}  # asked for: every layer


def test_the_plan_takes_the_cheapest_levers_that_fit():
    work = _work(autocast=True)
    options = [(slowdown(work, lv), estimate(work, lv)["total"], lv) for lv in candidates(work, False, True)]
    for budget in (24 * GIB, 12 * GIB, 8 * GIB, 6 * GIB, 4 * GIB, 3 * GIB):
        p = plan(work, budget, "test")
        fitting = [o for o in options if o[1] <= budget]
        assert p.fits == bool(fitting)
        if fitting:
            assert p.after <= budget
            assert p.slowdown == min(o[0] for o in fitting)  # no fitting plan is estimated faster
    assert not plan(work, 30 * GIB, "test").actions  # fits: nothing turned on
    # every layer checkpointed and the head in tiles: ~1.6x (the body is ~5/6 of the FLOPs; measured 1/0.69 = 1.45x)
    assert 1.4 < slowdown(work, Levers(1, HEAD_COLUMNS)) < 1.8
    # on a CPU fewer sequences per pass cost least: at batch 8 x 1024 under 8 GB, 2 per pass x 4, nothing else
    assert plan(work, 8 * GIB, "test").levers == Levers(micro_batch=2)


def test_checkpointing_only_as_many_layers_as_the_budget_needs():
    """On CUDA (micro-batches dear, no head lever) a budget a little under the estimate checkpoints a few layers,
    not all 30; a tighter one more of them."""
    work = _work(stored_limit=0, cuda=True, autocast=True)
    plain = estimate(work, Levers())["total"]
    few = plan(work, plain - 2 * GIB, "t", head_lever=False)
    more = plan(work, plain - 6 * GIB, "t", head_lever=False)
    assert few.levers.micro_batch is None and few.levers.head_columns is None
    assert 0 < few.checkpointed < more.checkpointed < 30
    assert few.slowdown < more.slowdown < 1 + CHECKPOINT_COST
    assert few.actions == [f"activation checkpointing of {few.checkpointed} of 30 layers"]
    assert few.params()["memory_budget/checkpointed_layers"] == f"{few.checkpointed}/30"
    # every layer checkpointed and still over: only then fewer sequences per pass
    every = estimate(work, Levers(checkpoint_every=1))["total"]
    split = plan(work, every - 1, "t", head_lever=False)
    assert split.levers.checkpoint_every >= 1 and split.levers.micro_batch is not None


def test_a_budget_below_one_sequence_does_not_fit_and_says_how_much_it_needs():
    p = plan(_work(), 1.5 * GIB, "test")
    assert not p.fits
    assert p.levers == Levers(1, HEAD_COLUMNS, 1)  # the leanest plan: every lever
    one = estimate(_work(), Levers(1, HEAD_COLUMNS, 1))["total"]
    assert p.after == one and 1.5 * GIB < one < 2.5 * GIB


def test_the_plan_line_and_its_params():
    p = plan(_work(), 8 * GIB, "trainer.memory_budget_gb=8")  # fp32: one sequence per pass
    assert p.fits and p.actions == ["1 per pass x 8 accumulated"]
    assert p.line().startswith(
        "memory budget 8.0 GB (trainer.memory_budget_gb=8): longest batch (8 x 1024 tokens)"
    )
    assert f"~{p.slowdown:.2f}x step time" in p.line()
    params = p.params()
    assert params["memory_budget/gradient_checkpointing"] == "False"
    assert params["memory_budget/micro_batch"] == "1"
    # checkpointing asked for by trainer.gradient_checkpointing is not the budget's doing
    asked = plan(_work(), 8 * GIB, "t", checkpointing=True)
    assert asked.levers.checkpoint_every == 1 and "activation checkpointing" not in asked.actions


def test_apply_keeps_the_optimizer_steps_batch(make_cfg, tmp_path):
    from medexp.training.trainer import training_arguments

    cfg = make_cfg("experiment=smoke", "trainer.batch_size=8", "trainer.gradient_accumulation_steps=2")
    p = Plan(4 * GIB, "test", LONGEST, Levers(3, None, 2), 9 * GIB, 3 * GIB, True, layers=30)
    out = apply(cfg, p)
    t = out.trainer
    assert t.gradient_checkpointing is True
    assert t.batch_size == 2 and t.eval_batch_size <= t.batch_size
    assert t.batch_size * t.gradient_accumulation_steps == 16  # the same sequences per optimizer step
    assert cfg.trainer.batch_size == 8  # the run's own config is untouched
    eff = apply(make_cfg("experiment=smoke", "trainer.batch_size=8", "trainer.effective_batch_size=32"), p)
    from medexp.config.runtime import gradient_accumulation

    assert eff.trainer.batch_size * gradient_accumulation(eff.trainer) == 32
    # every 3rd layer: transformers' every_n_layers, beside the trainer's own checkpointing kwargs
    args = checkpoint_kwargs(p, training_arguments(out, tmp_path, "fp32"))
    assert args["activation_checkpointing"] is True
    assert args["activation_checkpointing_kwargs"] == {"use_reentrant": False, "every_n_layers": 3}
    plain = training_arguments(cfg, tmp_path, "fp32")
    assert checkpoint_kwargs(None, plain) == plain


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
def test_a_tight_budget_checkpoints_some_layers_in_a_real_run_that_still_trains(make_cfg, monkeypatch):
    """The tiny model (4 layers) at batch 32 of the sample's longest rows, with a plan that checkpoints every other
    layer (at 4 layers no partial plan fits before the full one; which plan is cheapest is the unit tests' part):
    the run applies it through transformers' every_n_layers, and trains so."""
    from mlflow import MlflowClient

    from medexp.train import train
    from medexp.training import memory_plan

    def half_way(work, budget, source, *args, **kwargs):
        before, after = (estimate(work, Levers(c))["total"] for c in (0, 2))
        return Plan(budget, "test: every other layer", work.batch, Levers(2), before, after, True, layers=4)

    monkeypatch.setattr(memory_plan, "plan", half_way)
    overrides = ["experiment=smoke", "trainer.batch_size=32", "trainer.max_steps=2", "trainer.eval_steps=2"]
    overrides += ["trainer.logging_steps=1", "eval.generation.enabled=false", "eval.before_training=false"]
    cfg = make_cfg(*overrides)
    result = train(cfg)

    client = MlflowClient(tracking_uri=str(cfg.tracking.uri))
    run = client.get_run(result.run_id)
    assert run.data.params["memory_budget/gradient_checkpointing"] == "True"
    assert run.data.params["memory_budget/checkpointed_layers"] == "2/4"
    # on a CPU under glibc, a plan that turns levers on also has freed blocks go back to the OS
    assert run.data.params["memory_budget/actions"].startswith("activation checkpointing of 2 of 4 layers")
    assert run.data.params["trainer.gradient_checkpointing"] == "False"  # the config as it was asked
    layers = result.model.base_model.model.model.layers
    assert [layer.gradient_checkpointing for layer in layers] == [True, False, True, False]  # trained so
    assert run.data.metrics["train/peak_memory_mb"] > 0  # peak memory stays in the run's cost metrics
    losses = [m.value for m in client.get_metric_history(result.run_id, "train_loss")]
    assert losses and all(math.isfinite(v) for v in losses)  # it trained
    assert math.isfinite(result.metrics["eval_loss"])
