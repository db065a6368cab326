"""The configuration reference (docs/hooks/config_reference.py, an mkdocs hook) shows every field of every schema
dataclass with its help, its type and its value in each option file, and keeps doing so as the schema grows."""

from __future__ import annotations

import dataclasses
import enum
import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from medexp.config import choices, commands, schema
from medexp.config import dataset as dataset_schema
from medexp.config import evaluation as eval_schema
from medexp.config import trainer as trainer_schema
from medexp.sweep import schema as sweep_schema

ROOT = Path(__file__).resolve().parents[1]
HOOKS = ROOT / "docs" / "hooks"
SCHEMA_MODULES = (schema, dataset_schema, trainer_schema, eval_schema, commands, sweep_schema)


@pytest.fixture(scope="module")
def hook() -> ModuleType:
    """The hook as mkdocs loads it: its folder on sys.path, so that it finds the modules beside it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(HOOKS))
        yield importlib.import_module("config_reference")
    for name in ("config_reference", "schema_source", "markdown_text"):
        sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def page(hook: ModuleType) -> str:
    return hook.generate(ROOT)


def rows_of(page: str) -> dict[str, list[str]]:
    """Dotted key -> the table rows it heads, in page order (commands' roots share keys such as `seed`)."""
    found: dict[str, list[str]] = {}
    for line in page.splitlines():
        match = re.match(r"\| `([^`]+)` \|", line)
        if match:
            found.setdefault(match.group(1), []).append(line)
    return found


def row(page: str, key: str) -> str:
    (only,) = rows_of(page)[key]
    return only


def schema_dataclasses() -> list[type]:
    return [
        obj
        for module in SCHEMA_MODULES
        for obj in vars(module).values()
        if dataclasses.is_dataclass(obj) and obj.__module__ == module.__name__
    ]


def test_every_field_of_every_schema_dataclass_appears_with_its_help(hook, page):
    source = hook.Source(ROOT)
    rows = rows_of(page)
    checked = 0
    for cls in schema_dataclasses():
        klass = source.lookup(cls.__module__, cls.__name__)
        parsed = {f.name: f for f in source.fields(klass)}
        assert set(parsed) == {f.name for f in dataclasses.fields(cls)}, (
            cls.__name__
        )  # ClassVars are no field
        for f in dataclasses.fields(cls):
            nested = dataclasses.is_dataclass(f.type) or source.dataclass_of(parsed[f.name]) is not None
            keyed = [line for key, lines in rows.items() if key.split(".")[-1] == f.name for line in lines]
            if nested and not parsed[f.name].help:  # a section without a comment: its keys are the rows
                assert any(f".{f.name}." in f".{key}" for key in rows), f"{cls.__name__}.{f.name}"
                continue
            assert parsed[f.name].help, f"{cls.__name__}.{f.name} has no `# help` comment in the schema"
            help_text = hook.prose(parsed[f.name].help).replace("|", "\\|")
            assert any(help_text in line for line in keyed), f"{cls.__name__}.{f.name}: {help_text!r}"
            checked += 1
    assert checked > 150


def test_option_files_values_show_up(hook, page):
    trainer = next(s for s in hook.sections(ROOT) if s.title == "trainer")
    batch = next(r for r in trainer.rows if r.key == "trainer.batch_size")
    cpu = yaml.safe_load((ROOT / "conf" / "trainer" / "cpu.yaml").read_text())["batch_size"]
    default = yaml.safe_load((ROOT / "conf" / "trainer" / "default.yaml").read_text())["batch_size"]
    assert batch.values == {"default": default, "cpu": cpu} and cpu != default
    assert row(page, "trainer.batch_size").endswith(
        f"| `{default}` | `{cpu}` |"
    )  # one column per option file, the default first
    # a group with many options shares one column, each value with the options that set it
    assert "`[opa, opb, opc, opd]` (medmcqa)" in row(page, "dataset.option_columns")
    # the schema's default where an option file does not set the key, the option's value where it does
    assert row(page, "lora.bias").endswith("| `none` | `none` |")
    assert row(page, "lora.quantization.bits").endswith("| — | `4` |")
    # three hparams_search options share one column: the presets' values, then the schema's for the rest
    assert row(page, "hydra.sweeper.pruner.name").endswith(
        "| `percentile` (lora_optuna, lora_optuna_tied)<br>`median` (others) |"
    )
    assert row(page, "limits.max_queue").endswith("| `16` |")  # a command's root: conf/serve.yaml


def test_enum_fields_list_their_allowed_values(page):
    enums = {
        "trainer.batching": choices.Batching,
        "model.attn_implementation": choices.AttnImplementation,
        "hydra.sweeper.pruner.name": sweep_schema.PrunerName,
    }
    for key, kind in enums.items():
        assert isinstance(kind, type) and issubclass(kind, enum.Enum)
        assert all(f"`{member.value}`" in row(page, key).split(" | ")[1] for member in kind), key
    assert "`padded`: random batches padded to their longest example" in page  # each value's comment


def test_the_generator_reads_whatever_the_schema_grows(hook, tmp_path):
    """Range rules and check methods beside the fields are passed over; a former enum typed `str` still renders."""
    for part in ("medexp/config", "medexp/sweep", "conf"):
        shutil.copytree(ROOT / part, tmp_path / part, symlinks=True)
    path = tmp_path / "medexp" / "config" / "trainer.py"
    rules = (
        "    precision: str = MISSING  # was an enum;\n"
        '    RULES: ClassVar[Rules] = (positive("batch_size", 8),)  # range checks: not a field\n'
        "    SHARED: ClassVar[int] = 3\n\n"
        "    @staticmethod\n"
        "    def check(node: Any, key: str, root: Any) -> None:\n"
        '        """Cross-field rules."""\n\n'
        "    def helper(self) -> int:\n"
        "        return 1\n\n"
    )
    text = re.sub(
        r"    precision: Precision = MISSING  #[^\n]*\n", lambda _: rules, path.read_text(), count=1
    )
    path.write_text(text)
    path = tmp_path / "medexp" / "config" / "schema.py"
    text = path.read_text().replace(
        "class LoraConfig:\n", "class LoraConfig:\n    new_field: int = 7  # added by someone else\n"
    )
    path.write_text(text)

    page = hook.generate(tmp_path)
    assert not any(key.split(".")[-1] in ("RULES", "SHARED", "check", "helper") for key in rows_of(page))
    assert row(page, "trainer.precision").startswith("| `trainer.precision` | `str` | was an enum")
    assert row(page, "trainer.precision").endswith("| `auto` | `auto` |")
    assert "| `lora.new_field` | `int` | added by someone else | `7` | `7` |" in row(page, "lora.new_field")


def test_the_site_builds_strict(tmp_path):
    pytest.importorskip("material", reason="the docs extra (mkdocs-material) is not installed")
    mkdocs = shutil.which("mkdocs")
    if mkdocs is None:
        pytest.skip("mkdocs is not installed")
    proc = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    reference = (tmp_path / "site" / "reference" / "configuration" / "index.html").read_text()
    assert "trainer.batch_size" in reference and "hydra.sweeper.pruner.percentile.percentile" in reference
