"""The serve command's settings, checked in-process by the rules beside ServeConfig and ServeLimits (the wording
test_use.py checks end to end through `python -m medexp.serve`), and the request rules of serving/protocol.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from medexp.config import UserError
from medexp.config.compose import compose_run_config
from medexp.config.rules import check_tree
from medexp.serving.protocol import ChatRequest, refusal


def serve_config(tmp_path: Path, *overrides: str):
    return compose_run_config(["source=x", *overrides], tmp_path, config_name="serve")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("port=0", "port must be a whole number from 1 to 65535, got 0. For example: port=8000."),
        ("limits.max_tokens=0", "limits.max_tokens must be a positive whole number, got 0: the most tokens"),
        (
            "limits.max_queue=-1",
            "limits.max_queue must be a whole number, 0 or more, got -1: how many requests",
        ),
        (
            "limits.queue_timeout_s=inf",
            "limits.queue_timeout_s must be a positive number of seconds, got inf",
        ),
        ("limits.default_max_tokens=2048", "limits.default_max_tokens=2048 is over limits.max_tokens=1024"),
        ("limits.max_n=0", "limits.max_n must be a positive whole number, got 0: the most choices"),
        ("limits.max_batch=0", "limits.max_batch must be a positive whole number, got 0: the most sequences"),
    ],
)
def test_bad_serve_settings_are_named(tmp_path, override, message):
    check_tree(serve_config(tmp_path))  # the shipped defaults are sound
    with pytest.raises(UserError) as error:
        check_tree(serve_config(tmp_path, override))
    assert str(error.value).startswith(message)


def test_serving_beyond_loopback_is_warned_about(tmp_path, capsys):
    check_tree(serve_config(tmp_path))
    assert "warning" not in capsys.readouterr().err
    check_tree(serve_config(tmp_path, "host=0.0.0.0"))
    assert "medexp: warning: serving on 0.0.0.0, reachable from other machines" in capsys.readouterr().err


def test_a_request_is_refused_for_the_first_reason_only():
    limits = OmegaConf.create({"max_tokens": 64, "max_message_chars": 10, "max_n": 4})
    ask = {"messages": [{"role": "user", "content": "hi"}]}
    assert refusal(ChatRequest(**ask), ["m"], limits, vocab=100) is None
    refused = refusal(ChatRequest(**ask, model="other", max_tokens=65), ["m"], limits, vocab=100)
    assert (refused.status, refused.param, refused.code) == (404, "model", "model_not_found")
    refused = refusal(ChatRequest(**ask, max_tokens=65), ["m"], limits, vocab=100)
    assert refused.status == 400 and "max_tokens=65 is over this server's cap of 64" in refused.message
    refused = refusal(ChatRequest(**ask, logit_bias={"100": 1.0}), ["m"], limits, vocab=100)
    assert refused.param == "logit_bias" and "(0 to 99)" in refused.message
