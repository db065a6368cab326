"""medexp: Hydra-composed, MLflow-tracked LoRA / QLoRA fine-tuning of small language models on medical QA.

Only light modules are imported here, so `python -m medexp.train --help` and config errors stay instant.
"""

from medexp.config import UserError, register_resolvers, validate

register_resolvers()

__all__ = ["UserError", "register_resolvers", "validate"]
__version__ = "0.1.0"
