"""`optimized_metric` as a list of names. Which metrics a run logs, and what turns each on, is the evaluation
suites' to say: medexp.evaluation.metrics builds that map from them and checks `optimized_metric` against it
(`check_optimized_metric`, which the train command runs right after `validate`)."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf


def optimized_metrics(cfg: DictConfig) -> list[str]:
    """`optimized_metric` as a list: one name for a plain run or study, several for a multi-objective study."""
    value = cfg.optimized_metric
    return [str(v) for v in (list(value) if OmegaConf.is_list(value) or isinstance(value, list) else [value])]
