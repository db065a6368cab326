"""The bad-input matrix: every command, refused in one short paragraph that names the bad value, with a non-zero
exit, no traceback, and nothing created or changed in the directory it ran in (no run folder, no MLflow store, no
RUNNING run). The commands run in-process, as `python -m medexp.<command> ...` would run them, so the matrix stays
fast: almost every case fails before torch is imported."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

from tests.helpers import SAMPLE

GOOD_ROW = {"Question": "What is anemia?", "Answer": "A lack of healthy red blood cells."}

# The files a case may name, written into the directory the command runs in.
FILES: dict[str, bytes] = {
    "empty.csv": b"",
    "empty.jsonl": b"",
    "blank_lines.jsonl": b"\n\n  \n",
    "header_only.csv": b"Question,Answer\n",
    "header_only.tsv.csv": b"Question\tAnswer\n",
    "binary.jsonl": bytes(range(256)) * 4,
    "binary.parquet": b"PAR1" + bytes(range(200)),
    "binary.csv": b"\x00\x01\x02\xff\xfe,\x00\n\xff,\xfe\n",
    "latin1.csv": "Question,Answer\nCafé au lait spots?,Pigmented skin patches.\n".encode("latin-1"),
    "utf16.jsonl": json.dumps(GOOD_ROW).encode("utf-16"),
    "truncated.jsonl": (json.dumps(GOOD_ROW) + '\n{"Question": "What is a fever?", "Ans').encode(),
    "truncated.json": b'[{"Question": "What is a fever?", "Answer": "A raised',
    "not_objects.jsonl": b"[1, 2]\n[3, 4]\n",
    "scalar.json": b'"just a string"',
    "missing_answer_column.jsonl": json.dumps({"Question": "What is anemia?"}).encode(),
    "null_questions.jsonl": b'{"Question": null, "Answer": "x"}\n{"Question": null, "Answer": "y"}\n',
    "null_answers.jsonl": b'{"Question": "a?", "Answer": null}\n{"Question": "b?", "Answer": null}\n',
    "nan_answers.jsonl": b'{"Question": "a?", "Answer": NaN}\n{"Question": "b?", "Answer": NaN}\n',
    "empty_cells.csv": b"Question,Answer\n,\n ,  \n",
    "list_questions.jsonl": b'{"Question": ["a?"], "Answer": "x"}\n',
    "dict_answers.jsonl": b'{"Question": "a?", "Answer": {"text": "x"}}\n',
    "bool_answers.jsonl": b'{"Question": "a?", "Answer": true}\n',
    "one_row.jsonl": json.dumps(GOOD_ROW).encode(),
    "oversized.jsonl": (json.dumps({"Question": "What is it?", "Answer": "word " * 50_000}) + "\n").encode()
    * 3,
    "unknown.xlsx": b"PK\x03\x04 not a spreadsheet medexp reads",
    "a_file": b"not a folder",
    "safety_bad_json.jsonl": b'{"prompt": "x", "response": \n',
    "safety_missing_field.jsonl": b'{"prompt": "x"}\n',
    "safety_non_text.jsonl": b'{"prompt": "x", "response": 42}\n',
    "safety_empty.jsonl": b"",
    "blank.txt": b"\n   \n\n",
    "no_chosen.jsonl": b'{"prompt": "q", "answer": "a", "rejected": "b"}\n',
    "no_assistant.jsonl": b'{"messages": [{"role": "user", "content": "Hello?"}]}\n' * 2,
    "no_label.jsonl": b'{"prompt": "q", "completion": "a"}\n{"prompt": "r", "completion": "b"}\n',
    "unknown_labels.jsonl": b'{"prompt": "q", "completion": "a", "label": "meh"}\n'
    b'{"prompt": "r", "completion": "b", "label": "perhaps"}\n',
    # run directories (config.yaml + adapter/) for serving several adapters on one base (issue 27)
    **{
        f"{run}/{name}": data
        for run, base, dora in (
            ("base_a", "base-a", False),
            ("base_a2", "base-a", False),
            ("base_b", "base-b", False),
            ("dora_a", "base-a", True),
        )
        for name, data in (
            ("config.yaml", f"model:\n  name_or_path: {base}\nlora:\n  quantization: null\n".encode()),
            ("adapter/adapter_config.json", json.dumps({"use_dora": dora}).encode()),
        )
    },
}
FOLDERS = ("a_folder.jsonl", "not_a_run")

HEX_ID = "0123456789abcdef0123456789abcdef"

# (command, arguments, what the message must name). `dataset.path` cases use the smoke experiment, so nothing
# reaches the network; a case's message names the bad value (or the key that holds it).
T = ["experiment=smoke"]
CASES: list[tuple[str, list[str], str]] = [
    # --- data files: empty, header-only, binary, wrongly encoded, truncated, oversized ------------------------
    *[("train", [*T, f"dataset.path={name}"], name) for name in (
        "empty.csv", "empty.jsonl", "header_only.csv", "binary.jsonl", "binary.parquet", "latin1.csv",
        "utf16.jsonl", "truncated.jsonl", "truncated.json", "not_objects.jsonl", "scalar.json", "unknown.xlsx",
    )],
    ("train", [*T, "dataset.path=nowhere.jsonl"], "nowhere.jsonl"),
    ("train", [*T, "dataset=text", "dataset.path=blank.txt", "eval=none"], "blank.txt"),
    ("train", [*T, "dataset=pretrain_sample"], "eval.generation"),
    ("train", [*T, "dataset.path=a_folder.jsonl"], "a_folder.jsonl"),
    ("train", [*T, "dataset.path=oversized.jsonl"], "too_long"),
    ("train", [*T, "dataset.path=one_row.jsonl"], "at least 2"),
    # --- missing, null, NaN and non-text values in each column ------------------------------------------------
    ("train", [*T, "dataset.path=missing_answer_column.jsonl"], "Answer"),
    ("train", [*T, "dataset.path=null_questions.jsonl"], "empty question"),
    ("train", [*T, "dataset.path=null_answers.jsonl"], "empty answer"),
    ("train", [*T, "dataset.path=nan_answers.jsonl"], "empty answer"),
    ("train", [*T, "dataset.path=list_questions.jsonl"], "non text question"),
    ("train", [*T, "dataset.path=dict_answers.jsonl"], "non text answer"),
    ("train", [*T, "dataset.path=bool_answers.jsonl"], "non text answer"),
    ("train", [*T, f"dataset.path={SAMPLE}", "dataset.question_field=Query"], "Query"),
    ("train", [*T, f"dataset.path={SAMPLE}", "dataset.answer_field=null", "dataset.question_field=Answer"], "Answer"),
    # --- wrong types and out-of-range values of numeric options -----------------------------------------------
    ("train", [*T, "lora.r=0"], "lora.r"),
    ("train", [*T, "lora.r=-4"], "lora.r"),
    ("train", [*T, "lora.r=eight"], "lora.r"),
    ("train", [*T, "lora.alpha=-1"], "lora.alpha"),
    ("train", [*T, "lora.dropout=1.5"], "lora.dropout"),
    ("train", [*T, "lora.dropout=nan"], "lora.dropout"),
    ("train", [*T, "lora.init=svd"], "lora.init"),
    ("train", [*T, "lora.init=pissa", "lora.use_dora=true"], "use_dora"),
    ("train", [*T, "lora.init=olora", "lora.train_modules=[norm]"], "train_modules"),
    ("train", [*T, "lora.train_modules=[embeddings]"], "embeddings"),
    ("train", [*T, "trainer.neftune_noise_alpha=0"], "neftune_noise_alpha"),
    ("train", [*T, "trainer.beta=0"], "trainer.beta"),
    ("train", [*T, "dataset=file", "dataset.path=no_chosen.jsonl", "dataset.kind=preference"], "chosen"),
    ("train", [*T, "dataset=file", "dataset.path=no_assistant.jsonl"], "no assistant turn"),
    ("train", [*T, "eval.generation.judge.enabled=true"], "eval.generation.judge.base_url"),
    ("train", [*T, "trainer.learning_rate=-0.001"], "trainer.learning_rate"),
    ("train", [*T, "trainer.learning_rate=fast"], "trainer.learning_rate"),
    ("train", [*T, "trainer.learning_rate=inf"], "trainer.learning_rate"),
    ("train", [*T, "trainer.batch_size=0"], "trainer.batch_size"),
    ("train", [*T, "trainer.batch_size=[8]"], "trainer.batch_size"),
    ("train", [*T, "trainer.epochs=-1"], "trainer.epochs"),
    ("train", [*T, "trainer.effective_batch_size=0"], "effective_batch_size"),
    ("train", [*T, "dataset.max_tokens=0"], "dataset.max_tokens"),
    ("train", [*T, "dataset.val_fraction=1.5"], "dataset.val_fraction"),
    ("train", [*T, "seed=abc"], "seed"),
    ("train", [*T, "tracking.system_metrics_interval=0"], "system_metrics_interval"),
    # --- unknown option names and choices ---------------------------------------------------------------------
    ("train", [*T, "lora.rank=8"], "rank"),
    ("train", [*T, "trainer.lr=1e-4"], "lr"),
    ("train", [*T, "model=gpt5"], "gpt5"),
    ("train", [*T, "dataset=medqaud"], "medqaud"),
    ("train", [*T, "trainer.batching=magic"], "magic"),
    ("train", [*T, "trainer.precision=fp8"], "fp8"),
    # --- unreachable or unwritable stores and paths -----------------------------------------------------------
    ("train", [*T, "tracking.uri=file:./mlruns"], "file store"),
    ("train", [*T, "tracking.uri=sqlite:///a_file/mlflow.db"], "a_file"),
    ("train", [*T, "tracking.uri=http://127.0.0.1:9"], "127.0.0.1:9"),
    ("train", [*T, "paths.output_root=a_file/outputs"], "a_file"),
    ("train", [*T, "model.name_or_path=no/such-model-here"], "no/such-model-here"),
    ("train", [*T, "model.name_or_path=./missing_model_dir"], "missing_model_dir"),
    # --- the sweeper ------------------------------------------------------------------------------------------
    ("train", ["--multirun", "hparams_search=lora_optuna", *T, "hydra.sweeper.n_trials=0"], "n_trials"),
    ("train", ["--multirun", "hparams_search=lora_optuna", *T, "hydra.sweeper.direction=sideways"], "sideways"),
    ("train", ["--multirun", "hparams_search=lora_optuna", *T, "hydra.sweeper.storage=nosuchdb://x"], "nosuchdb"),
    ("train", ["--multirun", "hparams_search=lora_optuna", *T, "hydra.sweeper.pruner.name=sometimes"], "sometimes"),
    ("train", ["--multirun", "hparams_search=lora_optuna", *T, "hydra.sweeper.params.lora.r=choice()"], "lora.r"),
    ("train", ["--multirun", "hparams_search=lora_optuna", *T, 'hydra.sweeper.constraints=["eval/made_up >= 1"]'], "eval/made_up"),
    ("train", ["--multirun", "hparams_search=lora_optuna", *T, 'hydra.sweeper.constraints=["eval/safety_pass_rate >= 0.9"]'], "eval.safety.enabled"),
    ("train", ["--multirun", "hparams_search=lora_optuna", *T, 'hydra.sweeper.constraints=["eval_loss < 3"]'], "eval_loss < 3"),
    ("train", ["--multirun", "hparams_search=lora_optuna", *T, "optimized_metric=[eval_loss,eval/perplexity]", "hydra.sweeper.directions=[minimize,maximize]"], "cannot prune"),
    ("train", [*T, "optimized_metric=eval/rouge_l", "eval.generation.enabled=false"], "eval.generation.enabled"),
    ("train", ["--multirun", "hparams_search=lora_optuna", *T, "hydra/launcher=rq"], "hydra-rq-launcher"),
    ("train", ["--multirun", "hparams_search=lora_optuna", *T, "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=3"], "n_jobs=3"),
    # --- sources that are not runs: evaluate, benchmark, export, chat, serve ---------------------------------------------
    ("evaluate", ["source=nowhere"], "nowhere"),
    ("evaluate", ["source=not_a_run"], "not_a_run"),
    ("evaluate", [f"source={HEX_ID}"], HEX_ID),
    ("evaluate", ["source=models:/no-such-model/1"], "no-such-model"),
    ("evaluate", ["source=not_a_run", "eval=nope"], "nope"),
    ("benchmark", ["source=not_a_run", "tasks=[no_such_task]"], "no_such_task"),
    ("benchmark", ["source=not_a_run", "batch_size=0"], "batch_size"),
    ("export", ["source=not_a_run", "output_dir=exported"], "not_a_run"),
    ("export", ["source=nowhere"], "output_dir"),
    ("export", ["source=not_a_run", "output_dir=exported", "merge=perhaps"], "merge"),
    ("chat", ["source=not_a_run"], "not_a_run"),
    ("chat", ["source=not_a_run", "temperature=-1"], "temperature"),
    ("serve", ["source=not_a_run", "port=0"], "port"),
    ("serve", ["source=not_a_run", "port=http"], "port"),
    ("serve", ["source=not_a_run", "limits.max_tokens=-5"], "max_tokens"),
    # --- housekeeping and the safety scorer -------------------------------------------------------------------
    ("sync", ["runs=nowhere"], "nowhere"),
    ("sync", ["runs=not_a_run"], "not_a_run"),
    ("sync", ["runs=not_a_run", "mark_stale=maybe"], "mark_stale"),
    ("safety", ["safety_bad_json.jsonl"], "safety_bad_json.jsonl"),
    ("safety", ["safety_missing_field.jsonl"], "response"),
    ("safety", ["safety_non_text.jsonl"], "response"),
    ("safety", ["binary.jsonl"], "binary.jsonl"),
    ("safety", ["a_folder.jsonl"], "a_folder.jsonl"),
    ("safety", [], "one argument"),
    # --- a user's own evaluation suite, and a study's optimized metric ------------------------------------------
    ("train", [*T, "+eval.suites.mine._target_=no_such_module.MySuite"], "no_such_module"),
    ("train", ["--multirun", "hparams_search=lora_optuna", *T, "optimized_metric=eval/made_up"], "eval/made_up"),
    # --- a SQLite store under a folder that cannot be made, though permission bits say it can (root, /proc) ---
    ("train", [*T, "tracking.uri=sqlite:////proc/nope/x.db"], "/proc/nope/x.db"),
    # --- KTO on unpaired rows, ORPO / SimPO without a reference model (issue 25) -----------------------------
    ("train", [*T, "dataset=file", "dataset.path=no_label.jsonl", "dataset.kind=unpaired"], "label column"),
    ("train", [*T, "dataset=file", "dataset.path=unknown_labels.jsonl", "dataset.kind=unpaired"], "2 unknown label"),
    ("train", ["experiment=sft_then_orpo_smoke", "+stages.orpo.trainer.preference_loss=ipo"], "preference_loss=ipo"),
    ("train", ["experiment=sft_then_simpo_smoke", "trainer.preference_sft_weight=1"], "preference_sft_weight=1"),
    # --- grpo stages: rewards, group size, data (a reward that raises or miscounts mid-training: test_grpo.py) --
    ("train", ["experiment=grpo_smoke", "reward.choise_correct=1"], "reward.choise_correct"),
    ("train", ["experiment=grpo_smoke", "reward.reference_overlap=0"], "every reward weight is 0"),
    ("train", ["experiment=grpo_smoke", "+reward.custom.mine={_target_:no_such_module.score}"], "no_such_module"),
    ("train", ["experiment=grpo_smoke", "reward.choice_correct=1"], "reward.choice_correct"),
    ("train", ["experiment=grpo_smoke", "stages.grpo.trainer.grpo_num_generations=3"], "grpo_num_generations=3"),
    ("train", ["experiment=grpo_smoke", "dataset@stages.grpo.dataset=pretrain_sample"], "kind=grpo"),
    ("train", [*T, "dataset.answer_format=final_line"], "answer_format=final_line"),  # free text: no choice
    # --- a GRPO sweep judged on what its run never logs: no multiple-choice questions in free-text data ------
    ("train", ["--multirun", "hparams_search=grpo_optuna", "experiment=grpo_smoke"], "never logs"),
    ("train", ["--multirun", "hparams_search=grpo_optuna", "experiment=grpo_smoke", "optimized_metric=eval_loss", "hydra.sweeper.direction=minimize", 'hydra.sweeper.constraints=["eval/mc/validation/accuracy >= 0.3"]'], "never logs"),
    ("train", ["--multirun", "hparams_search=grpo_optuna", "experiment=grpo_smoke", "optimized_metric=eval_loss", "hydra.sweeper.direction=minimize", 'hydra.sweeper.constraints=["rewards/safety/mean >= 0"]'], "rewards/safety/mean"),
    # --- serve: the cap on choices per request (issue 27) -----------------------------------------------------
    ("serve", ["source=not_a_run", "limits.max_n=0"], "max_n"),
    # --- trainer.memory_budget_gb: not a size; below what one sequence of the run needs ------------------------
    ("train", [*T, "trainer.memory_budget_gb=lots"], "trainer.memory_budget_gb"),
    ("train", [*T, "trainer.memory_budget_gb=0.2"], "trainer.memory_budget_gb=0.2"),
    # --- serve: several adapters that cannot share one loaded base (issue 27) ----------------------------------
    ("serve", ["source=[base_a,base_b]"], "different base models"),
    ("serve", ["source=[base_a,dora_a]"], "DoRA"),
    ("serve", ["source=[base_a,base_a]"], "twice"),
    ("serve", ["source=[base_a,base_a2]", "merge=true"], "merge=true"),
    ("serve", ["source=[base_a,base_a2]", "model_name=mine"], "model_name='mine'"),
    ("serve", ["source=[]"], "names no trained model"),
    # --- export to GGUF (issue 27): an unknown type, an unknown format, a converter folder without the converter --
    ("export", ["source=not_a_run", "output_dir=exported", "format=gguf", "gguf.quant=q5"], "gguf.quant='q5'"),
    ("export", ["source=not_a_run", "output_dir=exported", "format=gguf", "gguf.lora_quant=q4_k_m"], "gguf.lora_quant='q4_k_m'"),
    ("export", ["source=not_a_run", "output_dir=exported", "format=ggml"], "ggml"),
    ("export", ["source=not_a_run", "output_dir=exported", "format=gguf", "gguf.converter_dir=a_folder.jsonl"], "gguf.converter_dir=a_folder.jsonl"),
    # --- serve: the sequences one forward pass decodes (issue 27, batching) -----------------------------------
    ("serve", ["source=not_a_run", "limits.max_batch=0"], "max_batch"),
]  # fmt: skip


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under root, with size and modification time for files (a folder's own mtime moves whenever
    an entry comes and goes, which is not a change the user sees)."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else (0, 0)
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad_input")
    for name, data in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    for name in FOLDERS:
        (root / name).mkdir()
    (root / "not_a_run" / "notes.txt").write_text("a folder, but no run.json")
    return root


def run_command(command: str, args: list[str]) -> int:
    """`python -m medexp.<command> *args`, in this process; returns its exit status."""
    module = importlib.import_module(f"medexp.{command}")
    argv = sys.argv
    sys.argv = [f"medexp.{command}", *args]
    try:
        if command == "train":
            module._check_sweeper_plugin(args)
        result = module.main()
        return int(result) if command == "safety" and result is not None else 0
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 1
    finally:
        sys.argv = argv


def refusal(command: str, args: list[str], workdir: Path, monkeypatch, capsys) -> str:
    """Runs the command offline in `workdir` and checks it was refused as the matrix asks: a non-zero exit, no
    traceback, one paragraph of under 900 characters, nothing created or changed. Returns that paragraph."""
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = snapshot(workdir)
    status = run_command(command, args)
    err = capsys.readouterr().err
    assert status != 0, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("medexp: error:")]
    assert len(errors) == 1, err
    assert len(errors[0]) < 900, errors[0]
    assert snapshot(workdir) == before, "the refused command created or changed files"
    return errors[0]


def test_the_matrix_is_broad():
    assert len(CASES) >= 60
    commands = {command for command, _, _ in CASES}
    assert commands == {"train", "evaluate", "benchmark", "export", "chat", "serve", "sync", "safety"}


@pytest.mark.parametrize(("command", "args", "named"), CASES, ids=[" ".join([c, *a]) for c, a, _ in CASES])
def test_bad_input_is_refused_in_one_paragraph(command, args, named, workdir, monkeypatch, capsys):
    error = refusal(command, args, workdir, monkeypatch, capsys)
    assert named in error, error


# --- issue 26: bf16 forced on hardware without bf16 matmuls (this test machine's CPU has them: the probe is faked) --
NO_BF16_CASES = [
    ("train", [*T, "trainer.precision=bf16"], "trainer.precision=bf16:"),
    ("train", [*T, "trainer.precision=bf16_autocast"], "trainer.precision=bf16_autocast:"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("command", "args", "named"), NO_BF16_CASES, ids=[" ".join(a) for _, a, _ in NO_BF16_CASES]
)
def test_bf16_forced_without_bf16_hardware_is_refused(command, args, named, workdir, monkeypatch, capsys):
    """The matrix's checks, on a CPU faked to lack AVX512-BF16 and AMX; the paragraph names what would work."""
    import torch

    from medexp.training import precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_bf16_instructions", list)
    error = refusal(command, args, workdir, monkeypatch, capsys)
    assert named in error and "trainer.precision=auto" in error and "trainer.precision=fp32" in error, error


