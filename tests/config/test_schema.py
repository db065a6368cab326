"""The typed schema refuses unknown keys and wrong types, in YAML files and on the command line, for every
group, in one paragraph that names the key, where it came from and what would work."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from medexp.config import UserError, describe_config_error, validate
from medexp.config.choices import AttnImplementation, Precision
from medexp.config.commands import ROOTS
from medexp.config.schema import GROUPS
from tests.helpers import compose_config, run_cli

CONF = Path(__file__).resolve().parents[2] / "conf"

# group -> (a real key, its typo, a value of the wrong type for the real key)
CASES = {
    "model": ("attn_implementation", "attn_implementaton", "flash"),
    "dataset": ("val_fraction", "val_fracton", "abc"),
    "lora": ("r", "rank", "1.5"),
    "trainer": ("learning_rate", "learnig_rate", "abc"),
    "eval": ("before_training", "before_trainig", "maybe"),
    "tracking": ("enabled", "enabeld", "sometimes"),
    "paths": ("output_root", "output_rot", "[1,2]"),
    "reward": ("choice_correct", "choise_correct", "abc"),
}


def _compose_error(overrides: list[str], config_name: str = "train") -> str:
    GlobalHydra.instance().clear()
    with (
        initialize_config_module("medexp.conf", version_base="1.3"),
        pytest.raises((HydraException, OmegaConfBaseException)) as err,
    ):
        compose(config_name, overrides=overrides)
    return describe_config_error(err.value)


def test_every_group_and_command_has_a_schema_and_every_option_names_it():
    assert set(GROUPS) == set(CASES)
    for group in GROUPS:
        for option in (CONF / group).glob("*.yaml"):
            defaults = OmegaConf.load(option).get("defaults") or []
            assert defaults and defaults[0] == "schema", f"{option} does not name its schema first"
    for command in ROOTS:
        assert OmegaConf.load(CONF / f"{command}.yaml").defaults[0] == f"{command}_schema"


def test_every_schema_leaf_has_a_help_comment():
    """Fields holding a nested dataclass document themselves; every other field says what it means."""
    import re

    from medexp.config import commands, dataset, evaluation, reward, schema, trainer

    modules = (schema, commands, dataset, trainer, evaluation, reward)
    nested = {name for m in modules for name, obj in vars(m).items() if dataclasses.is_dataclass(obj)}
    source = [line for m in modules for line in Path(m.__file__).read_text().splitlines()]
    fields = [m for line in source if (m := re.match(r"^    (\w+): ([\w\[\], ]+) = ", line))]
    assert len(fields) > 100
    for m in fields:
        if m.group(2) not in nested and not m.group(2).startswith("ClassVar"):  # RULES, REQUIRED: not fields
            assert "  # " in m.string, f"schema field {m.group(1)} has no help comment"


@pytest.mark.parametrize("group", sorted(CASES))
def test_mistyped_override_names_the_key_and_the_closest_one(group):
    key, typo, _ = CASES[group]
    message = describe_config_error_of([f"{group}.{typo}=1"])
    assert f"'{group}.{typo}'" in message and "command-line override" in message
    assert f"Did you mean {key}" in message and "Valid keys there:" in message


@pytest.mark.parametrize("group", sorted(CASES))
def test_wrong_type_on_the_command_line(group):
    key, _, bad = CASES[group]
    message = describe_config_error_of([f"{group}.{key}={bad}"])
    assert message.startswith(f"Wrong value for {group}.{key} (from the command-line override")
    assert "\n" not in message


@pytest.mark.parametrize("group", sorted(CASES))
def test_mistyped_key_in_a_preset_file_of_a_users_config_dir(group, tmp_path):
    """An option in a hydra.searchpath directory is checked like medexp's own, even without naming the
    schema, and so is an experiment preset that sets the group's keys."""
    key, typo, bad = CASES[group]
    (tmp_path / group).mkdir()
    (tmp_path / group / "mine.yaml").write_text(f"{typo}: 1\n")
    message = describe_config_error_of([f"hydra.searchpath=[file://{tmp_path}]", f"{group}=mine"])
    assert f"'{group}.{typo}'" in message and f"{group}/mine.yaml" in message and key in message

    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "typo.yaml").write_text(f"# @package _global_\n{group}:\n  {key}: {bad}\n")
    message = describe_config_error_of([f"hydra.searchpath=[file://{tmp_path}]", "experiment=typo"])
    assert message.startswith(f"Wrong value for {group}.{key} (from the config file experiment/typo.yaml")


def describe_config_error_of(overrides: list[str]) -> str:
    return _compose_error(overrides)


def test_sweeper_options_are_typed():
    message = describe_config_error_of(["hparams_search=lora_optuna", "hydra.sweeper.n_trails=3"])
    assert "'hydra.sweeper.n_trails'" in message and "Did you mean n_trials" in message
    message = describe_config_error_of(["hparams_search=lora_optuna", "hydra.sweeper.n_trials=abc"])
    assert message.startswith("Wrong value for hydra.sweeper.n_trials")


def test_unknown_option_lists_the_group_and_the_closest_option():
    message = describe_config_error_of(["dataset=medquadd"])
    assert "no option 'medquadd' in the dataset config group" in message
    assert "Did you mean medquad" in message and "schema" not in message


def test_keys_added_with_plus_are_refused_before_training(tmp_path):
    cfg = compose_config(["experiment=smoke", "+lora.rank=8"], tmp_path)
    with pytest.raises(UserError, match=r"Unknown config key 'lora.rank'.*Valid keys there: r, alpha"):
        validate(cfg)


def test_closed_sets_are_enums_that_read_as_strings(tmp_path):
    cfg = compose_config(["experiment=smoke"], tmp_path)
    assert cfg.trainer.precision is Precision.fp32 and cfg.trainer.precision == "fp32"
    assert f"{cfg.model.attn_implementation}" == "sdpa" and str(AttnImplementation.sdpa) == "sdpa"
    assert OmegaConf.to_yaml(cfg.trainer).count("precision: fp32") == 1


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["trainer.learnig_rate=1e-3"], "Did you mean learning_rate"),
        (["lora.r=1.5"], "Wrong value for lora.r"),
        (["trainer.precision=bf17"], "expected one of [auto, bf16_autocast, bf16, fp16, fp32]"),
        (["+trainer.foo=1"], "Unknown config key 'trainer.foo'"),
    ],
)
def test_cli_refuses_in_one_paragraph_without_traceback(tmp_path, args, expected):
    out = run_cli(["experiment=smoke", "tracking.enabled=false", *args], cwd=tmp_path, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and expected in out.stderr
    (line,) = [line for line in out.stderr.splitlines() if line.strip()]
    assert line.startswith("medexp: error: ")
    assert not list(tmp_path.glob("outputs/*/*/config.yaml")) and not (tmp_path / "mlruns").exists()
