"""Every batching mode computes the same loss and gradients per answer token; padding-free and packed batches keep
examples apart; `auto` picks by device and attention kernel; length grouping cuts padding yet keeps epochs random."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from medexp.data import load_pairs, prepare_data
from medexp.training.batching import choose_batching
from medexp.training.model import load_model, load_tokenizer
from tests.helpers import compose_config


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    cfg = compose_config(["experiment=smoke"], tmp_path_factory.mktemp("batching"))
    tokenizer = load_tokenizer(cfg.model)
    data = prepare_data(load_pairs(cfg.dataset), cfg.dataset, tokenizer, cfg.seed, [])
    torch.manual_seed(0)
    model = load_model(cfg.model, cfg.lora, "fp32", False).eval()  # no LoRA dropout: batches compare exactly
    for name, p in model.named_parameters():  # LoRA's B starts at 0; make the adapters do something
        if "lora_B" in name:
            p.data.normal_(0, 0.02)
    rows = [data.train[i] for i in range(5)]  # different lengths
    examples = [
        {
            "input_ids": r["input_ids"],
            "labels": [t if m else -100 for t, m in zip(r["input_ids"], r["completion_mask"], strict=True)],
        }
        for r in rows
    ]
    assert len({len(e["input_ids"]) for e in examples}) > 1
    return cfg, tokenizer, model, examples, data


def _loss_and_grads(model, batch):
    model.zero_grad()
    loss = model(**batch, use_cache=False).loss  # as TRL's compute_loss calls it
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


def _batches(tokenizer, examples):
    pad = tokenizer.pad_token_id
    packed = {
        "input_ids": [t for e in examples for t in e["input_ids"]],
        "labels": [t for e in examples for t in e["labels"]],
        "seq_lengths": [len(e["input_ids"]) for e in examples],
    }
    return {
        "padded": DataCollatorForLanguageModeling(pad_token_id=pad)(examples),
        "padding_free": DataCollatorForLanguageModeling(pad_token_id=pad, padding_free=True)(examples),
        # packing: TRL's BFD packing stores examples as one row with seq_lengths, collated padding-free
        "packing": DataCollatorForLanguageModeling(pad_token_id=pad, padding_free=True)([packed]),
    }


def test_every_mode_gives_the_padded_loss_and_gradients(setup):
    _, tokenizer, model, examples, _ = setup
    batches = _batches(tokenizer, examples)
    assert batches["padded"]["attention_mask"].eq(0).any()  # the padded batch really holds padding
    assert "attention_mask" not in batches["padding_free"]  # position_ids carry the boundaries
    loss, grads = _loss_and_grads(model, batches["padded"])
    for mode in ("padding_free", "packing"):
        other_loss, other_grads = _loss_and_grads(model, batches[mode])
        assert other_loss.item() == pytest.approx(loss.item(), rel=1e-5, abs=1e-6), mode
        for name, grad in grads.items():
            torch.testing.assert_close(other_grads[name], grad, rtol=1e-4, atol=1e-6, msg=f"{mode}: {name}")


@pytest.mark.parametrize("mode", ["padding_free", "packing"])
def test_no_attention_across_examples(setup, mode):
    """Changing the first example leaves the logits of the others exactly as they were."""
    _, tokenizer, model, examples, _ = setup
    changed = [
        dict(examples[0], input_ids=[(t + 7) % 100 + 3 for t in examples[0]["input_ids"]]),
        *examples[1:],
    ]
    start = len(examples[0]["input_ids"])
    with torch.no_grad():  # use_cache=False as the Trainer runs the model (a cache turns the block mask off)
        before = model(**_batches(tokenizer, examples)[mode], use_cache=False).logits[0]
        after = model(**_batches(tokenizer, changed)[mode], use_cache=False).logits[0]
    first_before, first_after = before[:start], after[:start]
    before, after = before[start:], after[start:]
    torch.testing.assert_close(after, before, rtol=0, atol=1e-5)
    assert not torch.allclose(first_after, first_before)  # the change itself did reach the model


@pytest.mark.parametrize(
    ("batching", "attention", "cuda", "mode"),
    [
        ("auto", "sdpa", False, "group_by_length"),
        ("auto", "sdpa", True, "group_by_length"),
        ("auto", "flash_attention_2", True, "padding_free"),
        ("auto", "flash_attention_3", True, "padding_free"),
        ("packing", "sdpa", False, "packing"),
        ("padded", "flash_attention_2", True, "padded"),
    ],
)
def test_auto_chooses_by_device_and_attention(batching, attention, cuda, mode):
    choice = choose_batching(
        OmegaConf.create({"batching": batching}), OmegaConf.create({"attn_implementation": attention}), cuda
    )
    assert choice.mode == mode and choice.reason
    kwargs = choice.trainer_kwargs(block_tokens=512)
    assert kwargs["padding_free"] is (mode == "padding_free") and kwargs["packing"] is (mode == "packing")
    assert kwargs["max_length"] == (512 if mode == "packing" else None)
    assert (kwargs["train_sampling_strategy"] == "group_by_length") is (mode == "group_by_length")


def _epoch_batches(cfg, tokenizer, model, data, tmp: Path, batching: str) -> list[list[int]]:
    from medexp.training.trainer import build_trainer

    cfg.trainer.batching = batching
    trainer = build_trainer(cfg, model, tokenizer, data, tmp, "fp32", [])
    lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
    loader = trainer.get_train_dataloader()
    return [[lengths[i] for i in batch] for batch in loader.batch_sampler], loader


def test_length_grouping_cuts_padding_and_keeps_epochs_random(setup, tmp_path):
    cfg, tokenizer, model, _, data = setup
    cfg = cfg.copy()

    def padding(batches):
        return 1 - sum(map(sum, batches)) / sum(max(b) * len(b) for b in batches)

    grouped, loader = _epoch_batches(cfg, tokenizer, model, data, tmp_path, "group_by_length")
    padded, _ = _epoch_batches(cfg, tokenizer, model, data, tmp_path, "padded")
    assert type(loader.batch_sampler.sampler).__name__ == "LengthGroupedSampler"
    assert padding(grouped) < padding(padded) / 2
    first = list(loader.batch_sampler.sampler)
    loader.batch_sampler.sampler.generator = torch.Generator().manual_seed(1)  # the next epoch's seed
    assert list(loader.batch_sampler.sampler) != first


def test_the_isolation_check_passes_the_tiny_model_and_refuses_a_leaking_one(setup):
    """Before a padding-free or packed run the model is checked to keep concatenated examples apart. A model that
    ignores position_ids (stand-in: the tiny model with them dropped) lets examples attend to each other: refused."""
    from medexp.config import UserError
    from medexp.training.batching import check_examples_isolated

    _, _, model, _, _ = setup
    check_examples_isolated(model, "sdpa", "padding_free")

    forward = model.forward

    def without_positions(*args, position_ids=None, **kwargs):
        return forward(*args, **kwargs)

    model.forward = without_positions
    try:
        with pytest.raises(
            UserError, match=r"trainer.batching=packing needs a model that keeps the examples"
        ):
            check_examples_isolated(model, "sdpa", "packing")
    finally:
        del model.forward
