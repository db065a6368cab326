"""Training throughput: medexp's batching against plain TRL SFTTrainer scripts, side by side.

    python benchmarks/throughput.py           # the LM-head view: 4 layers, batch 8, 30 timed steps after 3 warm-up
    python benchmarks/throughput.py --quick   # plumbing only: 2 layers, 1024-token vocab, batch 4, 4+1 steps
    # real depth: SmolLM-135M's full 30 layers, the TRL variants in fp32 and bf16, two interleaved rounds
    python benchmarks/throughput.py --layers 30 --batch-size 2 --max-tokens 1024 --variants acefh \
        --warmup-steps 2 --steps 6 --rounds 2 --out benchmarks/throughput_30l.json
    python benchmarks/throughput.py --model /path/to/a/model/dir ...   # a real model directory instead

The variants train the same model, data, LoRA, batch size, learning rate and seed, each in a fresh subprocess
(this script re-invoked with `--variant X`), so one variant's peak memory cannot hide another's:

  (a) medexp's default (`trainer.batching=auto`, `trainer.precision=auto`), built by medexp.training.trainer.build_trainer
  (b) medexp with `trainer.batching=padded`
  (c) a plain TRL SFTTrainer script: conversational prompt/completion dataset, completion_only_loss, padded batches, fp32
  (d) the same script with `packing=True` (TRL's default bfd strategy, max_length=1024), fp32
  (e) the same script with `train_sampling_strategy="group_by_length"`, fp32
  (f) the same length-grouped script with `bf16=True` (and `use_cpu=True` on a CPU): the fastest TRL script a CPU
      user can write on a CPU with bf16 matmuls
  (h) medexp's default with `trainer.compile=true` (its decoder blocks compiled by torch.compile)

medexp's variants train in what `trainer.precision=auto` picks (bf16 autocast on a CPU with AVX512-BF16 or AMX);
the fp32 TRL variants are the scripts as users write them without a precision flag.
With --rounds N every chosen variant runs N times, interleaved (a c e f, a c e f, ...), so a change in the shared
machine's load falls on all of them alike; a variant's figure is its median round, and every round's figure is
kept with the load average over its timed steps.

Model: SmolLM-135M's shape with `--layers` layers, randomly initialised (fixed seed), saved once into a temp dir
with the embedded tiny model's tokenizer. Data: rows built from the embedded MedQuAD sample whose question +
answer word counts follow MedQuAD's length mix, read through medexp's `dataset=file` (its own cleaning and chat
formatting); the TRL scripts get the same conversations (medexp.data.prepare.chat_messages). The training set
holds 200 x batch rows (--train-rows), more than the steps train on, so each example is seen at most once: as
many as transformers' length-grouped sampler needs for its full 50 x batch mega-batches (it shrinks them to a
quarter of the data on smaller sets, which would leave a third of a grouped batch padding instead of the <3% a
real MedQuAD-sized set gets).

Per variant it prints the non-padding tokens trained per second (the real tokens of the batches the timed steps
trained on, counted by wrapping the trainer's data collator, over the wall time from the end of the last warm-up
step to the end of the last timed step: forward, backward, optimizer and batch collation; set-up, the final
evaluation and checkpoints fall outside), the padding share of those batches, the process's peak RSS (and CUDA
max allocated on CUDA), and the ratios (a)/(b) and (a)/max(c, d, e). The table is markdown, for the README; it
is also written to benchmarks/throughput.json (--quick writes no JSON unless --out is given).

Targets, on a 2-core CPU: at 4 layers (the LM head is half of a step) medexp's default >= 1.5x its padded mode
and >= 1.0x the fastest TRL variant; at 30 layers (--layers 30 or --model) >= 1.5x the padded fp32 TRL script (c)
and >= 1.2x the fastest TRL variant.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "medexp" / "assets"
SAMPLE = ASSETS / "sample" / "medquad_sample.jsonl"
TOKENIZER = ASSETS / "tiny_llama"
DEFAULT_OUT = ROOT / "benchmarks" / "throughput.json"

# MedQuAD's question + answer word counts: p10 51, p25 80, median 146, p75 261, p90 388, p95 531, p99 1286 (mean
# 209). The ends (p0 20, p100 1300) are ours; drawn rows average ~210 words.
WORD_QUANTILES = [
    (0.00, 20),
    (0.10, 51),
    (0.25, 80),
    (0.50, 146),
    (0.75, 261),
    (0.90, 388),
    (0.95, 531),
    (0.99, 1286),
    (1.00, 1300),
]
# dataset.max_tokens, and the unpacked TRL scripts' max_length: the model's context. It keeps all but ~0.4% of the
# rows (the tiny tokenizer spends up to 1.8 tokens a word on some answers); medexp's cleaning drops those as
# too_long before any variant sees the data.
MAX_TOKENS = 2048
TRL_PACKING_LENGTH = 1024  # TRL's default max_length, the block size of its packing
TARGETS = {"a_over_b": 1.5, "a_over_best_trl": 1.0}  # the 4-layer LM-head view
DEEP_TARGETS = {"a_over_c": 1.5, "a_over_best_trl": 1.2}  # at real depth (>= 24 layers, or --model)
# Random-weight shapes (--shape); --layers overrides the depth. The embedded tiny model's tokenizer is used.
SHAPES = {
    "smollm-135m": {"hidden_size": 576, "intermediate_size": 1536, "num_attention_heads": 9, "num_key_value_heads": 3, "layers": 30},
    "smollm2-360m": {"hidden_size": 960, "intermediate_size": 2560, "num_attention_heads": 15, "num_key_value_heads": 5, "layers": 32},
    # TinyLlama-1.1B's shape (its vocab is 32000: pass --vocab 32000) for the QLoRA check on a GPU
    "tinyllama-1.1b": {"hidden_size": 2048, "intermediate_size": 5632, "num_attention_heads": 32, "num_key_value_heads": 4, "layers": 22},
}  # fmt: skip

VARIANTS = {  # kind, batching, label, precision (auto: medexp's trainer.precision=auto)
    "a": ("medexp", "auto", "medexp default", "auto"),
    "b": ("medexp", "padded", "medexp `trainer.batching=padded`", "auto"),
    "c": ("trl", "padded", "TRL SFTTrainer, padded, fp32", "fp32"),
    "d": ("trl", "packing", f"TRL SFTTrainer, `packing=True` (bfd, max_length={TRL_PACKING_LENGTH}), fp32", "fp32"),
    "e": ("trl", "group_by_length", 'TRL SFTTrainer, `train_sampling_strategy="group_by_length"`, fp32', "fp32"),
    "f": ("trl", "group_by_length", "TRL SFTTrainer, `group_by_length`, `bf16=True`", "bf16"),
    "h": ("medexp", "auto", "medexp default + `trainer.compile=true`", "auto"),
    # for a GPU (benchmarks/gpu/lora_throughput.py): medexp's other modes, set by hand
    "i": ("medexp", "padding_free", "medexp `trainer.batching=padding_free`", "auto"),
    "k": ("medexp", "packing", "medexp `trainer.batching=packing`", "auto"),
}  # fmt: skip
TRL_VARIANTS = "cdef"

OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


# --------------------------------------------------------------------------------------------------------------
# The parent: data, one subprocess per variant, the report. It imports nothing heavy: a child's ru_maxrss can
# include the RSS of the process it was spawned from, so the parent stays small.


def target_words(rng: random.Random) -> int:
    """A question + answer word count drawn from the piecewise-linear interpolation of WORD_QUANTILES."""
    u = rng.random()
    for (p0, w0), (p1, w1) in pairwise(WORD_QUANTILES):
        if u <= p1:
            return round(w0 + (w1 - w0) * (u - p0) / (p1 - p0))
    return WORD_QUANTILES[-1][1]


def write_rows(path: Path, n: int, seed: int) -> None:
    """n rows {"Question", "Answer"} from the embedded sample, each answer's sentences repeated (and the last one
    cut) until question + answer have the drawn word count."""
    sample = [json.loads(line) for line in SAMPLE.read_text().splitlines() if line.strip()]
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(n):
            row = rng.choice(sample)
            question = row["Question"].strip()
            sentences = re.split(r"(?<=[.!?])\s+", row["Answer"].strip())
            budget = max(target_words(rng) - len(question.split()), 5)
            words: list[str] = []
            i = 0
            while len(words) < budget:
                words += sentences[i % len(sentences)].split()
                i += 1
            f.write(json.dumps({"Question": question, "Answer": " ".join(words[:budget])}) + "\n")


def run_child(variant: str, args: argparse.Namespace, work: Path) -> dict:
    result = work / f"{variant}.json"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--variant",
        variant,
        "--workdir",
        str(work),
        "--result",
        str(result),
        *(f"--layers={args.layers}", f"--vocab={args.vocab}", f"--steps={args.steps}"),
        f"--warmup-steps={args.warmup_steps}",
        f"--train-rows={args.train_rows}",
        *(f"--batch-size={args.batch_size}", f"--seed={args.seed}", f"--attn={args.attn}"),
        *(f"--shape={args.shape}", f"--max-tokens={args.max_tokens}", f"--lora={args.lora}"),
        *([f"--model={args.model}"] if args.model else []),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **OFFLINE}, cwd=ROOT)
    if proc.returncode != 0 or not result.is_file():
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"variant {variant} failed (exit {proc.returncode}); its output is above")
    return json.loads(result.read_text())


def reuse(path: Path, results: list[dict], settings: dict, machine: dict) -> list[dict]:
    """These results plus the earlier report's variants that were not run now, in variant order; refused unless
    that report had the same settings, training data and machine."""
    earlier = json.loads(path.read_text())
    same = {k: v for k, v in settings.items() if k != "precision"}
    if {k: earlier["settings"].get(k) for k in same} != same or earlier["machine"] != machine:
        raise SystemExit(
            f"--reuse {path}: its settings or machine differ from this run's; rerun every variant"
        )
    digests = {r["data"]["pairs_digest"] for r in results + earlier["results"]}
    if len(digests) != 1:
        raise SystemExit(f"--reuse {path}: it trained on other rows ({digests})")
    ran = {r["variant"] for r in results}
    kept = [dict(r, reused_from=str(path.name)) for r in earlier["results"] if r["variant"] not in ran]
    return sorted(results + kept, key=lambda r: r["variant"])


def ratio(x: float, y: float) -> float:
    return round(x / y, 3) if y else math.nan


def report(machine: dict, settings: dict, results: list[dict]) -> dict:
    by = {r["variant"]: r for r in results}
    digests = {r["data"]["pairs_digest"] for r in results}
    if len(digests) != 1:
        raise SystemExit(f"the variants trained on different pairs: {digests}")
    trl_runs = [v for v in TRL_VARIANTS if v in by]
    best_trl = max(trl_runs, key=lambda v: by[v]["tokens_per_s"]) if trl_runs else None

    def over(x: str, y: str | None) -> float | None:
        return ratio(by[x]["tokens_per_s"], by[y]["tokens_per_s"]) if y and {x, y} <= by.keys() else None

    ratios = {
        "a_over_b": over("a", "b"),
        "a_over_c": over("a", "c"),
        "a_over_best_trl": over("a", best_trl),
        "best_trl": best_trl,
        "h_over_a": over("h", "a"),  # what compiling the decoder blocks adds to medexp's default
        "h_over_best_trl": over("h", best_trl),
    }
    targets = DEEP_TARGETS if settings.get("deep") else TARGETS
    # met only when every target was measured: a partial run (--variants) cannot meet them
    met = all(ratios[k] is not None and ratios[k] >= target for k, target in targets.items())
    cuda = any(r["cuda_peak_mib"] is not None for r in results)

    head = ["variant", "batching", "precision", "tokens/s", "rounds (load avg)", "padding", "peak RSS MiB"]
    head += [*(["CUDA peak MiB"] * cuda), "timed tokens", "timed s", "train loss"]
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---", "---", *["---:"] * (len(head) - 2)]) + "|",
    ]
    for r in results:
        cells = [
            f"({r['variant']}) {r['label']}",
            r["batching"],
            r["precision"],
            f"{r['tokens_per_s']:,.1f}",
            ", ".join(
                f"{x:,.1f} ({load:.1f})"
                for x, load in zip(
                    r.get("rounds_tokens_per_s", [r["tokens_per_s"]]),
                    r.get("rounds_load", [math.nan]),
                    strict=False,
                )
            ),
            f"{100 * r['padding_fraction']:.1f}%",
            f"{r['peak_rss_mib']:,.0f}",
            *([f"{r['cuda_peak_mib']:,.0f}"] if cuda else []),
            f"{r['tokens']:,}",
            f"{r['timed_s']:.1f}",
            f"{r['train_loss']:.3f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    d = results[0]["data"]
    cpu = f"{machine['cpu']}, {machine['cores']} cores ({machine['usable_cores']} usable)"
    device = machine["cuda_device"] or "CPU"

    def shown(x: float | None) -> str:
        return "not measured" if x is None else f"{x:.2f}x"

    first = "a_over_c" if settings.get("deep") else "a_over_b"
    lines += [
        "",
        f"(a)/({first[-1]}) = {shown(ratios[first])} (target >= {targets[first]}x); "
        f"(a)/best TRL = {shown(ratios['a_over_best_trl'])} against ({best_trl}) "
        f"(target >= {targets['a_over_best_trl']}x): targets {'met' if met else 'NOT met'}."
        + (
            f" (h)/(a) = {shown(ratios['h_over_a'])}, (h)/best TRL = {shown(ratios['h_over_best_trl'])}."
            if ratios["h_over_a"]
            else ""
        ),
        "Each figure is the variant's median round; the rounds ran interleaved, each with the 1-minute load average "
        "at the end of its timed steps; peak RSS is the largest round's, at the end of the timed steps.",
        "",
        *(
            [
                f"Variants {', '.join(r['variant'] for r in results if 'reused_from' in r)} are from an earlier run "
                f"with the same settings, rows and machine ({next(r['reused_from'] for r in results if 'reused_from' in r)}; they do not "
                "run medexp's training code); the others were rerun after a change to it.",
                "",
            ]
            if any("reused_from" in r for r in results)
            else []
        ),
        f"Machine: {cpu}; {device}; torch {machine['torch']} with {machine['torch_threads']} threads, "
        f"transformers {machine['transformers']}, trl {machine['trl']}, peft {machine['peft']}.",
        f"Setup: {settings['model']} with {settings['layers']} layers and a {settings['vocab']}-token vocab "
        f"({settings['parameters']:,} parameters), LoRA r=16 alpha=32 all-linear, {settings['attn']} attention, "
        f"max {settings['max_tokens']} tokens a sequence, batch "
        f"{settings['batch_size']}, {settings['steps']} timed steps after {settings['warmup_steps']} warm-up; "
        f"{d['train_rows']} training rows with MedQuAD's length mix (question + answer words p10/p50/p90/p99 "
        f"{'/'.join(str(d['words'][k]) for k in ('p10', 'p50', 'p90', 'p99'))}, mean {d['words']['mean']:.0f}; "
        f"conversation tokens p50/p90/max {d['tokens']['p50']}/{d['tokens']['p90']}/{d['tokens']['max']}"
        + (f", {100 * d['answer_share']:.0f}% of them answer tokens" if "answer_share" in d else "")
        + ").",
    ]
    return {
        "machine": machine,
        "settings": settings,
        "data": d,
        "results": results,
        "ratios": ratios,
        "targets": targets,
        "target_met": met,
        "table": "\n".join(lines),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="2 layers, 1024-token vocab, 4 steps, 1 warm-up, batch 4"
    )
    parser.add_argument("--layers", type=int, default=4, help="decoder layers (30: SmolLM-135M's full depth)")
    parser.add_argument("--vocab", type=int, default=49152, help="the model's vocab size (SmolLM-135M's)")
    parser.add_argument(
        "--shape", choices=sorted(SHAPES), default="smollm-135m", help="random weights' shape"
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="a model directory (weights and tokenizer) instead of a shape",
    )
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=MAX_TOKENS,
        help="longest sequence (dataset.max_tokens; TRL max_length)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="runs of every variant, interleaved")
    parser.add_argument(
        "--sequence",
        default=None,
        help="the runs in order, letters may repeat (e.g. afcefah); overrides --rounds",
    )
    parser.add_argument(
        "--lora",
        choices=["default", "qlora"],
        default="default",
        help="medexp's lora group (qlora: 4-bit base)",
    )
    parser.add_argument("--steps", type=int, default=30, help="timed optimizer steps")
    parser.add_argument("--warmup-steps", type=int, default=3, help="optimizer steps before timing (>= 1)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--train-rows", type=int, default=None, help="training set size (default 200 x batch)"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--variants",
        default="abcde",
        help="which variants to run, e.g. acefh (ratios need a, b or c, and c-f)",
    )
    parser.add_argument("--attn", default="sdpa", help="attn_implementation of every variant")
    parser.add_argument("--out", type=Path, default=None, help=f"the JSON report (default {DEFAULT_OUT})")
    parser.add_argument(
        "--reuse",
        type=Path,
        default=None,
        help="an earlier report: the variants not run now are taken from it (same settings, data and machine); "
        "for rerunning medexp's variants after a change to medexp's training only",
    )
    parser.add_argument("--variant", choices=["setup", *VARIANTS], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        os.environ.update(OFFLINE)
        result = setup(args) if args.variant == "setup" else run_variant(args)
        args.result.write_text(json.dumps(result))
        return
    if args.quick:
        # Also the tokenizer's own 1024-token vocab: SmolLM's 49152-row LM head is most of a step's compute on a
        # CPU, and --quick only checks that every variant runs and reports.
        args.layers, args.vocab, args.steps, args.warmup_steps, args.batch_size = 2, 1024, 4, 1, 4
    if args.warmup_steps < 1 or args.steps < 1 or args.rounds < 1:
        parser.error("--steps, --warmup-steps and --rounds must be at least 1")
    if not args.variants or set(args.variants) - set(VARIANTS):
        parser.error(f"--variants {args.variants!r}: letters among {''.join(VARIANTS)}")
    order = args.sequence or args.variants * args.rounds
    if set(order) - set(VARIANTS):
        parser.error(f"--sequence {order!r}: letters among {''.join(VARIANTS)}")
    full = set(order) == set("abcde") and args.layers == 4 and args.model is None
    # the recorded report is the full comparison; a partial or --quick run writes JSON only where --out says
    out = args.out if args.out is not None or args.quick or not full else DEFAULT_OUT

    train_rows = max(
        (args.warmup_steps + args.steps) * args.batch_size, args.train_rows or 200 * args.batch_size
    )
    args.train_rows = train_rows
    with tempfile.TemporaryDirectory(prefix="medexp-throughput-") as tmp:
        work = Path(tmp)
        # medexp holds out ~5% for validation (by question) and may drop duplicates: generate enough to spare.
        write_rows(work / "medquad_mix.jsonl", int(train_rows * 1.2) + 16, args.seed)
        setup_info = run_child("setup", args, work)
        runs: dict[str, list[dict]] = {}
        for i, variant in enumerate(order):
            start = time.perf_counter()
            r = run_child(variant, args, work)
            runs.setdefault(variant, []).append(r)
            print(
                f"run {i + 1}/{len(order)} ({variant}) {VARIANTS[variant][2]}: {r['tokens_per_s']:,.1f} tokens/s, "
                f"padding {100 * r['padding_fraction']:.1f}%, peak RSS {r['peak_rss_mib']:,.0f} MiB, load average "
                f"{r['load_average'][0]:.2f} ({time.perf_counter() - start:.0f} s in all)",
                flush=True,
            )
            # the report so far after every run: a long run cut short keeps what it measured
            rep = write_report(args, setup_info, runs, order, out, final=i == len(order) - 1)
    print()
    print(rep["table"])
    if out is not None:
        print(f"\nwritten to {out}")


def write_report(args, setup_info: dict, runs: dict, order: str, out: Path | None, final: bool) -> dict:
    results = [median_round(runs[v]) for v in VARIANTS if v in runs]
    settings = {
        "model": str(args.model) if args.model else f"{args.shape}'s shape, random weights",
        "deep": args.model is not None or args.layers >= 24,
        "layers": setup_info["layers"],
        "vocab": setup_info["vocab"],
        "max_tokens": args.max_tokens,
        "lora": args.lora,
        "order": order,  # the runs in the order they ran (interleaved)
        "parameters": setup_info["parameters"],
        "steps": args.steps,
        "warmup_steps": args.warmup_steps,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "attn": args.attn,
        "precision": results[0]["precision"],  # the first variant's, (a)'s: what medexp's default picked
        "quick": args.quick,
    }
    if args.reuse is not None:
        results = reuse(args.reuse, results, settings, setup_info["machine"])
    rep = report(setup_info["machine"], settings, results)
    rep["complete"] = final
    if out is not None:
        out.write_text(json.dumps(rep, indent=2) + "\n")
    return rep


def median_round(rounds: list[dict]) -> dict:
    """One variant's report: its median round (by tokens/s; the lower middle of an even count), with every
    round's tokens/s and load average, and the largest peak RSS of any round."""
    ordered = sorted(rounds, key=lambda r: r["tokens_per_s"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["rounds_tokens_per_s"] = [r["tokens_per_s"] for r in rounds]
    chosen["rounds_load"] = [r["load_average"][0] for r in rounds]
    chosen["peak_rss_mib"] = max(r["peak_rss_mib"] for r in rounds)
    return chosen


# --------------------------------------------------------------------------------------------------------------
# The children: `--variant setup` saves the model; `--variant a..e` trains one variant and writes its result.


def setup(args: argparse.Namespace) -> dict:
    """Save the random model of --shape with the tiny model's tokenizer (or read --model's config); report the
    machine."""
    import platform

    import peft
    import torch
    import transformers
    import trl
    from transformers import AutoConfig, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if args.model is not None:
        config = AutoConfig.from_pretrained(args.model)
        with torch.device("meta"):  # the parameter count without reading the weights
            count = LlamaForCausalLM(config).num_parameters() if config.model_type == "llama" else None
        return {
            "machine": machine_info(platform, torch, transformers, trl, peft),
            "parameters": count,
            "layers": config.num_hidden_layers,
            "vocab": config.vocab_size,
        }
    shape = SHAPES[args.shape]

    # The tiny model's tokenizer has 1024 tokens, far fewer than the model's 49152 embeddings: every token id
    # stays below the vocab size, and the embedding/logits cost is SmolLM-135M's (--quick uses 1024 rows).
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    tokenizer.pad_token = tokenizer.eos_token  # what medexp's load_tokenizer and TRL would pick anyway
    tokenizer.model_max_length = MAX_TOKENS  # the model's context, not the tiny model's 512
    config = LlamaConfig(
        hidden_size=shape["hidden_size"],
        intermediate_size=shape["intermediate_size"],
        num_hidden_layers=args.layers,
        num_attention_heads=shape["num_attention_heads"],
        num_key_value_heads=shape["num_key_value_heads"],
        vocab_size=args.vocab,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(args.workdir / "model")
    tokenizer.save_pretrained(args.workdir / "model")
    return {
        "machine": machine_info(platform, torch, transformers, trl, peft),
        "parameters": model.num_parameters(),
        "layers": args.layers,
        "vocab": args.vocab,
    }


def machine_info(platform, torch, transformers, trl, peft) -> dict:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line
        ]
        cpu = names[0] if names else cpu
    machine = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "peft": peft.__version__,
        "python": platform.python_version(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return machine


def model_dir(args: argparse.Namespace) -> Path:
    return args.model if args.model is not None else args.workdir / "model"


def medexp_config(args: argparse.Namespace, batching: str):
    steps = args.warmup_steps + args.steps
    overrides = [
        f"model.name_or_path={model_dir(args)}",
        f"model.attn_implementation={args.attn}",
        "dataset=file",
        f"dataset.path={args.workdir / 'medquad_mix.jsonl'}",
        f"dataset.max_tokens={args.max_tokens}",
        "dataset.near_dup.threshold=null",
        f"lora={args.lora}",
        "trainer=default",
        f"trainer.batching={batching}",
        f"trainer.batch_size={args.batch_size}",
        # the one evaluation after the timed steps at the training batch: its memory stays below the training's
        f"trainer.eval_batch_size={args.batch_size}",
        f"trainer.compile={str(args.variant == 'h').lower()}",
        "trainer.gradient_accumulation_steps=1",  # one batch per optimizer step, as in the TRL scripts
        f"trainer.max_steps={steps}",
        # eval_steps may not exceed max_steps: the one evaluation (and checkpoint) comes after the last timed step
        f"trainer.eval_steps={steps}",
        "eval=none",
        "tracking=none",
        f"seed={args.seed}",
    ]
    from medexp.config.compose import compose_run_config

    return compose_run_config(overrides, args.workdir / f"medexp_{args.variant}_{os.getpid()}")


def quantiles(values: list[int]) -> dict[str, float]:
    ordered = sorted(values)

    def at(p: float) -> int:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    qs = {f"p{round(100 * p)}": at(p) for p in (0.10, 0.25, 0.50, 0.75, 0.90, 0.95, 0.99)}
    return {**qs, "max": ordered[-1], "mean": round(sum(ordered) / len(ordered), 1)}


def prepared(args: argparse.Namespace, cfg):
    """medexp's own reading, cleaning, chat formatting and split of the file; the first --train-rows rows of its
    (shuffled) training split."""
    from medexp.config import validate
    from medexp.data import load_pairs, prepare_data
    from medexp.training.model import load_tokenizer

    validate(cfg)
    tokenizer = load_tokenizer(cfg.model)
    data = prepare_data(load_pairs(cfg.dataset), cfg.dataset, tokenizer, cfg.seed)
    n = args.train_rows
    if len(data.train) < n:
        raise SystemExit(f"only {len(data.train)} training rows, {n} needed")
    # With one source of weight 1, train_pairs are the train split's rows in the same order.
    data.train = data.train.select(range(n))
    data.train_pairs = data.train_pairs[:n]
    digest = hashlib.sha256(json.dumps(data.train_pairs).encode()).hexdigest()[:16]
    info = {
        "train_rows": n,
        "pairs_digest": digest,
        "words": quantiles([len(q.split()) + len(a.split()) for q, a in data.train_pairs]),
        "tokens": quantiles(data.token_lengths("train")),
        # the share of conversation tokens that are answer (loss) tokens; the rest is system prompt and question
        "answer_share": round(
            sum(map(sum, data.train["completion_mask"])) / sum(map(len, data.train["input_ids"])), 3
        ),
    }
    return tokenizer, data, info


class CountingCollator:
    """The trainer's data collator, recording (real tokens, positions, examples) of every batch it builds."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.batches: list[tuple[int, int, int]] = []

    def __call__(self, features: list[dict]) -> dict:
        batch = self.inner(features)
        ids = batch["input_ids"]
        if "attention_mask" in batch:  # padded: one row per example
            real, examples = int(batch["attention_mask"].sum()), ids.shape[0]
        else:  # padding-free (and packed): one concatenated row, position_ids restart per example, no padding
            real, examples = ids.numel(), int((batch["position_ids"] == 0).sum())
        self.batches.append((real, ids.numel(), examples))
        return batch

    def __getattr__(self, name: str) -> Any:  # padding_free, return_position_ids, ... of the wrapped collator
        return getattr(self.inner, name)


def step_timer(warmup: int, steps: int, cuda: bool):
    import resource

    import torch
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Wall time from the end of step `warmup` to the end of step `warmup + steps`; and the time inside the
        timed steps alone (step begin to step end, without fetching their batches)."""

        def __init__(self) -> None:
            self.start = self.end = self.begun = self.rss = self.load = None
            self.each: list[float] = []
            self.inside = 0.0

        def _now(self) -> float:
            if cuda:
                torch.cuda.synchronize()
            return time.perf_counter()

        def on_step_begin(self, args, state, control, **kwargs):
            self.begun = self._now()

        def on_step_end(self, args, state, control, **kwargs):
            now = self._now()
            self.each.append(
                round(now - self.begun, 2)
            )  # every step's seconds, warm-up (and compiling) included
            if warmup < state.global_step <= warmup + steps:
                self.inside += now - self.begun
            if state.global_step == warmup:
                self.start = now
            elif state.global_step == warmup + steps:
                self.end = now
                # the training's peak, before the final evaluation; the load average over the timed steps' end
                self.rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                self.load = [round(x, 2) for x in os.getloadavg()]

    return StepTimer()


def run_variant(args: argparse.Namespace) -> dict:
    import logging
    import resource
    import warnings

    import datasets
    import torch
    from transformers.utils import logging as hf_logging

    from medexp.training.model import resolve_precision

    if args.variant == "h":  # the inductor kernels' C++ is compiled once per shape; keep its cache per run
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(args.workdir / "inductor_cache"))

    warnings.filterwarnings("ignore")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    logging.basicConfig(level=logging.WARNING)

    kind, batching, label, asked = VARIANTS[args.variant]
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    cfg = medexp_config(args, batching if kind == "medexp" else "padded")
    tokenizer, data, data_info = prepared(args, cfg)
    # medexp: what trainer.precision=auto picks here; TRL: the script's own flag
    precision = resolve_precision(cfg.trainer.precision) if asked == "auto" else asked
    timer = step_timer(args.warmup_steps, args.steps, cuda)
    if kind == "medexp":
        trainer, mode = medexp_trainer(args, cfg, tokenizer, data, precision, timer)
    else:
        trainer, mode = trl_trainer(args, cfg, data, precision, batching, timer)
    collator = CountingCollator(trainer.data_collator)
    trainer.data_collator = collator
    output = trainer.train()

    if timer.end is None or len(collator.batches) < args.warmup_steps + args.steps:
        raise SystemExit(f"timed {timer.start}..{timer.end} over {len(collator.batches)} batches: incomplete")
    # With gradient_accumulation_steps=1 and no workers, the i-th batch built is the one step i + 1 trained on
    # (a batch prefetched ahead or evaluation batches come after the timed ones).
    timed = collator.batches[args.warmup_steps : args.warmup_steps + args.steps]
    tokens, positions, examples = (sum(b[i] for b in timed) for i in range(3))
    seconds = timer.end - timer.start
    rss = timer.rss  # KiB on Linux, bytes on macOS
    rss_mib = rss / 2**20 if sys.platform == "darwin" else rss / 2**10
    return {
        "variant": args.variant,
        "label": label,
        "kind": kind,
        "batching": mode,
        "precision": precision,
        "tokens_per_s": round(tokens / seconds, 1),
        "padding_fraction": round(1 - tokens / positions, 4),
        "tokens": tokens,
        "positions": positions,
        "examples": examples,  # sequences trained in the timed steps (packed blocks hold several)
        "timed_s": round(seconds, 3),
        "inside_steps_s": round(timer.inside, 3),  # the same steps without fetching and collating batches
        "peak_rss_mib": round(rss_mib, 1),  # at the end of the timed steps
        "peak_rss_mib_with_eval": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10, 1),
        "load_average": timer.load,
        "step_s": timer.each,
        "memory_plan": getattr(getattr(trainer, "memory_plan", None), "line", lambda: None)(),
        "cuda_peak_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
        "train_loss": round(output.training_loss, 4),
        # Tokens of the training set as the trainer prepared it: TRL's bfd packing truncates rows over its block.
        "dataset_tokens": sum(len(ids) for ids in trainer.train_dataset["input_ids"]),
        "dataset_rows": len(trainer.train_dataset),
        "torch_threads": torch.get_num_threads(),
        "data": data_info,
    }


def medexp_trainer(args, cfg, tokenizer, data, precision, timer):
    """Exactly what medexp.train runs for a one-stage run: load_model, then build_trainer (no progress bar or
    MLflow callback, with tracking off they would only draw and log)."""
    import torch
    from transformers import set_seed

    from medexp.training.batching import choose_batching
    from medexp.training.model import load_model
    from medexp.training.trainer import build_trainer

    set_seed(cfg.seed)
    model = load_model(cfg.model, cfg.lora, precision, cfg.trainer.gradient_checkpointing)
    output_dir = Path(cfg.paths.output_dir)
    trainer = build_trainer(cfg, model, tokenizer, data, output_dir, precision, [timer])
    choice = choose_batching(cfg.trainer, cfg.model, cuda=torch.cuda.is_available())
    return trainer, choice.mode


def trl_trainer(args, cfg, data, precision, batching, timer):
    """A plain TRL script as users write it: prompt/completion conversations, a model and tokenizer from the
    directory, a LoraConfig, SFTConfig, SFTTrainer. Precision and activation checkpointing are set to medexp's
    (TRL's own defaults are bf16 and checkpointing on): fp32, or for (f) `bf16=True` (autocast) on fp32 weights,
    as medexp's bf16_autocast. Activation checkpointing is off, as in medexp's default."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import SFTConfig, SFTTrainer

    from medexp.data import chat_messages

    system_prompt = str(cfg.dataset.system_prompt).strip()
    rows = []
    for question, answer in data.train_pairs:
        messages = chat_messages(system_prompt, question, answer)
        rows.append({"prompt": messages[:2], "completion": messages[2:]})
    dataset = Dataset.from_list(rows)

    directory = model_dir(args)
    set_seed(args.seed)
    model = AutoModelForCausalLM.from_pretrained(
        directory, dtype=torch.float32, attn_implementation=args.attn
    )
    tokenizer = AutoTokenizer.from_pretrained(directory)
    lora = cfg.lora
    peft_config = LoraConfig(
        r=int(lora.r),
        lora_alpha=float(lora.alpha),
        lora_dropout=float(lora.dropout),
        target_modules=str(lora.target_modules),
        bias=str(lora.bias),
        task_type="CAUSAL_LM",
    )
    sft_args = SFTConfig(
        output_dir=str(args.workdir / f"trl_{args.variant}"),
        seed=args.seed,
        learning_rate=float(cfg.trainer.learning_rate),
        max_steps=args.warmup_steps + args.steps,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        bf16=precision == "bf16",
        use_cpu=not torch.cuda.is_available(),
        activation_checkpointing=False,
        dataloader_pin_memory=torch.cuda.is_available(),
        completion_only_loss=True,
        packing=batching == "packing",
        # Packing uses TRL's default block; unpacked, the same limit as medexp's, so no row is truncated.
        max_length=TRL_PACKING_LENGTH if batching == "packing" else args.max_tokens,
        train_sampling_strategy="group_by_length" if batching == "group_by_length" else "random",
    )
    trainer = SFTTrainer(
        model=model,
        args=sft_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[timer],
    )
    return trainer, "packing (bfd)" if batching == "packing" else batching


if __name__ == "__main__":
    main()
