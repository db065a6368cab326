"""Fixtures: configs composed in-process (as `python -m medexp.train` would), outputs under tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from tests.helpers import compose_config


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    return lambda *overrides: compose_config(list(overrides), tmp_path)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from medexp.modeling import load_tokenizer

    return load_tokenizer(compose_config(["model=tiny"], Path("/nonexistent")).model)
