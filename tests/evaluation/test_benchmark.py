"""`python -m medexp.benchmark`: lm-evaluation-harness on a trained adapter and its base, offline, on task
definitions written here over local files (the real tasks' data is on the Hugging Face Hub)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import SAMPLE, TINY_MODEL

pytest.importorskip("lm_eval", reason='the benchmark extra: pip install -e ".[bench]"')

MCQ = [
    ("Which organ produces insulin?", ["Liver", "Pancreas", "Kidney", "Spleen"], 1),
    ("Which vitamin deficiency causes scurvy?", ["Vitamin A", "Vitamin B12", "Vitamin C", "Vitamin D"], 2),
    ("What does a glucometer measure?", ["Blood sugar", "Blood pressure", "Heart rhythm", "Lung volume"], 0),
    ("Which of these is an antibiotic?", ["Ibuprofen", "Insulin", "Amoxicillin", "Salbutamol"], 2),
]


PUBMEDQA_TASK = Path(__file__).resolve().parents[2] / "medexp" / "assets" / "bench" / "pubmedqa.yaml"
PUBMEDQA_ROWS = [
    {"pubid": pubid, "question": question, "final_decision": decision, "long_answer": "...",
     "context": {"contexts": [f"Background of {pubid}.", "Results."], "labels": ["BACKGROUND", "RESULTS"]}}
    for pubid, question, decision in [
        (12377809, "Is the test set kept?", "yes"),
        (24577079, "Are no answers kept?", "no"),
        (18284441, "Are maybe answers kept?", "maybe"),
        (1, "Is a training question dropped?", "yes"),
        (2, "Is another one dropped?", "no"),
    ]
]  # fmt: skip


def write_tasks(folder: Path) -> Path:
    """Two lm-eval tasks on local files: multiple choice (acc, acc_norm) and answer log-likelihood on MedQuAD
    sample pairs (perplexity), which the adapter trained on and so must improve over the base."""
    folder.mkdir(parents=True, exist_ok=True)
    mcq = folder / "mcq.jsonl"
    mcq.write_text("".join(json.dumps({"question": q, "choices": c, "answer": a}) + "\n" for q, c, a in MCQ))
    qa = folder / "qa.jsonl"
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()[:12]]
    # The answers' first words only: lm-eval's perplexity is exp of the mean per-answer log-likelihood, which
    # overflows for whole answers under the untrained base.
    short = [" " + " ".join(r["Answer"].split()[:8]) for r in rows]
    qa.write_text(
        "".join(json.dumps({"q": r["Question"], "a": a}) + "\n" for r, a in zip(rows, short, strict=True))
    )
    (folder / "tiny_mcq.yaml").write_text(
        f"task: tiny_mcq\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {mcq}\n"
        "output_type: multiple_choice\ntest_split: test\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: answer\n'
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\nmetadata:\n  version: 1.0\n"
    )
    (folder / "tiny_qa.yaml").write_text(
        f"task: tiny_qa\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {qa}\n"
        'output_type: loglikelihood\ntest_split: test\ndoc_to_text: "{{q}}"\ndoc_to_target: "{{a}}"\n'
        "metric_list:\n  - metric: perplexity\nmetadata:\n  version: 1.0\n"
    )
    # medexp's pubmedqa task (the official test set out of qiaojin/PubMedQA) on a local file of that schema: three
    # official test questions and two that are not, so process_docs must keep 3.
    pq = folder / "pubmedqa.jsonl"
    pq.write_text("".join(json.dumps(row) + "\n" for row in PUBMEDQA_ROWS))
    (folder / "pubmedqa_local.yaml").write_text(
        f"include: {PUBMEDQA_TASK}\ntask: pubmedqa_local\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    train: {pq}\n"
    )
    return folder


def benchmark(tmp: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "medexp.benchmark", f"paths.output_root={tmp / 'out'}", *args],
        cwd=tmp, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.fixture(scope="module")
def bench(trained, tmp_path_factory):
    """The session's shared smoke run (tests/conftest.py: eval=none, 20 steps, as the serving tests use it), with
    a directory of this module's own for the task definitions and the benchmark's outputs."""
    cfg, result, _ = trained
    tmp = tmp_path_factory.mktemp("bench")
    return cfg, result, tmp, write_tasks(tmp / "tasks")


def test_benchmark_logs_adapted_base_and_delta_into_the_training_run(bench):
    cfg, result, tmp, tasks = bench
    uri = str(cfg.tracking.uri)
    proc = benchmark(
        tmp,
        f"source={result.run_id}",
        f"tracking.uri={uri}",
        "tasks=[tiny_mcq,tiny_qa,pubmedqa_local]",
        f"include_path={tasks}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(uri)
    run = client.get_run(result.run_id)
    m = run.data.metrics
    for name in ("tiny_mcq/acc", "tiny_mcq/acc_norm", "tiny_qa/perplexity"):
        assert m[f"bench/delta/{name}"] == pytest.approx(m[f"bench/{name}"] - m[f"bench/base/{name}"])
    assert m["bench/tiny_mcq/acc"] in {0, 0.25, 0.5, 0.75, 1}  # 4 questions
    assert "bench/tiny_mcq/acc_stderr" in m and "bench/delta/tiny_mcq/acc_stderr" not in m
    # The adapter was trained on these answers: it must find them likelier than the base does.
    assert m["bench/tiny_qa/perplexity"] < 0.5 * m["bench/base/tiny_qa/perplexity"]
    assert {a.path for a in client.list_artifacts(result.run_id, "benchmark")} == {
        "benchmark/benchmark.md",
        "benchmark/benchmark.json",
    }
    assert run.data.tags["bench.tasks"] == "tiny_mcq,tiny_qa,pubmedqa_local"
    # medexp's pubmedqa definition ran through lm-eval: the official test questions only.
    summary = json.loads(next((tmp / "out" / "benchmark").glob("*/*/benchmark.json")).read_text())
    assert summary["adapted"]["n-samples"]["pubmedqa_local"]["effective"] == 3
    assert 0 <= m["bench/pubmedqa_local/acc"] <= 1
    # The before/after table, printed as logged.
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| tiny_qa | perplexity |"))
    cells = [c.split("±")[0].strip() for c in row.strip("|").split("|")]
    assert float(cells[2]) == pytest.approx(m["bench/base/tiny_qa/perplexity"], rel=1e-3)
    assert float(cells[3]) == pytest.approx(m["bench/tiny_qa/perplexity"], rel=1e-3)

    # "Adapter off" is the base model: lm-eval on the untouched tiny model gives the same figures.
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medexp.config import stage_configs

    system = str(stage_configs(cfg)[-1][1].dataset.system_prompt).strip()
    plain = HFLM(
        pretrained=AutoModelForCausalLM.from_pretrained(TINY_MODEL),
        tokenizer=AutoTokenizer.from_pretrained(TINY_MODEL),
        batch_size=8,
    )
    # tiny_qa is all it needs: no index of lm-eval's own tasks (~6 s of CPU)
    direct = lm_eval.simple_evaluate(
        model=plain,
        tasks=["tiny_qa"],
        task_manager=TaskManager(include_path=str(tasks), include_defaults=False),
        apply_chat_template=True,
        system_instruction=system,
        log_samples=False,
    )
    assert direct["results"]["tiny_qa"]["perplexity,none"] == pytest.approx(
        m["bench/base/tiny_qa/perplexity"], rel=1e-4
    )


def test_a_directory_without_a_run_gets_a_new_run(bench, tmp_path):
    """A run directory that records no MLflow run (trained with tracking=none, or copied): a new run."""
    _, result, _, tasks = bench
    copy = tmp_path / "copied_run"
    shutil.copytree(Path(result.output_dir) / "adapter", copy / "adapter")
    shutil.copy(Path(result.output_dir) / "config.yaml", copy / "config.yaml")
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    proc = benchmark(
        tmp_path, f"source={copy}", f"tracking.uri={uri}", "tasks=[tiny_mcq]", f"include_path={tasks}",
        "base=false", "limit=2",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name("medexp").experiment_id])
    assert run.data.tags["medexp.command"] == "benchmark" and run.info.status == "FINISHED"
    assert run.data.params["bench.limit"] == "2"
    assert set(run.data.metrics) == {"bench/tiny_mcq/acc", "bench/tiny_mcq/acc_stderr", "bench/tiny_mcq/acc_norm",
                                     "bench/tiny_mcq/acc_norm_stderr"}  # fmt: skip
    written = next((tmp_path / "out" / "benchmark").glob("*/*/benchmark.json"))
    assert json.loads(written.read_text())["adapted"]["n-samples"]["tiny_mcq"]["effective"] == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["tasks=[pubmedqa,medmcqa_v2]"],
            "lm-evaluation-harness has no task 'medmcqa_v2' (did you mean medmcqa",
        ),
        (["tasks=[]"], "tasks is empty"),
        (["include_path=/no/such/folder"], "include_path='/no/such/folder' is not a directory"),
        (["limit=0"], "limit must be a whole number >= 1 (got 0)"),
        (["num_fewshot=-1"], "num_fewshot must be a whole number >= 0 (got -1)"),
        (["chat_template=perhaps"], "chat_template"),
    ],
)
def test_bad_benchmark_settings_fail_in_one_paragraph_before_loading_a_model(tmp_path, args, message):
    proc = benchmark(tmp_path, "source=/nonexistent/run", *args, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("medexp: error:") and message in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_medexp_s_pubmedqa_replaces_lm_eval_s_and_keeps_the_official_test_set():
    """lm-eval's pubmedqa reads bigbio/pubmed_qa, a loading script datasets >= 4 refuses: medexp's own definition
    (qiaojin/PubMedQA, parquet) takes its name, filtered to the 500 PubMed ids of the official test set."""
    import importlib.util

    from datasets import Dataset

    from medexp.evaluation.benchmark import task_manager

    entry = task_manager(None).task_index["pubmedqa"]
    assert entry.yaml_path == PUBMEDQA_TASK and entry.cfg["dataset_path"] == "qiaojin/PubMedQA"
    # asked for medexp's tasks alone, the index skips lm-eval's own (a name it lacks gets the full one, as the
    # bad-settings test's medmcqa_v2 does)
    alone = task_manager(None, ["pubmedqa"])
    assert alone.task_index["pubmedqa"].yaml_path == PUBMEDQA_TASK and "medmcqa" not in alone.all_tasks
    spec = importlib.util.spec_from_file_location("pq", PUBMEDQA_TASK.with_suffix(".py"))
    pq = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pq)
    ids = pq.test_ids()
    assert len(ids) == 500 and "12377809" in ids
    kept = pq.test_set(Dataset.from_list(PUBMEDQA_ROWS))
    assert [r["pubid"] for r in kept] == [12377809, 24577079, 18284441]
    assert pq.doc_to_text(kept[0]) == (
        "Abstract: Background of 12377809.\nResults.\nQuestion: Is the test set kept?\nAnswer:"
    )
