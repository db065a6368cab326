"""Batched generation on the embedded tiny model: the same greedy answers as one prompt at a time, one
`model.generate` call per batch on left-padded chat-template ids, the tokenizer's padding side restored, the
progress bar moved per answer, and the latency figures from single requests."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from medexp.evaluation.generation import Generation, generate, request_latencies, speed_metrics
from tests.helpers import TINY_MODEL, compose_config, config_error

SYSTEM = "You are a careful medical information assistant."
PROMPTS = [
    "Hi",
    "What is asthma?",
    "What are the symptoms of type 2 diabetes, and when should someone see a doctor about them?",
    "Fever?",
    "How is high blood pressure treated? " * 12,  # far longer than the rest: most of its batch is padding
    "What causes migraines?",
]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke run's config, tokenizer and model (base + fresh LoRA), loaded as training loads them."""
    from medexp.training.model import load_model, load_tokenizer

    cfg = compose_config(["experiment=smoke"], tmp_path_factory.mktemp("generation"))
    assert cfg.model.name_or_path == str(TINY_MODEL)
    return cfg, load_tokenizer(cfg.model), load_model(cfg.model, cfg.lora, "fp32", False)


def one_at_a_time(model, tokenizer, system, prompts, gen_cfg) -> list[tuple[str, int]]:
    """The answers as generate gave them before batching: each prompt alone, tokenized by the chat template."""
    import torch

    from medexp.data import chat_messages

    out = []
    for prompt in prompts:
        inputs = tokenizer.apply_chat_template(
            chat_messages(system, prompt), add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.no_grad():
            ids = model.generate(
                **inputs,
                max_new_tokens=int(gen_cfg.max_new_tokens),
                do_sample=False,
                repetition_penalty=float(gen_cfg.repetition_penalty),
                pad_token_id=tokenizer.pad_token_id,
            )
        new = ids[0, inputs["input_ids"].shape[1] :]
        out.append((tokenizer.decode(new, skip_special_tokens=True).strip(), int(new.numel())))
    return out


@pytest.mark.parametrize("stop_at_period", [False, True], ids=["max_new_tokens", "early_eos"])
def test_batches_answer_exactly_as_single_prompts(smoke, monkeypatch, stop_at_period):
    """Greedy answers and new-token counts equal the one-at-a-time ones for every batch size. With '.' as an
    extra eos the answers end at different lengths, so rows of a batch are padded after their eos."""
    cfg, tokenizer, model = smoke
    gen_cfg = cfg.eval.generation
    if stop_at_period:
        period = tokenizer(".", add_special_tokens=False)["input_ids"][-1]
        monkeypatch.setattr(model.generation_config, "eos_token_id", [tokenizer.eos_token_id, period])
    expected = one_at_a_time(model, tokenizer, SYSTEM, PROMPTS, gen_cfg)
    lengths = {n for _, n in expected}
    assert len(lengths) > 1 if stop_at_period else lengths == {gen_cfg.max_new_tokens}
    for batch_size in (1, 4, len(PROMPTS) + 10):
        got = generate(model, tokenizer, SYSTEM, PROMPTS, gen_cfg, batch_size=batch_size)
        assert [(g.text, g.new_tokens) for g in got] == expected, batch_size


def test_one_generate_call_per_left_padded_batch(smoke, monkeypatch):
    """Each batch is one call on the chat template's own ids (no special tokens added twice), left-padded; the
    progress callback hears each batch's size; the tokenizer pads right again afterwards, also after an error."""
    cfg, tokenizer, model = smoke
    calls = []
    real = model.generate

    def spy(**kwargs):
        calls.append({k: kwargs[k].clone() for k in ("input_ids", "attention_mask")})
        return real(**kwargs)

    monkeypatch.setattr(model, "generate", spy)
    prompts = [*PROMPTS, "Is a cold contagious?"]  # 7 prompts: batches of 3, 3 and 1
    systems = [*[SYSTEM, "Answer briefly."] * 3, SYSTEM]  # a system prompt per prompt
    advanced = []
    assert tokenizer.padding_side == "right"
    got = generate(
        model, tokenizer, systems, prompts, cfg.eval.generation, batch_size=3, advance=advanced.append
    )
    assert len(got) == 7 and advanced == [3, 3, 1] and len(calls) == 3
    assert tokenizer.padding_side == "right"

    from medexp.data import chat_messages

    rows = [(c["input_ids"][i], c["attention_mask"][i]) for c in calls for i in range(len(c["input_ids"]))]
    for (ids, mask), system, prompt in zip(rows, systems, prompts, strict=True):
        alone = tokenizer.apply_chat_template(chat_messages(system, prompt), add_generation_prompt=True)
        alone = alone["input_ids"] if hasattr(alone, "keys") else alone
        pad = int(len(mask) - mask.sum())
        assert mask[:pad].sum() == 0 and mask[pad:].all()  # padding on the left only
        assert ids[pad:].tolist() == list(alone)

    def broken(**kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(model, "generate", broken)
    with pytest.raises(RuntimeError):
        generate(model, tokenizer, SYSTEM, PROMPTS, cfg.eval.generation)
    assert tokenizer.padding_side == "right"


def test_latency_is_timed_per_request_and_throughput_per_batch(smoke):
    cfg, tokenizer, model = smoke
    gen_cfg = OmegaConf.merge(cfg.eval.generation, {"max_new_tokens": 4, "latency_samples": 2})
    seconds = request_latencies(model, tokenizer, SYSTEM, PROMPTS, gen_cfg)
    assert len(seconds) == 2 and all(s > 0 for s in seconds)
    gen_cfg.latency_samples = 0
    assert request_latencies(model, tokenizer, SYSTEM, PROMPTS, gen_cfg) == []

    # a batch of 4 answers in 2 s: each carries 0.5 s, so tokens_per_s is the batch's tokens / its wall time
    batched = [
        Generation("a", 10, 0.5),
        Generation("b", 30, 0.5),
        Generation("c", 20, 0.5),
        Generation("d", 0, 0.5),
    ]
    m = speed_metrics(batched, [1.0, 3.0])
    assert m["latency_p50_s"] == 2.0 and m["latency_p95_s"] == pytest.approx(2.9)
    assert m["tokens_per_s"] == pytest.approx(60 / 2.0) and m["peak_memory_mb"] > 0
    assert set(speed_metrics(batched, [])) == {"tokens_per_s", "peak_memory_mb"}  # latency_samples=0


@pytest.mark.parametrize("latency_samples", [0, 3])
def test_the_progress_bar_counts_every_answer(smoke, monkeypatch, latency_samples):
    """evaluate_model's one bar reaches its total exactly: batches move it by their size, and the latency
    requests are counted in it (for both models)."""
    from medexp.data import load_pairs, prepare_data
    from medexp.evaluation import runner

    cfg, tokenizer, model = smoke
    eval_cfg = OmegaConf.merge(
        cfg.eval,
        {"generation": {"batch_size": 3, "latency_samples": latency_samples, "max_new_tokens": 4,
                        "num_questions": 5, "semantic_similarity": False}},
    )  # fmt: skip
    bars = []

    class Recording(runner._Progress):
        def close(self):
            bars.append((self.bar.n, self.bar.total))
            super().close()

    monkeypatch.setattr(runner, "_Progress", Recording)
    data = prepare_data(load_pairs(cfg.dataset), cfg.dataset, tokenizer, cfg.seed)
    result = runner.evaluate_model(eval_cfg, model, tokenizer, data, {"dataset": cfg.dataset}, cfg.seed)
    assert bars == [((5 + latency_samples) * 2, (5 + latency_samples) * 2)]
    assert len([r for r in result.rows if r["suite"] == "validation"]) == 5
    latency = {"eval/latency_p50_s", "eval/base/latency_p95_s"}
    assert latency <= set(result.metrics) if latency_samples else not latency & set(result.metrics)
    assert result.metrics["eval/tokens_per_s"] > 0


def test_bad_generation_settings_are_one_paragraph(tmp_path):
    message = config_error(["experiment=smoke", "eval.generation.batch_size=0"], tmp_path)
    assert message.startswith("eval.generation.batch_size must be positive, got 0") and "\n" not in message
    assert "eval.generation.batch_size=16" in message
    message = config_error(["experiment=smoke", "eval.generation.latency_samples=-1"], tmp_path)
    assert message.startswith("eval.generation.latency_samples must be >= 0, got -1") and "\n" not in message
    assert config_error(["experiment=smoke", "eval.generation.latency_samples=0"], tmp_path) == ""


def test_generation_folds_the_adapter_into_the_weights_and_restores_them(smoke, monkeypatch):
    """generate merges a trained (non-zero) adapter for the generation and unmerges it after: the answers equal
    the unmerged model's, the weights come back (fp32: within rounding; bf16: exactly, from the kept copy), and
    a model answering as its base (adapters disabled) is left alone."""
    import copy

    import torch

    from medexp.evaluation import generation

    cfg, tokenizer, model = smoke
    model.eval()  # as generate sets it: no LoRA dropout in the unmerged answers either
    lora_b = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    trained = {n: p.detach().clone() for n, p in lora_b.items()}
    generator = torch.Generator().manual_seed(3)
    merges = []
    merge = model.merge_adapter
    monkeypatch.setattr(model, "merge_adapter", lambda *a, **k: merges.append(1) or merge(*a, **k))
    try:
        with torch.no_grad():
            for p in lora_b.values():
                p.copy_(0.05 * torch.randn(p.shape, generator=generator))
        weights = {n: p.detach().clone() for n, p in model.named_parameters() if "base_layer.weight" in n}
        # 12 tokens: this near-random tiny model meets a near-tie of two tokens in some 48-token answers, where
        # rounding picks either (the logits agree to 1e-5, checked below)
        gen_cfg = OmegaConf.merge(cfg.eval.generation, {"max_new_tokens": 12})
        unmerged = one_at_a_time(model, tokenizer, SYSTEM, PROMPTS[:3], gen_cfg)
        folded = generate(model, tokenizer, SYSTEM, PROMPTS[:3], gen_cfg, batch_size=1)
        assert merges == [1]
        assert [(g.text, g.new_tokens) for g in folded] == unmerged
        ids = torch.tensor([tokenizer(PROMPTS[2])["input_ids"]])
        with torch.no_grad():
            plain = model(input_ids=ids).logits
            with generation.folded(model):
                assert torch.allclose(model(input_ids=ids).logits, plain, atol=1e-4)
        after = dict(model.named_parameters())
        assert all(torch.allclose(after[n], w, atol=1e-6) for n, w in weights.items())
        assert not any(getattr(m, "merged", False) for m in model.modules())  # unmerged after
        with model.disable_adapter():
            assert generation._foldable(model) == []  # the base answers: nothing to fold
        monkeypatch.undo()  # the copy gets its own merge_adapter, not the spy bound to `model`
        half = copy.deepcopy(model).to(torch.bfloat16)
        kept = {n: p.detach().clone() for n, p in half.named_parameters() if "base_layer.weight" in n}
        with generation.folded(half):
            moved = dict(half.named_parameters())
            assert any(not torch.equal(moved[n], w) for n, w in kept.items())  # merged: the weights moved
        assert all(torch.equal(dict(half.named_parameters())[n], w) for n, w in kept.items())
    finally:
        with torch.no_grad():
            for n, p in lora_b.items():
                p.copy_(trained[n])
