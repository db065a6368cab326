"""eval_loss is the mean over every answer token of the validation split, whatever trainer.eval_batch_size is
(transformers' own loop weights each batch's mean by its rows, so batch 2 and batch 8 disagree)."""

from __future__ import annotations

import pytest
import torch

from medexp.data import load_pairs, prepare_data
from medexp.training.model import load_model, load_tokenizer
from medexp.training.trainer import build_trainer
from tests.helpers import compose_config


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval_loss")
    cfg = compose_config(["experiment=smoke", "eval=none", "dataset.val_fraction=0.25"], tmp)
    tokenizer = load_tokenizer(cfg.model)
    data = prepare_data(load_pairs(cfg.dataset), cfg.dataset, tokenizer, cfg.seed, [])
    torch.manual_seed(0)
    model = load_model(cfg.model, cfg.lora, "fp32", False)
    for name, p in model.named_parameters():  # LoRA's B starts at 0; make the adapters do something
        if "lora_B" in name:
            p.data.normal_(0, 0.02)
    return build_trainer(cfg, model, tokenizer, data, tmp, "fp32", [])


def _evaluate(trainer, batch: int) -> float:
    trainer.args.per_device_eval_batch_size = batch
    return trainer.evaluate()["eval_loss"]


def _token_mean(trainer) -> float:
    """Every validation row alone: its summed answer-token loss, over all answer tokens."""
    total, tokens = 0.0, 0
    model = trainer.model.eval()
    collate = trainer.data_collator
    with torch.no_grad():
        for row in trainer.eval_dataset:
            batch = collate([row])
            n = int((batch["labels"][..., 1:] != -100).sum())
            total += float(model(**batch, use_cache=False).loss) * n
            tokens += n
    return total / tokens


def test_eval_loss_does_not_depend_on_the_eval_batch_size(trainer):
    assert len(trainer.eval_dataset) >= 8
    losses = [_evaluate(trainer, b) for b in (1, 8)]
    expected = _token_mean(trainer)
    assert losses == pytest.approx([expected] * 2, rel=1e-4)


def test_transformers_own_average_would_differ(trainer):
    """The failure this module fixes, on the same rows: transformers' loop (the SFTTrainer that token_mean_eval
    subclassed), one row per batch, gives the mean of the rows' means, which rows of unequal answer lengths move away
    from the token mean."""
    trainer.args.per_device_eval_batch_size = 1
    base = type(trainer).__mro__[1]
    plain = base.evaluation_loop(trainer, trainer.get_eval_dataloader(), "e", True, None, "eval")
    assert abs(plain.metrics["eval_loss"] - _token_mean(trainer)) > 1e-3
