"""Several adapters behind one `python -m medexp.serve`: the base loaded once, each adapter under its own name,
the request's `model` picking one, a batch mixing adapters (peft's `adapter_names`), and one adapter folded into
the weights for generation. The second adapter is the session's trained run with its LoRA B matrices moved by a
seeded random amount (no second training), saved as a run directory on the same tiny base."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.serving.test_openai_surface import _post
from tests.serving.test_use import _start_server, _stop_server

QUESTION = [{"role": "user", "content": "What are the symptoms of asthma?"}]
TOKENS = 10


def _other_run(trained) -> Path:
    """A run directory (config.yaml + adapter/, no run.json) holding another adapter on the same base."""
    from safetensors.torch import load_file, save_file

    _, result, tmp = trained
    other = tmp / "other_run"
    if other.exists():
        return other
    other.mkdir()
    shutil.copy(Path(result.output_dir) / "config.yaml", other / "config.yaml")
    shutil.copytree(Path(result.output_dir) / "adapter", other / "adapter")
    weights = other / "adapter" / "adapter_model.safetensors"
    tensors = load_file(weights)
    generator = torch.Generator().manual_seed(7)
    for key in [k for k in tensors if "lora_B" in k]:
        tensors[key] = tensors[key] + 0.05 * torch.randn(tensors[key].shape, generator=generator)
    save_file(tensors, weights)
    return other


def _served(trained, source, merge=None):
    from medexp.serving.adapters import load_served

    cfg, _, tmp = trained
    settings = {"source": source, "tracking": {"uri": cfg.tracking.uri}, "paths": {"output_dir": str(tmp / "o")},
                "model_name": None, "merge": merge, "precision": "fp32"}  # fmt: skip
    return load_served(OmegaConf.create(settings))


def _greedy(served, name: str) -> tuple[list[int], list[float]]:
    """The tokens and log-probabilities the server's engine decodes for `name`, greedy, one request alone."""
    from medexp.serving.engine import Decoding, Engine

    assistant = served.assistants[name]
    engine = Engine(assistant.model, assistant.tokenizer)
    decoding = Decoding(TOKENS, temperature=0, adapter=assistant.adapter)
    steps = list(engine.generate(assistant.prompt_ids(QUESTION), decoding, engine.sampler(0)))
    return [s.token for s in steps], [s.logprob for s in steps]


@pytest.fixture(scope="module")
def pair(trained):
    """(source A, source B, their served names, the two served together in-process)."""
    _, result, _ = trained
    other = _other_run(trained)
    served = _served(trained, [result.run_id, str(other)])
    return result.run_id, str(other), [f"medexp-{result.run_id}", "medexp-other_run"], served


def test_one_adapter_is_merged_for_generation_and_answers_as_unmerged(trained):
    """The default for one source: the adapter folded into the weights; its answers equal the unmerged model's."""
    _, result, _ = trained
    merged, unmerged = _served(trained, result.run_id), _served(trained, result.run_id, merge=False)
    assert merged.merged and not unmerged.merged
    assert "merged into the weights" in merged.summary() and "merge=false" in unmerged.summary()
    assert not hasattr(merged.default.model, "peft_config")  # a plain transformers model: no LoRA matmuls
    assert list(merged.assistants) == [f"medexp-{result.run_id}"]  # no base to serve: it was folded away
    assert [a["parent"] for a in unmerged.listing()] == [unmerged.base, None]  # unmerged, the base serves too
    name = f"medexp-{result.run_id}"
    (t1, l1), (t2, l2) = _greedy(merged, name), _greedy(unmerged, name)
    assert t1 == t2 and torch.allclose(torch.tensor(l1), torch.tensor(l2), atol=1e-4)
    assert _greedy(unmerged, unmerged.base) != (t2, l2)  # and the base answers otherwise


def test_a_batch_mixing_adapters_answers_each_row_as_alone(pair):
    """One forward pass per token over rows of adapter A, adapter B and the base (peft's adapter_names) gives
    each row the greedy answer its model gives alone."""
    *_, names, served = pair
    rows = [*names, served.base]
    assistants = [served.assistants[n] for n in rows]
    model, prompt = served.default.model, served.default.prompt_ids(QUESTION)
    ids, past, tokens = torch.tensor([prompt] * len(rows)), None, [[] for _ in rows]
    with torch.no_grad():
        for _ in range(TOKENS):
            out = model(input_ids=ids, past_key_values=past, use_cache=True,
                        adapter_names=[a.adapter for a in assistants])  # fmt: skip
            past, ids = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
            for row, token in zip(tokens, ids[:, 0].tolist(), strict=True):
                row.append(token)
    alone = [_greedy(served, n)[0] for n in rows]
    assert [row[: len(a)] for row, a in zip(tokens, alone, strict=True)] == alone
    assert len({tuple(a) for a in alone}) == 3  # three models, three answers: the rows did not share one


def test_the_server_lists_every_adapter_and_routes_by_model(trained, pair):
    """`source=[A,B]`: /v1/models lists both with the base as parent, and the base; `model` picks the adapter,
    whose answer equals serving it alone; an unknown model is a 404 listing what is served."""
    a, b, names, served = pair
    proc, url = _start_server(
        trained, "limits.max_tokens=64", "limits.default_max_tokens=16", source=f"[{a},{b}]"
    )
    try:
        with urllib.request.urlopen(f"{url}/v1/models", timeout=10) as r:
            listed = {m["id"]: m for m in json.load(r)["data"]}
        answers = {}
        for name in [*names, served.base]:
            status, body = _post(url, "/v1/chat/completions", {"model": name, "messages": QUESTION,
                                 "temperature": 0, "max_tokens": TOKENS, "logprobs": True})  # fmt: skip
            assert status == 200 and body["model"] == name, body
            answers[name] = [t["logprob"] for t in body["choices"][0]["logprobs"]["content"]]
        status, refused = _post(url, "/v1/chat/completions", {"model": "nope", "messages": QUESTION})
    finally:
        _stop_server(proc)
    assert listed.keys() == {*names, served.base}
    assert [listed[n]["parent"] for n in names] == [served.base] * 2 and listed[served.base]["parent"] is None
    for source, name in zip([a, b], names, strict=True):
        expected = _greedy(_served(trained, source), name)[1]  # served alone: merged into the weights
        n = min(len(expected), len(answers[name]))
        assert n >= TOKENS - 1 and torch.allclose(
            torch.tensor(answers[name][:n]), torch.tensor(expected[:n]), atol=1e-4
        )
    assert answers[names[0]] != answers[names[1]]
    assert status == 404 and all(n in refused["error"]["message"] for n in names), refused
