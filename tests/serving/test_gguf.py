"""GGUF export checked in llama.cpp itself (llama-cpp-python, the `gguf` extra; .ci/run installs it and unpacks
llama.cpp's converter into ~/.cache/medexp): f16 answers the same greedy tokens as transformers, q8_0 agrees on
the top token at most positions, base GGUF + GGUF LoRA equals the merged GGUF. Also the Ollama Modelfile's
TEMPLATE against the Hugging Face chat template, and what vLLM and llama.cpp refuse in an adapter."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from medexp.config import UserError
from medexp.serving import gguf, modelfile, vllm_check
from medexp.serving.gotemplate import render

QUESTIONS = [
    "What causes epilepsy ?",
    "How to prevent glaucoma ?",
    "What is anemia?",
    "Who is at risk for asthma?",
]
NEW_TOKENS = 16


def _export_cfg(cfg, result, out: Path, **overrides) -> OmegaConf:
    gguf_node = {
        "quant": "f16",
        "lora_quant": "f16",
        "converter_dir": None,
        "pre_tokenizer": None,
        "modelfile": True,
    }
    node = {"source": str(result.output_dir), "output_dir": str(out), "format": "gguf", "gguf": gguf_node,
            "merge": True, "register": False, "registered_name": None, "push_to_hub": False, "hub_repo": None,
            "hub_private": True, "tracking": {"uri": cfg.tracking.uri}}  # fmt: skip
    return OmegaConf.merge(OmegaConf.create(node), OmegaConf.create(overrides))


@pytest.fixture(scope="module")
def llama_cpp():
    return pytest.importorskip(
        "llama_cpp", reason="llama-cpp-python is not installed: pip install 'medexp[gguf]' (.ci/run does)"
    )


@pytest.fixture(scope="module")
def exported(trained, llama_cpp):
    """The trained tiny run exported as merged/ + gguf/model-f16.gguf + Modelfile."""
    from medexp.serving.publish import export

    cfg, result, tmp = trained
    return export(_export_cfg(cfg, result, tmp / "gguf_export")), trained


def _prompts(tokenizer, system: str) -> list[list[int]]:
    chats = [[{"role": "system", "content": system}, {"role": "user", "content": q}] for q in QUESTIONS]
    return [
        tokenizer.apply_chat_template(c, add_generation_prompt=True, return_dict=True)["input_ids"]
        for c in chats
    ]


def _llama(llama_cpp, path: Path, **kwargs):
    """The GGUF in llama.cpp, keeping every position's logits (without logits_all, 0.3.x keeps none in .scores)."""
    return llama_cpp.Llama(
        model_path=str(path),
        n_ctx=512,
        n_threads=1,
        n_threads_batch=1,
        verbose=False,
        seed=0,
        logits_all=True,
        **kwargs,
    )


def _llama_greedy(llm, ids: list[int], eos: int) -> list[int]:
    import numpy as np

    llm.reset()
    llm.eval(ids)
    out: list[int] = []
    while len(out) < NEW_TOKENS:
        out.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        if out[-1] == eos:
            break
        llm.eval([out[-1]])
    return out


def _hf_greedy(model, ids: list[int], eos: int) -> list[int]:
    with torch.no_grad():
        new = model.generate(
            torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=eos
        )
    return new[0, len(ids) :].tolist()


def test_f16_gguf_answers_as_transformers_does(exported, llama_cpp):
    """The same greedy tokens for every prompt; llama.cpp tokenizes the rendered chat as transformers does; the
    Modelfile points at the GGUF with the run's system prompt."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, (cfg, _, _) = exported
    merged = out / "merged"
    tokenizer = AutoTokenizer.from_pretrained(merged)
    model = AutoModelForCausalLM.from_pretrained(merged).eval()
    llm = _llama(llama_cpp, out / "gguf" / "model-f16.gguf")
    system = str(cfg.dataset.system_prompt).strip()
    for ids in _prompts(tokenizer, system):
        text = tokenizer.decode(ids)
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids
        assert _llama_greedy(llm, ids, tokenizer.eos_token_id) == _hf_greedy(
            model, ids, tokenizer.eos_token_id
        )
    written = (out / "gguf" / "Modelfile").read_text()
    assert "FROM ./model-f16.gguf" in written and f'SYSTEM """{system}"""' in written
    assert 'PARAMETER stop "<|im_end|>"' in written and "TEMPLATE" in written
    assert "vllm serve" in (out / "README.md").read_text()


def _teacher_forced_top(llm, ids: list[int]):
    """llama.cpp's argmax at every position of ids, in one pass (logits_all)."""
    llm.reset()
    llm.eval(ids)
    return llm.scores[: len(ids)].argmax(-1)


