"""What medexp.training.memory_budget's constants rest on: the bytes autograd keeps per decoder layer and token in
fp32 and under bf16 autocast (AUTOCAST_SHARE), and what each lever costs in step time on this machine
(CHECKPOINT_COST, TILE_COST, SPLIT_COST).

    nice -n 5 python benchmarks/memory_levers.py --saved          # seconds: 2 layers, saved-tensor hooks
    nice -n 5 python benchmarks/memory_levers.py --costs --rounds 3   # minutes: 10 layers, interleaved rounds

Model: SmolLM2-135M's config (/work/models/smollm2-135m-instruct, else SmolLM-135M's shape) with random weights and
fewer layers, LoRA r=16 on every linear (medexp's conf/lora/default.yaml), sdpa attention, rows of 1024 tokens
with an attention mask. --saved counts the distinct storages autograd's saved-tensor hooks see in one forward,
leaving out the parameters (bf16 weight copies are reported apart). --costs times forward + backward of the body
and medexp's answer-only head (60% of the positions) per sequence, in CPU seconds (process time: robust to other jobs' load), the fastest of the rounds, for: 1, 2 and 4
sequences per pass; 2 sequences with every layer / every other layer checkpointed; 2 sequences with the head in
4096-column tiles (TRL's kernel, the budget's lever).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL = Path("/work/models/smollm2-135m-instruct")
SMOLLM = {"hidden_size": 576, "intermediate_size": 1536, "num_attention_heads": 9, "num_key_value_heads": 3}


def build(layers: int):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    if (REAL / "config.json").is_file():
        config = AutoConfig.from_pretrained(REAL)
    else:
        config = LlamaConfig(**SMOLLM, vocab_size=49152, head_dim=64, tie_word_embeddings=True)
    config.num_hidden_layers = layers
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear")
    return get_peft_model(model, lora).train()


def saved(length: int = 1024, sequences: int = 2, layers: int = 2) -> dict:
    import torch

    model = build(layers)
    params = {p.data_ptr() for p in model.parameters()}
    shapes = {tuple(p.shape) for p in model.parameters()} | {tuple(p.shape)[::-1] for p in model.parameters()}
    ids = torch.randint(0, 49152, (sequences, length))
    mask = torch.ones_like(ids)
    mask[1:, length // 2 :] = 0  # padding, so the attention mask is a real one
    out = {}
    for autocast in (False, True):
        seen: dict[int, tuple] = {}

        def pack(t, seen=seen):
            storage = t.untyped_storage()
            if storage.data_ptr() not in params:
                seen.setdefault(storage.data_ptr(), (storage.nbytes(), tuple(t.shape)))
            return t

        hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        with hooks, torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            model.base_model.model.model(input_ids=ids, attention_mask=mask)
        acts = sum(n for n, shape in seen.values() if shape not in shapes)
        copies = sum(n for n, shape in seen.values() if shape in shapes)
        out["bf16_autocast" if autocast else "fp32"] = {
            "bytes_per_layer_token": round(acts / layers / ids.numel()),
            "weight_copies_mib_per_layer": round(copies / layers / 2**20, 2),
        }
    out["autocast_share"] = round(
        out["bf16_autocast"]["bytes_per_layer_token"] / out["fp32"]["bytes_per_layer_token"], 3
    )
    return out


def costs(rounds: int, layers: int = 10, length: int = 1024, only: str | None = None) -> dict:
    import torch
    from trl.kernels import ChunkedLogProbFunction

    sys.path.insert(0, str(ROOT))
    from medexp.training.answer_head import _stored_logits_head

    model = build(layers)
    causal = model.base_model.model
    body, head = causal.model, causal.lm_head

    def step(sequences: int, every: int, columns: int) -> float:
        ids = torch.randint(0, 49152, (sequences, length))
        if every:
            causal.activation_checkpointing_enable({"use_reentrant": False}, every_n_layers=every)
        else:
            causal.activation_checkpointing_disable()
        start = time.process_time()  # CPU seconds: other jobs' load on a shared machine does not count
        with torch.autocast("cpu", dtype=torch.bfloat16):
            hidden = body(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
            rows = hidden.reshape(-1, hidden.shape[-1])[: int(0.6 * ids.numel())]
            targets = torch.randint(0, 49152, (rows.shape[0],))
            if columns:
                outputs = ("log_probs", "entropy", "is_top1")
                lp = ChunkedLogProbFunction.apply(
                    rows, head.weight, None, targets, 1.0, columns, None, 1.0, outputs
                )[0]
            else:
                lp = _stored_logits_head(rows, head.weight, None, targets)[0]
        (-lp.mean()).backward()
        return (time.process_time() - start) / sequences

    variants = {
        "1_per_pass": (1, 0, 0),
        "2_per_pass": (2, 0, 0),
        "4_per_pass": (4, 0, 0),
        "2_checkpoint_all": (2, 1, 0),
        "2_checkpoint_every_2nd": (2, 2, 0),
        "2_head_tiles_4096": (2, 0, 4096),
    }
    if only:
        variants = {k: v for k, v in variants.items() if k in only.split(",")}
    step(1, 0, 0)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in variants}
    loads = []
    for r in range(rounds):
        order = list(variants.items())
        for name, v in order if r % 2 == 0 else order[::-1]:  # every other round backwards: no order effect
            times[name].append(step(*v))
        loads.append(round(os.getloadavg()[0], 2))
        print(r, loads[-1], {k: round(min(t), 2) for k, t in times.items()}, file=sys.stderr, flush=True)
    base = min(times["2_per_pass"])
    return {
        "cpu_seconds_per_sequence": {k: round(min(t), 3) for k, t in times.items()},
        "relative_to_2_per_pass": {k: round(min(t) / base, 3) for k, t in times.items()},
        "load_average_1min": loads,
        "layers": layers,
        "length": length,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--saved", action="store_true")
    parser.add_argument("--costs", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--layers", type=int, default=10, help="decoder layers for --costs")
    parser.add_argument("--only", help="comma-separated variants of --costs")
    args = parser.parse_args()
    report = {"machine": {"cores": os.cpu_count()}}
    if args.saved:
        report["saved"] = saved()
    if args.costs:
        report["costs"] = costs(args.rounds, args.layers, only=args.only)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
