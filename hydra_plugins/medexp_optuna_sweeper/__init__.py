"""medexp's Optuna sweeper for Hydra: pruning, resumable and parallel studies, MLflow parent/child runs.

Select it with `override /hydra/sweeper: medexp_optuna` (conf/hparams_search/lora_optuna.yaml does).
"""
