"""The layout in docs/architecture.md holds: imports flow one way, commands stay thin, no import circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "medexp"
COMMANDS = {"train", "evaluate", "benchmark", "export", "chat", "serve", "safety", "sync"}
# What each library package may import from medexp (besides itself). Commands may import any library package.
ALLOWED = {
    "config": set(),
    "data": {"config", "tracking", "plotting", "console"},
    "tracking": {"config", "console"},
    "training": {"config", "data", "tracking", "console"},
    "evaluation": {"config", "data", "tracking", "training", "plotting", "console"},
    "serving": {"config", "data", "tracking", "training", "evaluation", "console"},
    "sweep": {"config", "tracking", "evaluation", "console"},  # the metric map: what a study may optimize
    "plotting": set(),
    "console": set(),
}


def medexp_imports(path: Path) -> set[str]:
    """The medexp modules a file imports, at any depth (inside functions too), as dotted names."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("medexp"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("medexp")}
    return found


def unit(module: str) -> str:
    """medexp.training.model -> training; medexp.train -> train (a command)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def library_files():
    return sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE or p.stem not in COMMANDS)


@pytest.mark.parametrize("path", library_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_library_modules_import_only_lower_layers(path):
    rel = path.relative_to(PACKAGE)
    own = rel.parts[0].removesuffix(".py") if rel.parts[0] != "__init__.py" else ""
    if not own:
        return
    for module in medexp_imports(path):
        target = unit(module)
        assert target not in COMMANDS, f"{rel} imports the command module {module}"
        assert target == own or target in ALLOWED[own], (
            f"{rel} imports {module}: {own} may not import {target}"
        )


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_commands_are_thin(command):
    """A command parses, composes and calls into the library: a few dozen lines, no other command imported."""
    path = PACKAGE / f"{command}.py"
    imports = {unit(m) for m in medexp_imports(path)}
    assert not imports & (COMMANDS - {command}), f"{command}.py imports another command"
    limit = 200 if command == "train" else 80  # train.py is the readable top-to-bottom flow of one run
    assert len(path.read_text().splitlines()) <= limit


def test_every_command_uses_the_one_exit_path():
    for command in COMMANDS - {"safety"}:
        source = (PACKAGE / f"{command}.py").read_text()
        assert f'@command("{command}")' in source and "sys.exit" not in source and "hydra.main" not in source
    assert "exit_with" in (PACKAGE / "safety.py").read_text()
    hits = [p for p in PACKAGE.rglob("*.py") if 'print(f"medexp: error:' in p.read_text()]
    assert hits == [PACKAGE / "config" / "errors.py"]


def test_one_mlflow_client_helper_and_one_config_walker():
    clients = [p for p in PACKAGE.rglob("*.py") if "MlflowClient(" in p.read_text()]
    assert clients == [PACKAGE / "tracking" / "client.py"]
    walkers = [
        p for p in PACKAGE.rglob("*.py") if "to_container(" in p.read_text() and "def walk" in p.read_text()
    ]
    assert walkers == [PACKAGE / "config" / "tree.py"]


def test_the_sweeper_plugin_is_a_thin_shim():
    shim = ROOT / "hydra_plugins" / "medexp_optuna_sweeper"
    lines = sum(len(p.read_text().splitlines()) for p in shim.glob("*.py"))
    assert lines <= 40, "the sweeper's logic belongs in medexp/sweep/"
    assert not (PACKAGE / "sweeping.py").exists() and not (PACKAGE / "study_report.py").exists()


def test_architecture_doc_names_every_package():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    for package in ALLOWED:
        assert f"`{package}" in doc or f"medexp/{package}" in doc, package
