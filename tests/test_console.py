"""What `python -m medexp.train` prints: the choices line, one training bar, one evaluation bar, the summary, and
none of the libraries' noise. One smoke run (shared by the tests below) plus a few in-process checks."""

from __future__ import annotations

import json
import logging
import re

import pytest
from omegaconf import OmegaConf

CHOICES = (
    "medexp: model=tiny dataset=sample lora=default trainer=cpu eval=default tracking=mlflow experiment=smoke"
)


@pytest.fixture(scope="module")
def smoke(cli_smoke):
    """The README's CLI smoke run (40 steps, 8 held-out questions), shared with test_train."""
    proc, tmp = cli_smoke
    (run_dir,) = [p.parent for p in (tmp / "outputs").glob("*/*/run.json")]
    return proc.stdout + proc.stderr, run_dir


def test_no_tracebacks_warnings_or_library_noise(smoke):
    output, _ = smoke
    assert "Traceback" not in output
    assert "FutureWarning" not in output
    assert [line for line in output.splitlines() if "Warning:" in line] == []
    assert "[absl]" not in output  # rouge-score's "Using default tokenizer."
    assert "sentence_transformers" not in output
    assert "kernels-community" not in output  # bitsandbytes' hub-kernel notices at import (qlora extra)
    for bar in ("Loading weights", "Building labels"):  # transformers' and TRL's (datasets) bars
        assert bar not in output, bar
    assert re.search(r"(Map|Filter)( \(num_proc=\d+\))?:\s+\d+%", output) is None  # datasets' bars


def test_no_raw_log_dicts(smoke):
    output, _ = smoke
    assert re.search(r"\{'(loss|eval_loss|train_runtime|eval_runtime)'", output) is None
    assert "{'" not in output


def test_one_training_bar_and_one_evaluation_bar(smoke):
    output, _ = smoke
    updates = re.split(r"[\r\n]", output)
    train = [u for u in updates if re.match(r"train( \(evaluating\))?:", u)]
    assert train and re.match(
        r"train: 100%.*40/40 \[.*loss=[\d.]+, eval_loss=[\d.]+, tok/s=[\d,]+\]", train[-1]
    )
    assert any(u.startswith("train (evaluating):") for u in train)  # evaluations inside training say so
    evaluation = [u for u in updates if re.match(r"eval( \S+)?:", u)]
    # 8 questions answered in batches by the adapted and the base model, and 4 asked again one at a time by each
    # model for the per-request latency (eval.generation.latency_samples)
    assert evaluation and "24/24" in evaluation[-1]
    assert not [
        u for u in updates if re.search(r"\d+%\|", u) and u not in train + evaluation
    ]  # no other bars
    # Besides the two bars (redrawn in place with "\r"; text-mode capture turns those into line breaks), the
    # console is a screenful: a few log lines and the summary.
    lines = [u for u in updates if u.strip() and u not in train + evaluation]
    assert len(lines) <= 20, "\n".join(lines)


def test_choices_line_once(smoke):
    output, _ = smoke
    assert output.count("medexp: model=") == 1
    assert CHOICES in output


def test_summary(smoke):
    output, run_dir = smoke
    run = json.loads((run_dir / "run.json").read_text())
    summary = output[output.index("run finished") :]
    assert re.match(r"run finished: best eval_loss=\d+\.\d{4} \(base model \d+\.\d{4}\)\n", summary)
    assert re.search(r"eval            perplexity [\d.]+ \(base [\d.]+\)  rouge_l", summary)
    assert f"MLflow run      {run['run_id']} in experiment 'medexp-smoke'" in summary
    assert f"mlflow ui --backend-store-uri {run['tracking_uri']}" in summary
    assert f"adapter         {run_dir.resolve() / 'adapter'}" in summary
    assert f"python -m medexp.serve source={run_dir.resolve()}" in summary
    assert "eval/delta/" not in output  # the full metric dump is in MLflow, not on the console


def test_train_log_keeps_medexp_lines(smoke):
    _, run_dir = smoke
    train_log = (run_dir / "train.log").read_text()
    assert CHOICES in train_log
    assert "data: read 360 rows" in train_log
    assert "run finished: best eval_loss=" in train_log


def test_summary_without_tracking(tmp_path):
    from medexp.tracking import Tracker
    from medexp.tracking.summary import run_summary

    metrics = {"eval_loss": 1.5, "eval/mc/medqa/accuracy": 0.5, "eval/base/mc/medqa/accuracy": 0.25}
    metrics |= {"eval/mc/medqa/questions": 4, "eval/safety_pass_rate": 0.9}
    text = run_summary(OmegaConf.create({}), metrics, tmp_path, tmp_path / "adapter", Tracker())
    assert text.startswith("run finished: best eval_loss=1.5000\n")  # no base model: it was not measured
    assert "mc/medqa/accuracy 0.500 (base 0.250)  safety_pass_rate 0.900" in text
    assert "questions" not in text
    assert "MLflow          off (tracking=none)" in text


def test_summary_after_a_stage_judged_by_its_reward(tmp_path):
    """A GRPO last stage: its eval_loss is the policy loss (~0), so the summary names its eval_reward instead."""
    from medexp.tracking import Tracker
    from medexp.tracking.summary import run_summary

    metrics = {"eval_loss": 0.0, "eval_reward": 0.4375}
    progress = ("eval_reward", "maximize")
    text = run_summary(OmegaConf.create({}), metrics, tmp_path, tmp_path / "adapter", Tracker(), progress)
    assert text.startswith("run finished: last eval_reward=0.4375 (maximized)\n")
    assert "eval_loss" not in text


def test_quiet_helpers_restore_and_respect_verbose():
    import datasets
    from transformers.utils import logging as hf_logging

    from medexp.console import library_bars_off, quiet_logger

    before = hf_logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled()
    with library_bars_off():
        assert not hf_logging.is_progress_bar_enabled() and not datasets.is_progress_bar_enabled()
    assert (hf_logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled()) == before

    medexp_logger, probe = logging.getLogger("medexp"), logging.getLogger("medexp_test_library")
    level = medexp_logger.level
    try:
        medexp_logger.setLevel(logging.DEBUG)  # what hydra.verbose=medexp does
        quiet_logger(probe.name)
        assert probe.level == logging.NOTSET
        with library_bars_off():
            assert (hf_logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled()) == before
    finally:
        medexp_logger.setLevel(level)
    quiet_logger(probe.name)
    assert probe.level == logging.WARNING
