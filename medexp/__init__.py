"""medexp: Hydra-composed, MLflow-tracked LoRA / QLoRA fine-tuning of small language models on medical QA.

Only light modules are imported here, so `python -m medexp.train --help` and config errors stay instant.
"""

from medexp.config import UserError, register_configs, register_resolvers, validate

# Resolvers and schemas are known as soon as medexp is imported: commands, tests composing configs with
# hydra.compose, and sweep jobs unpickled in another process all see the same typed config.
register_resolvers()
register_configs()

__all__ = ["UserError", "register_configs", "register_resolvers", "validate"]
__version__ = "0.1.0"
