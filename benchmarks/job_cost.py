"""What a real job costs on this machine, extrapolated from measured training rates: one MedQuAD epoch and a
20-trial pruned sweep, for each model whose benchmarks/throughput.py report is given.

    python benchmarks/job_cost.py benchmarks/throughput_30l.json benchmarks/throughput_360m.json

How: an epoch's tokens are MedQuAD's pairs (16,000) less the 5% validation split, times the mean tokens of a
SmolLM2-tokenized conversation (system prompt, question, answer, chat template) of the length mix
benchmarks/throughput.py generates, counting only the pairs within dataset.max_tokens=1024 (medexp drops the
rest). Training time = those tokens / medexp's default variant's measured non-padding tokens/s (the report's (a)).
Evaluations: trainer=default evaluates every 100 optimizer steps of 16 sequences (~10 per epoch) on the ~800
validation pairs; an evaluation is a forward only, taken as half a training step per token (a LoRA backward on a
frozen base costs about one forward). A 20-trial sweep: 20 trials of one epoch each, times the share of steps the
default pruner (percentile 25 from the first evaluation) left running in benchmarks/pruning.json (57%).
Memory: the report's peak RSS of (a) at its batch and max length (a run at another batch scales its activations).
Rates at the report's batch size; a larger batch is usually a little faster per token on a CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAIRS, VAL_FRACTION, MAX_TOKENS = 16_000, 0.05, 1024
EVALS_PER_EPOCH = round(
    PAIRS * (1 - VAL_FRACTION) / 16 / 100
)  # trainer=default: 8 x 2 a step, eval_steps 100
EVAL_COST = 0.5  # a forward-only token against a training token
TRIALS, PRUNED_SHARE = 20, 0.57  # benchmarks/pruning.json: percentile 25, n_warmup_steps=0


def conversation_tokens(tokenizer_dir: Path, rows: int = 3000) -> dict:
    """Mean SmolLM2 tokens of a conversation of MedQuAD's length mix, and the share within MAX_TOKENS."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import throughput
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer

    from medexp.data import chat_messages

    system = str(OmegaConf.load(ROOT / "conf" / "dataset" / "medquad.yaml").system_prompt)
    path = Path(tempfile.mkdtemp()) / "rows.jsonl"
    throughput.write_rows(path, rows, seed=42)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    lengths = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        messages = chat_messages(system, row["Question"], row["Answer"])
        lengths.append(len(tokenizer.apply_chat_template(messages, tokenize=True)["input_ids"]))
    kept = [n for n in lengths if n <= MAX_TOKENS]
    return {"mean_kept": statistics.mean(kept), "kept_share": len(kept) / len(lengths), "rows": rows}


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path, help="benchmarks/throughput.py JSON reports")
    parser.add_argument("--tokenizer", type=Path, default=Path("/work/models/smollm2-135m-instruct"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "job_cost.json")
    args = parser.parse_args()
    mix = conversation_tokens(args.tokenizer)
    train_pairs = PAIRS * (1 - VAL_FRACTION) * mix["kept_share"]
    epoch_tokens = train_pairs * mix["mean_kept"]
    eval_tokens = EVALS_PER_EPOCH * PAIRS * VAL_FRACTION * mix["kept_share"] * mix["mean_kept"]
    rows = []
    for path in args.reports:
        rep = json.loads(path.read_text())
        a = next(r for r in rep["results"] if r["variant"] == "a")
        rate = a["tokens_per_s"]
        train_s = epoch_tokens / rate
        eval_s = eval_tokens * EVAL_COST / rate
        rows.append(
            {
                "report": path.name,
                "model": rep["settings"]["model"],
                "layers": rep["settings"]["layers"],
                "parameters": rep["settings"]["parameters"],
                "batch_size": rep["settings"]["batch_size"],
                "precision": a["precision"],
                "tokens_per_s": rate,
                "rounds_load": a.get("rounds_load"),
                "peak_rss_gib": round(a["peak_rss_mib"] / 1024, 1),
                "epoch_train_s": round(train_s),
                "epoch_eval_s": round(eval_s),
                "sweep_s": round(TRIALS * PRUNED_SHARE * (train_s + eval_s)),
            }
        )
    lines = [
        "| model | measured tokens/s (load) | peak RSS | one epoch: training | + evaluations | 20-trial pruned sweep |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        load = ", ".join(f"{x:.1f}" for x in r["rounds_load"] or [])
        lines.append(
            f"| {r['model']}, {r['layers']} layers ({r['parameters'] / 1e6:.0f} M), {r['precision']}, batch "
            f"{r['batch_size']} | {r['tokens_per_s']:.0f} ({load}) | {r['peak_rss_gib']} GB | "
            f"{hours(r['epoch_train_s'])} | {hours(r['epoch_eval_s'])} | {hours(r['sweep_s'])} |"
        )
    result = {
        "pairs": PAIRS,
        "val_fraction": VAL_FRACTION,
        "mix": mix,
        "epoch_tokens": round(epoch_tokens),
        "evals_per_epoch": EVALS_PER_EPOCH,
        "eval_cost": EVAL_COST,
        "trials": TRIALS,
        "pruned_share": PRUNED_SHARE,
        "rows": rows,
        "table": "\n".join(lines),
    }
    print(result["table"])
    print(
        f"epoch: {epoch_tokens:,.0f} training tokens ({mix['mean_kept']:.0f} a pair, {mix['kept_share']:.1%} kept)"
    )
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
