"""On a CPU the LM head projects only the positions with a label (medexp.training.answer_head), and the loss, its
gradients and TRL's metrics stay exactly what TRL's own fused head gives, in every batch layout."""

from __future__ import annotations

import pytest
import torch
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling
from trl.trainer.utils import add_fused_lm_head

from medexp.data import load_pairs, prepare_data
from medexp.training.answer_head import score_answer_tokens_only
from medexp.training.model import load_model, load_tokenizer
from tests.helpers import compose_config

OUTPUTS = ("log_probs", "entropy", "is_top1")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    cfg = compose_config(["experiment=smoke"], tmp_path_factory.mktemp("answer_head"))
    tokenizer = load_tokenizer(cfg.model)
    data = prepare_data(load_pairs(cfg.dataset), cfg.dataset, tokenizer, cfg.seed, [])
    rows = [data.train[i] for i in range(4)]
    examples = [
        {
            "input_ids": r["input_ids"],
            "labels": [t if m else -100 for t, m in zip(r["input_ids"], r["completion_mask"], strict=True)],
        }
        for r in rows
    ]
    # a row that is all prompt: it must add nothing to the loss and still backpropagate
    examples.append({"input_ids": rows[0]["input_ids"][:20], "labels": [-100] * 20})
    pad = tokenizer.pad_token_id
    batches = {
        "padded": DataCollatorForLanguageModeling(pad_token_id=pad)(examples),
        "padding_free": DataCollatorForLanguageModeling(pad_token_id=pad, padding_free=True)(examples),
    }
    return cfg, tokenizer, data, batches


def _model(cfg):
    torch.manual_seed(0)
    model = load_model(cfg.model, cfg.lora, "fp32", False).eval()  # no dropout: runs compare exactly
    for name, p in model.named_parameters():  # LoRA's B starts at 0; make the adapters do something
        if "lora_B" in name:
            p.data.normal_(0, 0.02)
    add_fused_lm_head(model.get_base_model(), outputs=OUTPUTS)  # what SFTTrainer's __init__ does
    return model


def _run(model, batch):
    model.zero_grad()
    out = model(**batch, use_cache=False, fused_lm_head=True)  # as TRL's compute_loss calls it
    out.loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    fields = {k: getattr(out, k).detach() for k in ("loss", *OUTPUTS, "label_mask")}
    return fields, grads


@pytest.mark.parametrize("layout", ["padded", "padding_free"])
@pytest.mark.parametrize("kept", [True, False], ids=["kept_logits", "trl_kernel"])
def test_answer_only_head_gives_trls_loss_gradients_and_metrics(setup, layout, kept, monkeypatch):
    """Both ways medexp projects the answer positions: logits kept for the backward (fp32, within
    STORED_LOGITS_BYTES) and TRL's recomputing kernel (beyond it)."""
    from medexp.training import answer_head

    if not kept:
        monkeypatch.setattr(answer_head, "STORED_LOGITS_BYTES", 0)
    cfg, _, _, batches = setup
    batch = batches[layout]
    model = _model(cfg)
    trl_fields, trl_grads = _run(model, batch)
    assert score_answer_tokens_only(model)
    fields, grads = _run(model, batch)

    mask = trl_fields["label_mask"]
    assert mask.any() and not mask.all()  # prompt tokens really are skipped
    torch.testing.assert_close(fields["label_mask"], mask, rtol=0, atol=0)
    torch.testing.assert_close(fields["loss"], trl_fields["loss"], rtol=1e-6, atol=1e-6)
    for key in OUTPUTS:  # zero outside the answers, equal inside (entropy: a metric, summed in another order)
        atol = 1e-4 if key == "entropy" else 1e-5
        torch.testing.assert_close(
            fields[key], trl_fields[key], rtol=1e-5, atol=atol, msg=lambda m, key=key: f"{key}: {m}"
        )
    assert grads.keys() == trl_grads.keys() and grads
    for name, grad in trl_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    # and the model's own (unfused) loss over full logits agrees
    with torch.no_grad():
        plain = model(**batch, use_cache=False).loss
    assert plain.item() == pytest.approx(fields["loss"].item(), rel=1e-5)


def test_an_all_prompt_batch_is_a_differentiable_zero(setup):
    cfg, _, _, batches = setup
    model = _model(cfg)
    assert score_answer_tokens_only(model)
    ids = batches["padded"]["input_ids"][:2, :12]
    out = model(input_ids=ids, labels=torch.full_like(ids, -100), use_cache=False, fused_lm_head=True)
    assert out.loss.item() == 0.0
    out.loss.backward()  # no "does not require grad" error


def test_without_the_fused_head_or_with_a_scaled_head_trls_forward_stays(setup):
    cfg, _, _, _ = setup
    torch.manual_seed(0)
    bare = load_model(cfg.model, cfg.lora, "fp32", False)
    assert not score_answer_tokens_only(bare)  # no TRL head on this instance: nothing to replace
    scaled = _model(cfg)
    scaled.get_base_model().config.final_logit_softcapping = 30.0
    trl_forward = scaled.get_base_model().forward
    assert not score_answer_tokens_only(scaled)
    assert scaled.get_base_model().forward == trl_forward


def test_the_trainer_installs_it_on_a_cpu(setup, tmp_path):
    from medexp.training.trainer import build_trainer

    cfg, tokenizer, data, batches = setup
    model = _model(cfg)
    trainer = build_trainer(cfg, model, tokenizer, data, tmp_path, "fp32", [])
    forward = trainer.model.get_base_model().forward
    assert forward.__func__.__module__ == "medexp.training.answer_head"
    loss = trainer.compute_loss(trainer.model, dict(batches["padded"]))
    assert torch.isfinite(loss) and loss.item() > 0
