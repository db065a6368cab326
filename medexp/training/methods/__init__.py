"""Stage kinds as plug-ins: one module per training method (sft, pretrain, dpo, kto, orpo, simpo, grpo), each
a `StageKind` saying which data it takes, how its rows are prepared, how its trainer is built, what is
evaluated around it and what it logs; `register` adds your own.
docs/architecture.md walks through adding one."""

from medexp.training.methods.base import StageKind
from medexp.training.methods.registry import (
    KINDS,
    PlannedStage,
    check_stages,
    default_kind,
    get_kind,
    register,
)

__all__ = ["KINDS", "PlannedStage", "StageKind", "check_stages", "default_kind", "get_kind", "register"]