def _sample_texts(tokenizer, system: str) -> list[list[int]]:
    """Chats with the sample's answers, as the model was trained on: every position's next token is scored."""
    from tests.helpers import SAMPLE

    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()[:6]]
    chats = [
        [{"role": "system", "content": system}, {"role": "user", "content": r["Question"]},
         {"role": "assistant", "content": r["Answer"]}]
        for r in rows
    ]  # fmt: skip
    return [tokenizer.apply_chat_template(c, return_dict=True)["input_ids"] for c in chats]


@pytest.mark.slow
def test_q8_0_agrees_on_the_top_token_at_most_positions(exported, llama_cpp):
    """q8_0 against transformers (fp32), teacher-forced over six trained-on chats (1224 positions): measured
    1214/1224 = 99.2% on the tiny model trained 20 steps; bound 97%, since 8-bit blocks may flip near-ties."""
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, (cfg, _, _) = exported
    q8 = gguf.convert_model(OmegaConf.create({"converter_dir": None, "pre_tokenizer": None}), out / "merged",
                            out / "gguf" / "model-q8_0.gguf", "q8_0")  # fmt: skip
    types = {t.tensor_type.name for t in GGUFReader(q8).tensors}
    assert "Q8_0" in types, types
    tokenizer = AutoTokenizer.from_pretrained(out / "merged")
    model = AutoModelForCausalLM.from_pretrained(out / "merged").eval()
    llm = _llama(llama_cpp, q8)
    agree = total = 0
    for ids in _sample_texts(tokenizer, str(cfg.dataset.system_prompt).strip()):
        with torch.no_grad():
            hf = model(torch.tensor([ids])).logits[0].argmax(-1).numpy()
        agree += int((_teacher_forced_top(llm, ids) == hf).sum())
        total += len(ids)
    print(f"q8_0 top-token agreement: {agree}/{total} = {agree / total:.4f}")
    assert total > 300 and agree / total >= 0.97


@pytest.mark.slow
def test_base_gguf_with_gguf_lora_equals_the_merged_gguf(exported, llama_cpp, tmp_path):
    """format=gguf_lora's adapter on the base model's GGUF (llama.cpp's --lora) gives the merged GGUF's logits
    and greedy tokens; its Modelfile names the base and the ADAPTER."""
    import numpy as np
    from transformers import AutoTokenizer

    from medexp.serving.publish import export

    out, (cfg, result, _) = exported
    lora_out = export(_export_cfg(cfg, result, tmp_path / "lora", format="gguf_lora", merge=False))
    adapter = lora_out / "gguf" / "adapter-f16.gguf"
    assert "ADAPTER ./adapter-f16.gguf" in (lora_out / "gguf" / "Modelfile").read_text()
    base = gguf.convert_model(OmegaConf.create({"converter_dir": None, "pre_tokenizer": None}),
                              Path(cfg.model.name_or_path), tmp_path / "base-f16.gguf", "f16")  # fmt: skip
    merged_llm = _llama(llama_cpp, out / "gguf" / "model-f16.gguf")
    lora_llm = _llama(llama_cpp, base, lora_path=str(adapter))
    plain_llm = _llama(llama_cpp, base)
    tokenizer = AutoTokenizer.from_pretrained(out / "merged")
    for ids in _prompts(tokenizer, str(cfg.dataset.system_prompt).strip()):
        merged_llm.reset(), lora_llm.reset(), plain_llm.reset()
        merged_llm.eval(ids), lora_llm.eval(ids), plain_llm.eval(ids)
        a, b, c = (m.scores[: len(ids)] for m in (merged_llm, lora_llm, plain_llm))
        # measured: at most 0.018 on logits up to 13.4 (f16 weights: merged before rounding vs applied after)
        assert np.abs(a - b).max() < 0.01 * np.abs(a).max()
        assert np.abs(a - c).max() > 10 * np.abs(a - b).max()  # and the adapter does change the base
        eos = tokenizer.eos_token_id
        assert _llama_greedy(lora_llm, ids, eos) == _llama_greedy(merged_llm, ids, eos)


@pytest.mark.slow
def test_a_k_quant_comes_from_llama_cpps_quantizer(exported, llama_cpp, tmp_path):
    """gguf.quant=q4_k_m: written by llama_model_quantize from the 16-bit GGUF, loads and answers."""
    from gguf import GGUFReader

    out, _ = exported
    cfg = OmegaConf.create({"gguf": {"quant": "q4_k_m", "converter_dir": None, "pre_tokenizer": None}})
    written = gguf.export_gguf(cfg, out / "merged", tmp_path)
    assert written.name == "model-q4_k_m.gguf" and not (tmp_path / "model-16bit.gguf").exists()
    types = {t.tensor_type.name for t in GGUFReader(written).tensors}
    assert types & {"Q4_K", "Q5_0", "Q6_K"}, (
        types
    )  # rows 128 wide fall back from Q4_K, as llama-quantize does
    assert len(_llama(llama_cpp, written).tokenize(b"What is anemia?")) > 2


# --- the Modelfile's TEMPLATE, rendered as Ollama renders it, against the chat template ---------------------

