"""One trained run for the serving tests: test_use.py and test_openai_surface.py serve, export and score the same
tiny model, so it is trained once per session (~20 s) rather than once per module."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    from medexp.train import train
    from tests.helpers import compose_config

    tmp = tmp_path_factory.mktemp("served")
    cfg = compose_config(["experiment=smoke", "eval=none", "trainer.max_steps=20"], tmp)
    return cfg, train(cfg), tmp