# --- issue 26: torch.compile asked for where inductor cannot run (no C++ compiler on this faked CPU machine) -------
NO_COMPILE_CASES = [
    ("train", [*T, "trainer.compile=true"], "trainer.compile=true"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("command", "args", "named"), NO_COMPILE_CASES, ids=[" ".join(a) for _, a, _ in NO_COMPILE_CASES]
)
def test_compile_without_a_compiler_is_refused(command, args, named, workdir, monkeypatch, capsys):
    """The matrix's checks on a CPU machine whose PATH has no C++ compiler: the paragraph says what is missing and
    that trainer.compile=false trains."""
    import torch

    from medexp.training import compile as compile_module

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(compile_module.shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    error = refusal(command, args, workdir, monkeypatch, capsys)
    assert named in error and "C++ compiler" in error and "trainer.compile=false" in error, error


# --- issue 27: a GGUF type only llama.cpp's quantizer writes, with neither llama-cpp-python nor llama-quantize here --
def test_gguf_quant_without_a_quantizer_is_refused(workdir, monkeypatch, capsys):
    from medexp.serving import gguf

    # the converter is found, so what is missing is the quantizer
    monkeypatch.setattr(gguf, "converter_dir", lambda node: workdir)
    monkeypatch.setattr(gguf, "quantizer", lambda: None)
    args = ["source=not_a_run", "output_dir=exported", "format=gguf", "gguf.quant=q4_k_m"]
    error = refusal("export", args, workdir, monkeypatch, capsys)
    assert "gguf.quant=q4_k_m" in error and "llama-quantize" in error and "q8_0" in error, error
