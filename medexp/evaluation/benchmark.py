"""Standard benchmarks through lm-evaluation-harness (`python -m medexp.benchmark`): the trained adapter and its
base on lm-eval tasks (PubMedQA, MedMCQA, MedQA, or a local task definition), logged as bench/<task>/<metric>,
bench/base/<task>/<metric> and bench/delta/<task>/<metric> (adapted - base) with a before/after table.

The model is loaded once, the medexp way (QLoRA, PiSSA and resumed adapters included), and handed to lm-eval as
an object; the base is the same model with the adapter off (`as_base`), so the two differ only by the adapter.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from medexp.config import UserError

log = logging.getLogger("medexp.benchmark")
INSTALL = 'pip install -e ".[bench]"'
# medexp's own task definitions, searched after lm-eval's so that they win: pubmedqa (lm-eval's reads a dataset
# loading script that datasets >= 4 refuses).
TASKS_DIR = Path(__file__).resolve().parents[1] / "assets" / "bench"
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_\-./ ]")  # what MLflow allows in a metric name


def task_manager(include_path: str | None, tasks: list[str] | None = None) -> Any:
    """lm-eval's task index, with the tasks defined under `include_path` (a folder of task YAMLs) added. Where
    every one of `tasks` is a plain task of medexp's or of that folder, the index holds those folders alone:
    indexing lm-eval's own few thousand task files costs ~6 s of CPU that such a run never uses."""
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise UserError(
            f"python -m medexp.benchmark needs lm-evaluation-harness, which is not installed. Install the "
            f"benchmark extra: {INSTALL}"
        ) from None
    if include_path is not None and not Path(include_path).expanduser().is_dir():
        raise UserError(
            f"include_path={include_path!r} is not a directory. Give a folder holding lm-eval task YAML files "
            "(each with task:, dataset_path:, doc_to_text:, ...), or include_path=null for lm-eval's own tasks."
        )
    paths = [str(TASKS_DIR)]
    if include_path is not None:
        paths.append(str(Path(include_path).expanduser().resolve()))
    if tasks:
        local = TaskManager(include_path=paths, include_defaults=False)
        index = local.task_index
        if all(t in index and index[t].kind.name == "TASK" for t in tasks):  # no group, no tag, no class
            return local
    return TaskManager(include_path=paths)


def check_tasks(tasks: list[str], manager: Any) -> None:
    """Every task (or group, or tag) must be one lm-eval knows, before any model is loaded."""
    known = set(manager.all_tasks)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        hints = {t: difflib.get_close_matches(t, known, n=3, cutoff=0.6) for t in unknown}
        said = "; ".join(
            f"{t!r}" + (f" (did you mean {', '.join(h)}?)" if h else "") for t, h in hints.items()
        )
        raise UserError(
            f"lm-evaluation-harness has no task {said}. The medical ones are pubmedqa, medmcqa and "
            "medqa_4options; `lm-eval ls tasks` lists all. A task of your own is a YAML file in a folder given as "
            "include_path=<folder> (see the README's benchmark section)."
        )


