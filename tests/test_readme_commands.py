"""Every `python -m medexp.<command> ...` line in the README composes against the typed schema, so the
documented command lines keep working as the configs change."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from medexp.config.checks import unknown_keys

README = Path(__file__).resolve().parents[1] / "README.md"
HYDRA_COMMANDS = {"train", "evaluate", "benchmark", "export", "chat", "serve"}
SWEEP = re.compile(r"=(choice|interval|range|tag)\(|=[^=]*,")


def readme_commands() -> list[tuple[str, list[str]]]:
    """(command, overrides) for each `python -m medexp.<command>` line in the README's shell blocks."""
    blocks = re.findall(r"```(?:bash|sh|shell)\n(.*?)```", README.read_text(), flags=re.DOTALL)
    commands = []
    for block in blocks:
        block = re.sub(r"<[^>]+>", "X", block)  # placeholders such as <run id> stand for a value
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            for part in line.split("&&"):
                tokens = shlex.split(part.strip().split(" # ")[0]) if "python -m medexp." in part else []
                if tokens[:2] != ["python", "-m"] or not tokens[2].startswith("medexp."):
                    continue
                command = tokens[2].removeprefix("medexp.")
                if command in HYDRA_COMMANDS:
                    commands.append((command, [t for t in tokens[3:] if not t.startswith("-")]))
                    if (
                        "--multirun" in tokens
                    ):  # a sweep's search expressions are the sweeper's, not compose's
                        commands[-1] = (command, [t for t in commands[-1][1] if not SWEEP.search(t)])
    return commands


COMMANDS = readme_commands()


def test_the_readme_has_commands_for_every_hydra_command():
    assert len(COMMANDS) >= 20
    assert {command for command, _ in COMMANDS} == HYDRA_COMMANDS


@pytest.mark.parametrize(("command", "overrides"), COMMANDS, ids=[" ".join([c, *o]) for c, o in COMMANDS])
def test_readme_command_composes(command, overrides):
    launcher = next((o.split("=")[1] for o in overrides if o.startswith("hydra/launcher=")), None)
    plugin = "hydra_joblib_launcher" if launcher == "joblib" else "hydra_submitit_launcher"  # slurm_trial too
    if launcher and importlib.util.find_spec(f"hydra_plugins.{plugin}") is None:
        pytest.skip(f"the {launcher} launcher plugin is not installed")
    GlobalHydra.instance().clear()
    with initialize_config_module("medexp.conf", version_base="1.3"):
        cfg = compose(command, overrides=overrides)
    assert unknown_keys(cfg) == []
