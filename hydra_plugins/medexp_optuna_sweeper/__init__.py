"""medexp's Optuna sweeper for Hydra: pruning, resumable and parallel studies, MLflow parent/child runs.

A thin shim: the sweeper lives in `medexp.sweep`. Hydra 1.3 discovers plugins by importing every module
under the `hydra_plugins` namespace package (plugin.py here). Select it with
`override /hydra/sweeper: medexp_optuna` (conf/hparams_search/lora_optuna.yaml does).
"""
