"""What an unmerged LoRA costs at generation, and what folding it into the weights wins back (issue 27, item 5).

    flock /tmp/medexp-heavy.lock python benchmarks/adapter_merge.py          # SmolLM2-135M-Instruct, CPU, ~4 min
    python benchmarks/adapter_merge.py --model /path/to/model --tokens 64 --repeats 6 --prompts 4

A LoRA adapter (r=16, alpha=32, on all seven projections of every layer, A and B random so that it changes the
answers) is made with peft on the real model, and the same prompts are answered, greedy, by:

- evaluation's `medexp.evaluation.generation.generate` (HF generate; batch 1 and batch 4): the base model (adapter
  disabled), the adapter unmerged (folding switched off, as evaluation generated before), and folded (what
  `generate` does now: merge, generate, unmerge);
- serving's `medexp.serving.engine.Engine` (token by token over the KV cache, one request): the base, the adapter
  unmerged, the adapter unmerged through peft's mixed-batch `adapter_names` (the path of a server with several
  adapters), and merged (a server with one adapter).

Variants run interleaved (A, B, C, C, B, A, ...) so the machine's load hits each alike; each figure is the median
over the repeats, with the load average beside it. Writes benchmarks/adapter_merge.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
MODEL = Path("/work/models/smollm2-135m-instruct")
SYSTEM = "You are a careful medical information assistant."
PROMPTS = [
    "What are the symptoms of asthma?",
    "How is type 2 diabetes treated?",
    "What causes migraines, and when should someone see a doctor?",
    "What is anemia?",
]
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def adapted(path: Path):
    """(the model with a random r=16 LoRA on every projection, in eval mode; its tokenizer)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=PROJECTIONS, init_lora_weights=False)
    model = get_peft_model(base, lora)
    with torch.no_grad():  # random B scaled down: the answers change, and stay words
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.mul_(0.01)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if (
        tokenizer.pad_token is None
    ):  # batches are padded: the end-of-sequence token, as medexp's training sets it
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer


def evaluation_variants(model, tokenizer, tokens: int, batch: int):
    """name -> a call answering PROMPTS with evaluation's generate, returning (new tokens, seconds)."""
    from medexp.evaluation import generation

    gen_cfg = OmegaConf.create({"max_new_tokens": tokens, "repetition_penalty": 1.0, "batch_size": batch})

    def run(context):
        def call():
            with context():
                start = time.perf_counter()
                out = generation.generate(model, tokenizer, SYSTEM, PROMPTS, gen_cfg)
                return sum(g.new_tokens for g in out), time.perf_counter() - start, [g.text for g in out]

        return call

    @contextlib.contextmanager
    def unfolded():
        keep = generation._foldable
        generation._foldable = lambda m: []  # as evaluation generated before folding
        try:
            yield
        finally:
            generation._foldable = keep

    return {
        "base": run(model.disable_adapter),
        "unmerged": run(unfolded),
        "folded": run(contextlib.nullcontext),
    }


def serving_variants(model, tokenizer, tokens: int):
    """name -> a call answering PROMPTS one by one with the serving engine, returning (new tokens, seconds)."""
    from medexp.serving.engine import Decoding, Engine

    engine = Engine(model, tokenizer)
    engine.stop_ids = set()  # every answer runs to `tokens`: the same work for every variant
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": p}],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
        )["input_ids"]
        for p in PROMPTS
    ]

    @contextlib.contextmanager
    def merged():
        model.merge_adapter()
        try:
            yield
        finally:
            model.unmerge_adapter()

    def run(context, adapter):
        def call():
            with context():
                start, n, texts = time.perf_counter(), 0, []
                for prompt in prompts:
                    decoding = Decoding(tokens, temperature=0, adapter=adapter)
                    steps = list(engine.generate(list(prompt), decoding, engine.sampler(0)))
                    n += len(steps)
                    texts.append(tokenizer.decode([s.token for s in steps]))
                return n, time.perf_counter() - start, texts

        return call

    return {
        "base": run(model.disable_adapter, None),
        "unmerged": run(contextlib.nullcontext, None),
        "unmerged_adapter_names": run(contextlib.nullcontext, "default"),
        "merged": run(merged, None),
    }


def measure(variants: dict, repeats: int) -> dict:
    """Each variant `repeats` times, interleaved; tokens/s medians, ratios to the base, and whether the adapter's
    variants answered alike (they should: fp32)."""
    for call in variants.values():  # warm-up: first-call allocations and lazy imports
        call()
    rates: dict[str, list[float]] = {name: [] for name in variants}
    texts: dict[str, list[str]] = {}
    for repeat in range(repeats):
        names = (
            list(variants) if repeat % 2 == 0 else list(variants)[::-1]
        )  # A,B,C then C,B,A: load drift cancels
        for name in names:
            n, seconds, texts[name] = variants[name]()
            rates[name].append(n / seconds)
    medians = {name: statistics.median(r) for name, r in rates.items()}
    adapter = [t for name, t in texts.items() if name != "base"]
    return {
        "tokens_per_s": {name: round(v, 1) for name, v in medians.items()},
        "runs": {name: [round(v, 1) for v in r] for name, r in rates.items()},
        "vs_base": {name: round(v / medians["base"], 3) for name, v in medians.items()},
        "adapter_variants_answer_alike": all(t == adapter[0] for t in adapter),
        "adapter_changes_the_answers": adapter[0] != texts["base"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=2, help="how many of the four prompts to answer")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "adapter_merge.json")
    args = parser.parse_args()
    model, tokenizer = adapted(args.model)
    del PROMPTS[args.prompts :]
    load_before = os.getloadavg()
    results = {
        "evaluation_generate_batch1": measure(
            evaluation_variants(model, tokenizer, args.tokens, 1), args.repeats
        ),
        "evaluation_generate_batch4": measure(
            evaluation_variants(model, tokenizer, args.tokens, 4), args.repeats
        ),
        "serving_engine": measure(serving_variants(model, tokenizer, args.tokens), args.repeats),
    }
    report = {
        "model": str(args.model),
        "adapter": "LoRA r=16 alpha=32 on q,k,v,o,gate,up,down of every layer (random A and B)",
        "device": "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)",
        "dtype": "float32",
        "max_new_tokens": args.tokens,
        "prompts": len(PROMPTS),
        "repeats": args.repeats,
        "load_average_1_5_15": {"before": load_before, "after": os.getloadavg()},
        "results": results,
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
