"""Fixtures: configs composed in-process (as `python -m medexp.train` would), outputs under tmp_path."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from tests.helpers import compose_config


def pytest_configure(config: pytest.Config) -> None:
    """absl (imported by rouge-score) builds its log handler on whatever sys.stderr is when it is first imported
    (here: pytest's capture of one test), and closes that stream whenever logging's handlers are shut down while
    sys.stderr is another one, as Hydra's logging set-up does at each in-process command under `capsys`. Built
    now, on the real stderr, it never closes pytest's capture."""
    import absl.logging  # noqa: F401


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    return lambda *overrides: compose_config(list(overrides), tmp_path)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from medexp.training.model import load_tokenizer

    return load_tokenizer(compose_config(["model=tiny"], Path("/nonexistent")).model)


@pytest.fixture(scope="session")
def cli_smoke(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """`python -m medexp.train experiment=smoke` from a fresh directory, exactly as the README says; run once and
    shared by the tests that check its files (test_train) and its console output (test_console)."""
    cwd = tmp_path_factory.mktemp("cli_smoke")
    proc = subprocess.run(
        [sys.executable, "-m", "medexp.train", "experiment=smoke"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, cwd


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """One tiny smoke run trained without evaluation (20 steps, ~20 s), shared by the tests that serve, export,
    evaluate and benchmark a finished run (tests/serving, tests/evaluation/test_benchmark.py). Tests that log into
    its MLflow run add only their own keys, so none depends on another having run first."""
    from medexp.train import train

    tmp = tmp_path_factory.mktemp("served")
    cfg = compose_config(["experiment=smoke", "eval=none", "trainer.max_steps=20"], tmp)
    return cfg, train(cfg), tmp
