"""LoRA and training variants peft and TRL provide (DoRA, rsLoRA, PiSSA / OLoRA, Gaussian init, trained whole
modules, NEFTune), on the tiny model: each reaches peft, and the base model a run compares against stays the base."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers import compose_config

PROMPT = "What are the symptoms of diabetes?"


def _models(overrides: list[str], tmp_path: Path):
    from transformers import AutoModelForCausalLM

    from medexp.training.model import load_model, load_tokenizer

    cfg = compose_config(["model=tiny", *overrides], tmp_path)
    tokenizer = load_tokenizer(cfg.model)
    torch.manual_seed(0)
    model = load_model(cfg.model, cfg.lora, "fp32", False).eval()
    base = AutoModelForCausalLM.from_pretrained(cfg.model.name_or_path).eval()
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    return cfg, model, base, ids


def _train_a_little(model) -> None:
    """Stand-in for training: move every trainable tensor."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.02 * torch.randn(p.shape, generator=gen))


@torch.no_grad()
def _gap(a, b) -> float:
    return float((a - b).abs().max())


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_pissa_and_olora_answer_as_the_base_and_save_a_lora_for_the_original_base(init, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from medexp.evaluation.generation import as_base
    from medexp.training.adapter_init import mutates_base, save_adapter, trained_weights_dir

    cfg, model, base, ids = _models([f"lora.init={init}"], tmp_path)
    assert mutates_base(model)
    # the base layers hold a residual: switching the adapters off is not the base model
    with torch.no_grad(), model.disable_adapter():
        assert _gap(model(ids).logits, base(ids).logits) > 1e-2
    _train_a_little(model)
    with torch.no_grad():
        trained = model(ids).logits
        assert _gap(trained, base(ids).logits) > 1e-2
        with as_base(model):
            assert _gap(model(ids).logits, base(ids).logits) < 1e-4
        assert _gap(model(ids).logits, trained) == 0  # the trained weights are back

    adapter_dir = tmp_path / "run" / "adapter"
    save_adapter(model, adapter_dir)
    saved = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert (
        saved["r"] == 2 * cfg.lora.r and saved["init_lora_weights"] is True
    )  # an ordinary LoRA: B A - B0 A0
    unconverted = trained_weights_dir(model, adapter_dir)
    assert unconverted == tmp_path / "run" / "adapter_unconverted"
    assert json.loads((unconverted / "adapter_config.json").read_text())["r"] == cfg.lora.r
    fresh_base = AutoModelForCausalLM.from_pretrained(cfg.model.name_or_path)
    loaded = PeftModel.from_pretrained(fresh_base, str(adapter_dir)).eval()
    with torch.no_grad():
        assert _gap(loaded(ids).logits, trained) < 1e-4  # on the original base: the trained model

    # a resumed run re-creates the same residual (same seed) and loads the weights as trained
    from medexp.training.resume import load_adapter_weights

    _, again, _, _ = _models([f"lora.init={init}"], tmp_path)
    load_adapter_weights(again, trained_weights_dir(again, adapter_dir))
    with torch.no_grad():
        assert _gap(again(ids).logits, trained) < 1e-5


@pytest.mark.parametrize(
    ("override", "peft_field", "value", "trainable"),
    [
        ("lora.use_dora=true", "use_dora", True, "lora_magnitude_vector"),
        ("lora.use_rslora=true", "use_rslora", True, "lora_A"),
        ("lora.init=gaussian", "init_lora_weights", "gaussian", "lora_A"),
        ("lora.train_modules=[embed_tokens]", "modules_to_save", ["embed_tokens"], "modules_to_save"),
        ("lora.train_modules=[norm]", "modules_to_save", ["norm"], "input_layernorm.modules_to_save"),
    ],
)
def test_variants_reach_peft_and_start_from_the_base(override, peft_field, value, trainable, tmp_path):
    from medexp.evaluation.generation import as_base
    from medexp.training.adapter_init import mutates_base

    _, model, base, ids = _models([override], tmp_path)
    got = getattr(model.peft_config["default"], peft_field)
    assert set(value) <= set(got) if isinstance(value, list) else got == value
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any(trainable in n for n in names), names[:5]
    assert not mutates_base(model)
    with torch.no_grad():
        assert _gap(model(ids).logits, base(ids).logits) < 1e-5  # a no-op at the start: eval/base is the base
    _train_a_little(model)
    with torch.no_grad(), as_base(model):
        assert _gap(model(ids).logits, base(ids).logits) < 1e-5


def test_rslora_scales_by_the_square_root_of_the_rank(tmp_path):
    _, plain, _, _ = _models(["lora.r=16", "lora.alpha=32"], tmp_path)
    _, rs, _, _ = _models(["lora.r=16", "lora.alpha=32", "lora.use_rslora=true"], tmp_path)
    q_plain = plain.base_model.model.model.layers[0].self_attn.q_proj
    q_rs = rs.base_model.model.model.layers[0].self_attn.q_proj
    assert q_plain.scaling["default"] == pytest.approx(32 / 16)
    assert q_rs.scaling["default"] == pytest.approx(32 / 16**0.5)


def test_a_trained_embedding_copy_stays_tied_to_the_output_head(tmp_path):
    _, model, _, _ = _models(["lora.train_modules=[embed_tokens]"], tmp_path)
    inner = model.base_model.model
    _train_a_little(model)
    embedding = inner.get_input_embeddings()
    head = inner.get_output_embeddings()
    assert torch.equal(embedding.weight, head.weight)  # the head uses the trained copy, as the base ties them


RUN = [
    "experiment=smoke",
    "eval=none",
    "eval.before_training=true",
    "eval.metrics=[loss]",
    "tracking=none",
    "trainer.max_steps=2",
    "trainer.eval_steps=2",
]


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    """Two smoke steps with the default LoRA: what the variants are compared with."""
    from medexp.train import train

    return train(compose_config(RUN, tmp_path_factory.mktemp("plain")))


def test_a_pissa_run_trains_and_its_adapter_is_the_trained_model(plain_run, tmp_path):
    """Through medexp's own training: PiSSA and rsLoRA together; the saved adapter/, loaded on the original
    base, gives the trained model's outputs; eval/base/loss is the base model's."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from medexp.train import train

    cfg = compose_config([*RUN, "lora.init=pissa", "lora.use_rslora=true"], tmp_path)
    result = train(cfg)
    assert result.metrics["eval/base/loss"] == pytest.approx(plain_run.metrics["eval/base/loss"], abs=1e-4)
    assert result.metrics["eval_loss"] != pytest.approx(plain_run.metrics["eval_loss"], abs=1e-4)
    assert (result.output_dir / "adapter_unconverted").is_dir()

    tokenizer_ids = torch.tensor([[1, 5, 9, 42, 7, 3]])
    model = result.model.eval()
    base = AutoModelForCausalLM.from_pretrained(cfg.model.name_or_path)
    loaded = PeftModel.from_pretrained(base, str(result.adapter_dir)).eval()
    with torch.no_grad():
        assert _gap(loaded(tokenizer_ids).logits, model(tokenizer_ids).logits) < 1e-4


def test_neftune_noise_is_on_in_training_only(plain_run, tmp_path):
    """trainer.neftune_noise_alpha reaches the trainer, which adds noise to the input embeddings while training."""
    from medexp.train import train

    noisy = train(compose_config([*RUN, "trainer.neftune_noise_alpha=5"], tmp_path))
    # evaluation of the untouched model sees no noise; training with noise ends somewhere else
    assert noisy.metrics["eval/base/loss"] == pytest.approx(plain_run.metrics["eval/base/loss"], abs=1e-6)
    assert noisy.metrics["eval_loss"] != pytest.approx(plain_run.metrics["eval_loss"], abs=1e-5)


def test_variants_are_searchable_in_a_sweep():
    from optuna.distributions import CategoricalDistribution

    from medexp.sweep.search_space import search_space

    space, _ = search_space(
        [
            "lora.use_dora=choice(true,false)",
            "lora.init=choice(default,pissa,olora)",
            "trainer.neftune_noise_alpha=choice(5,10)",
        ]
    )
    assert space["lora.init"] == CategoricalDistribution(["default", "pissa", "olora"])
    assert set(space) == {"lora.use_dora", "lora.init", "trainer.neftune_noise_alpha"}