def run_tasks(model: Any, tokenizer: Any, cfg: DictConfig, manager: Any, system_prompt: str | None) -> dict:
    """lm-eval's `simple_evaluate` on an already-loaded model; returns its result dict."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=int(cfg.batch_size))
    return simple_evaluate(
        model=lm,
        tasks=list(cfg.tasks),
        num_fewshot=cfg.num_fewshot,
        limit=cfg.limit,
        task_manager=manager,
        apply_chat_template=bool(cfg.chat_template),
        system_instruction=system_prompt if cfg.chat_template else None,
        log_samples=False,
        random_seed=int(cfg.seed),
        numpy_random_seed=int(cfg.seed),
        torch_random_seed=int(cfg.seed),
        fewshot_random_seed=int(cfg.seed),
    )


def task_metrics(results: dict) -> dict[str, float]:
    """{"<task>/<metric>": value} from lm-eval's results: `acc,none` -> acc, `exact_match,strict-match` ->
    exact_match/strict-match; non-numbers (lm-eval writes "N/A" for a missing stderr) are left out."""
    metrics: dict[str, float] = {}
    for task, values in results.get("results", {}).items():
        for key, value in values.items():
            if "," not in key or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            metric, _, filt = key.partition(",")
            name = f"{task}/{metric}" + ("" if filt == "none" else f"/{filt}")
            metrics[_UNSAFE_NAME.sub("_", name)] = float(value)
    return metrics


def bench_metrics(adapted: dict[str, float], base: dict[str, float] | None) -> dict[str, float]:
    """The names logged to MLflow: bench/<task>/<metric>, bench/base/..., bench/delta/... (no delta of a stderr)."""
    out = {f"bench/{k}": v for k, v in adapted.items()}
    for k, v in (base or {}).items():
        out[f"bench/base/{k}"] = v
        if k in adapted and "_stderr" not in k:
            out[f"bench/delta/{k}"] = adapted[k] - v
    return out


def table(adapted: dict[str, float], base: dict[str, float] | None) -> str:
    """The before/after table in markdown: one row per task and metric, the stderr beside its value."""
    rows = ["| task | metric | base | adapted | delta |", "|---|---|---|---|---|"]
    base = base or {}

    def shown(values: dict[str, float], key: str) -> str:
        if key not in values:
            return ""
        task, _, rest = key.partition("/")
        metric, _, filt = rest.partition("/")
        err = values.get(f"{task}/{metric}_stderr" + (f"/{filt}" if filt else ""))
        return _num(values[key]) + (f" ± {_num(err)}" if err else "")

    for key in sorted(k for k in adapted if "_stderr" not in k):
        task, _, metric = key.partition("/")
        delta = _num(adapted[key] - base[key], "+") if key in base else ""
        rows.append(f"| {task} | {metric} | {shown(base, key)} | {shown(adapted, key)} | {delta} |")
    return "\n".join(rows)


def _num(value: float, sign: str = "") -> str:
    """4 decimals for scores; 4 significant digits for the huge (a base model's perplexity can be 1e50)."""
    return f"{value:{sign}.4f}" if abs(value) < 1e5 else f"{value:{sign}.4g}"


def summary(results: dict) -> dict:
    """What of lm-eval's result dict is worth keeping in a file: scores, task versions, shots and sample counts."""
    keep = ("results", "groups", "group_subtasks", "versions", "n-shot", "n-samples", "higher_is_better")
    out = {k: results[k] for k in keep if k in results}
    out["lm_eval_version"] = results.get("lm_eval_version")
    return json.loads(json.dumps(out, default=str))


def benchmark_source(cfg: DictConfig) -> dict[str, float]:
    """`python -m medexp.benchmark`: the tasks on the source's adapter and on its base, logged into the source's
    MLflow run (a new run when the source has none), the table printed and written under the output directory."""
    from medexp.config import trained_system_prompt
    from medexp.training.source import resolve_source

    output_dir = Path(cfg.paths.output_dir)
    manager = task_manager(cfg.include_path, list(cfg.tasks))  # names checked before any model is loaded
    check_tasks(list(cfg.tasks), manager)
    trained = resolve_source(cfg, output_dir / "source")
    system_prompt = trained_system_prompt(trained.config)

    from medexp.evaluation.generation import as_base
    from medexp.training.model import resolve_precision
    from medexp.training.source import load_trained

    model, tokenizer = load_trained(trained, resolve_precision(cfg.precision))
    model.eval()
    log.info("benchmarking the adapter on %s", ", ".join(cfg.tasks))
    adapted_raw = run_tasks(model, tokenizer, cfg, manager, system_prompt)
    base_raw = None
    if cfg.base:
        log.info("benchmarking the base model (adapter off) on the same tasks")
        with as_base(model):
            base_raw = run_tasks(model, tokenizer, cfg, manager, system_prompt)
    adapted, base = task_metrics(adapted_raw), task_metrics(base_raw) if base_raw else None
    metrics = bench_metrics(adapted, base)

    output_dir.mkdir(parents=True, exist_ok=True)
    shown = table(adapted, base)
    (output_dir / "benchmark.md").write_text(f"# Benchmarks: {cfg.source}\n\n{shown}\n")
    files = {"adapted": summary(adapted_raw)} | ({"base": summary(base_raw)} if base_raw else {})
    (output_dir / "benchmark.json").write_text(json.dumps(files, indent=2))
    run_id = _log(cfg, trained, metrics, output_dir)
    print(shown)
    log.info("results in %s%s", output_dir, f", logged to MLflow run {run_id}" if run_id else "")
    return metrics


def _log(cfg: DictConfig, trained: Any, metrics: dict[str, float], output_dir: Path) -> str | None:
    """Into the source's own run when it has one; else a new run (tracking permitting). Returns the run id."""
    from medexp.config import task_overrides
    from medexp.tracking import MlflowTracker

    settings = {
        "bench.tasks": ",".join(cfg.tasks),
        "bench.limit": str(cfg.limit),
        "bench.num_fewshot": str(cfg.num_fewshot),
        "bench.chat_template": str(cfg.chat_template),
    }
    if trained.run_id is not None and trained.tracking_uri is not None:
        from medexp.tracking.client import client_for

        tracker = MlflowTracker(client_for(trained.tracking_uri), trained.run_id)
        tracker.set_tags({"medexp.benchmarked_with": " ".join(task_overrides())} | settings)
        _send(tracker, metrics, output_dir)
        return trained.run_id
    if not cfg.tracking.enabled:
        return None
    from medexp.tracking.run import start_run

    tags = {"medexp.command": "benchmark", "medexp.source": str(Path(str(cfg.source)).resolve())}
    with start_run(cfg.tracking, tags, run_name="benchmark") as tracker:
        tracker.log_params(settings | {"model.name_or_path": str(trained.config.model.name_or_path)})
        _send(tracker, metrics, output_dir)
        return getattr(tracker, "run_id", None)


def _send(tracker: Any, metrics: dict[str, float], output_dir: Path) -> None:
    tracker.log_metrics(metrics, step=0)
    for name in ("benchmark.md", "benchmark.json"):
        tracker.log_artifact(output_dir / name, "benchmark")
