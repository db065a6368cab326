"""GGUF parity on a real model: a Hugging Face model folder converted by llama.cpp's converter (medexp.serving.gguf)
at f16 and q8_0, run in llama.cpp (llama-cpp-python), against transformers in fp32: greedy tokens for chat
prompts, and the top token at every position of trained-on chats (teacher-forced). The tests check the same on
the tiny model (tests/serving/test_gguf.py); this measures it where rounding has 30 layers to add up.

    flock /tmp/medexp-heavy.lock python benchmarks/gguf_parity.py /work/models/smollm2-135m-instruct

Writes benchmarks/gguf_parity.json.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.questions import QUESTIONS  # noqa: E402 (after ROOT joins sys.path)

NEW_TOKENS = 32


def main(model_dir: Path) -> None:
    import llama_cpp
    import numpy as np
    import torch
    from omegaconf import OmegaConf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medexp.serving import gguf
    from tests.helpers import SAMPLE

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    system = "You are a careful medical information assistant."
    chats = [[{"role": "system", "content": system}, {"role": "user", "content": q}] for q in QUESTIONS]
    prompts = [
        tokenizer.apply_chat_template(c, add_generation_prompt=True, return_dict=True)["input_ids"]
        for c in chats
    ]
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()[:6]]
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "system", "content": system}, {"role": "user", "content": r["Question"]},
             {"role": "assistant", "content": r["Answer"]}], return_dict=True)["input_ids"]
        for r in rows
    ]  # fmt: skip
    hf_greedy = []
    with torch.no_grad():
        for ids in prompts:
            new = model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False)
            hf_greedy.append(new[0, len(ids) :].tolist())
        hf_top = [model(torch.tensor([ids])).logits[0].argmax(-1).numpy() for ids in texts]
    results: dict = {"model": str(model_dir), "new_tokens": NEW_TOKENS, "load_average": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        for quant in ("f16", "q8_0"):
            start = time.perf_counter()
            path = gguf.convert_model(OmegaConf.create({"converter_dir": None, "pre_tokenizer": None}), model_dir,
                                      Path(tmp) / f"m-{quant}.gguf", quant)  # fmt: skip
            seconds = time.perf_counter() - start
            llm = llama_cpp.Llama(model_path=str(path), n_ctx=1024, n_threads=2, n_threads_batch=2,
                                  logits_all=True, verbose=False)  # fmt: skip
            same_prompts, same_tokens = 0, 0
            for ids, hf in zip(prompts, hf_greedy, strict=True):
                llm.reset()
                llm.eval(ids)
                ours = []
                while len(ours) < len(hf):
                    ours.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
                    llm.eval([ours[-1]])
                same_prompts += ours == hf
                same_tokens += next(
                    (i for i, (a, b) in enumerate(zip(ours, hf, strict=True)) if a != b), len(hf)
                )
            agree = total = 0
            for ids, hf in zip(texts, hf_top, strict=True):
                llm.reset()
                llm.eval(ids)
                agree += int((llm.scores[: len(ids)].argmax(-1) == hf).sum())
                total += len(ids)
            results[quant] = {
                "convert_seconds": round(seconds, 1),
                "size_mb": round(path.stat().st_size / 2**20, 1),
                "greedy_identical_prompts": f"{same_prompts}/{len(prompts)}",
                "greedy_tokens_before_first_difference": same_tokens,
                "top_token_agreement": f"{agree}/{total} = {agree / total:.4f}",
            }
            llm.close()
            print(quant, results[quant], flush=True)
    (ROOT / "benchmarks" / "gguf_parity.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/work/models/smollm2-135m-instruct"))