LLAMA3 = (
    "{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] | trim "
    "+ '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)
LLAMA2 = (  # the system prompt inside the first user turn: not per-role pieces, so no TEMPLATE is written
    "{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] %}{% set msgs = messages[1:] %}"
    "{% else %}{% set sys = '' %}{% set msgs = messages %}{% endif %}{% for m in msgs %}{% if m['role'] == 'user' %}"
    "{{ '[INST] ' + (('<<SYS>>\n' + sys + '\n<</SYS>>\n\n') if loop.first else '') + m['content'] + ' [/INST]' }}"
    "{% else %}{{ ' ' + m['content'] + ' </s>' }}{% endif %}{% endfor %}"
)


def _ollama_prompt(text: str, turns: list[dict[str, str]]) -> str:
    """What Ollama sends the model: the Modelfile's SYSTEM as the first message (routes.go prepends it where a
    chat has none), rendered with its TEMPLATE."""
    template = re.search(r'^TEMPLATE """(.*?)"""$', text, re.S | re.M).group(1)
    system = re.search(r'^SYSTEM """(.*?)"""$', text, re.S | re.M).group(1)
    return render(template, [{"role": "system", "content": system}, *turns])


@pytest.mark.parametrize("template", [None, LLAMA3], ids=["run's own", "llama-3 style"])
def test_modelfile_template_prompts_as_the_chat_template(tiny_tokenizer, template):
    import copy

    tokenizer = copy.deepcopy(tiny_tokenizer)
    if template:
        tokenizer.chat_template = template
    system = "You are a careful medical assistant.\nAnswer briefly; {{ braces }} stay literal."
    text = modelfile.modelfile(tokenizer, "./model-f16.gguf", system, {"temperature": 0.7})
    conversations = [
        [{"role": "user", "content": "What is anemia?"}],
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
         {"role": "user", "content": "What causes a fever {{ .Content }}?"}],
    ]  # fmt: skip
    for turns in conversations:
        expected = tokenizer.apply_chat_template(
            [{"role": "system", "content": system}, *turns], tokenize=False, add_generation_prompt=True
        )
        assert _ollama_prompt(text, turns) == expected


def test_a_chat_template_without_per_role_pieces_gets_no_template(tiny_tokenizer, caplog):
    import copy

    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.chat_template = LLAMA2
    text = modelfile.modelfile(tokenizer, "./m.gguf", "Be careful.", {})
    assert "TEMPLATE" not in text and 'SYSTEM """Be careful."""' in text
    assert "Write TEMPLATE by hand" in caplog.text


# --- what llama.cpp's LoRA converter and vLLM refuse ---------------------------------------------------------


def test_gguf_lora_refuses_a_dora_adapter_in_one_paragraph(trained, tmp_path):
    from medexp.serving.publish import export

    cfg, result, _ = trained
    run = shutil.copytree(result.output_dir, tmp_path / "run")
    config_path = run / "adapter" / "adapter_config.json"
    config_path.write_text(json.dumps(json.loads(config_path.read_text()) | {"use_dora": True}))
    result = type("R", (), {"output_dir": run})
    with pytest.raises(UserError, match=r"DoRA.*format=gguf"):
        export(_export_cfg(cfg, result, tmp_path / "out", format="gguf_lora", merge=False))
    assert not (tmp_path / "out" / "gguf").exists()


def test_vllm_readiness_is_read_off_the_adapter_config():
    plain = {"r": 8, "target_modules": ["q_proj", "v_proj", "down_proj"], "bias": "none"}
    assert vllm_check.advice(plain) is None
    assert (
        vllm_check.serve_command("B", "n", "./adapter", plain)
        == "vllm serve B --enable-lora --lora-modules n=./adapter"
    )
    wide = plain | {"r": 48}
    assert "--max-lora-rank 64" in vllm_check.advice(wide)
    assert vllm_check.serve_command("B", "n", "./a", wide).endswith("--max-lora-rank 64")
    for change, named in [({"modules_to_save": ["embed_tokens"]}, "embed_tokens"), ({"use_dora": True}, "DoRA"),
                          ({"target_modules": ["q_proj", "lm_head"]}, "lm_head"), ({"bias": "all"}, "bias"),
                          ({"init_lora_weights": "pissa"}, "pissa")]:  # fmt: skip
        advice = vllm_check.advice(plain | change)
        assert named in advice and "merge=true" in advice, advice


def test_one_llama_cpp_python_release_everywhere():
    """The converter .ci/run unpacks, the extra's pin and medexp's default cache path name one release."""
    root = Path(__file__).parents[2]
    assert f'"llama-cpp-python=={gguf.LLAMA_CPP_PYTHON}"' in (root / "pyproject.toml").read_text()
    assert f"LCP={gguf.LLAMA_CPP_PYTHON}\n" in (root / ".ci" / "run").read_text()
