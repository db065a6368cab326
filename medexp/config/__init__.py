"""medexp's configuration: the typed schema with the checks types cannot express beside each dataclass, the one
`validate`, stage expansion, resolvers, and the commands' entry decorator with its one exit path for bad input.
Imports nothing else of medexp, and nothing heavy."""

from medexp.config.checks import looks_like_local_path, validate
from medexp.config.command import command
from medexp.config.commands import register_configs
from medexp.config.dataset import LOCAL_FILE_SUFFIXES
from medexp.config.errors import Stopped, UserError, describe_config_error, exit_with
from medexp.config.evaluation import HELD_OUT_METRICS
from medexp.config.resolvers import assets_dir, register_resolvers
from medexp.config.runtime import in_multirun, task_overrides
from medexp.config.schema import TrainConfig
from medexp.config.stages import stage_configs, trained_system_prompt
from medexp.config.tree import leaves, missing_keys

__all__ = [
    "HELD_OUT_METRICS",
    "LOCAL_FILE_SUFFIXES",
    "Stopped",
    "TrainConfig",
    "UserError",
    "assets_dir",
    "command",
    "describe_config_error",
    "exit_with",
    "in_multirun",
    "leaves",
    "looks_like_local_path",
    "missing_keys",
    "register_configs",
    "register_resolvers",
    "stage_configs",
    "task_overrides",
    "trained_system_prompt",
    "validate",
]
