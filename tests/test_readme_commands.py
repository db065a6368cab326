"""Every `python -m medexp.<command> ...` line in the README's and the docs pages' shell blocks composes against
the typed schema, so the documented command lines keep working as the configs change. Launcher lines
(`torchrun ... -m medexp.train ...`, `accelerate launch ... -m medexp.train ...`) count too."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from medexp.config.checks import unknown_keys

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").rglob("*.md"))
HYDRA_COMMANDS = {"train", "evaluate", "benchmark", "export", "chat", "serve", "sync"}
SWEEP = re.compile(r"=(choice|interval|range|tag)\(|=[^=]*,")
FLAGS_WITH_VALUE = {
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--config-name",
    "-cn",
    "--config-path",
    "-cp",
    "--config-dir",
    "-cd",
}
SHELL = {"&", "&&", ";", "|", "||", ">", ">>", "2>&1"}  # where a command line's own arguments end


def commands_in(path: Path) -> list[tuple[str, list[str]]]:
    """(command, overrides) for each `-m medexp.<command>` line in a Markdown file's shell blocks."""
    blocks = re.findall(r"```(?:bash|sh|shell)\n(.*?)```", path.read_text(), flags=re.DOTALL)
    commands = []
    for block in blocks:
        block = re.sub(r"<[^>]+>", "X", block)  # placeholders such as <run id> stand for a value
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            for part in line.split("&&"):
                tokens = shlex.split(part.strip().split(" # ")[0]) if "-m medexp." in part else []
                at = next(
                    (
                        i
                        for i, t in enumerate(tokens[:-1])
                        if t == "-m" and tokens[i + 1].startswith("medexp.")
                    ),
                    None,
                )
                if at is None:
                    continue
                command = tokens[at + 1].removeprefix("medexp.")
                args = tokens[at + 2 :]
                args = args[: next((i for i, t in enumerate(args) if t in SHELL), len(args))]
                if command in HYDRA_COMMANDS:
                    valued = {i + 1 for i, t in enumerate(args) if t in FLAGS_WITH_VALUE}  # `--cfg job`
                    overrides = [t for i, t in enumerate(args) if not t.startswith("-") and i not in valued]
                    if "--multirun" in args:  # a sweep's search expressions are the sweeper's, not compose's
                        overrides = [t for t in overrides if not SWEEP.search(t)]
                    commands.append((command, overrides))
    return commands


README_COMMANDS = commands_in(README)
COMMANDS = [(page.relative_to(ROOT).as_posix(), *c) for page in [README, *PAGES] for c in commands_in(page)]


def test_the_readme_shows_the_three_main_commands():
    assert {"train", "evaluate"} <= {command for command, _ in README_COMMANDS}
    assert any("hparams_search=lora_optuna" in overrides for _, overrides in README_COMMANDS)  # a sweep
    assert len(README.read_text().splitlines()) <= 250


def test_the_docs_have_commands_for_every_hydra_command():
    assert len(COMMANDS) >= 60
    assert {command for _, command, _ in COMMANDS} == HYDRA_COMMANDS
    assert any(page.startswith("docs/") for page, _, _ in COMMANDS)


@pytest.mark.parametrize(
    ("page", "command", "overrides"), COMMANDS, ids=[" ".join([p, c, *o]) for p, c, o in COMMANDS]
)
def test_documented_command_composes(page, command, overrides):
    launcher = next((o.split("=")[1] for o in overrides if o.startswith("hydra/launcher=")), None)
    plugin = "hydra_joblib_launcher" if launcher == "joblib" else "hydra_submitit_launcher"  # slurm_trial too
    if launcher and importlib.util.find_spec(f"hydra_plugins.{plugin}") is None:
        pytest.skip(f"the {launcher} launcher plugin is not installed")
    GlobalHydra.instance().clear()
    with initialize_config_module("medexp.conf", version_base="1.3"):
        cfg = compose(command, overrides=overrides)
    assert unknown_keys(cfg) == []
