"""medexp's Optuna sweeper for Hydra, in one package. Importing it imports nothing heavy.

- `schema`: the sweeper's typed options (`hydra.sweeper.*`), registered as `hydra/sweeper=medexp_optuna`.
- `sweeper`: the Hydra `Sweeper`: asks Optuna for trials, launches them as Hydra jobs, tells Optuna how they ended.
- `search_space`: Hydra's sweep override grammar -> Optuna distributions.
- `workers`: which sweeper process runs a trial, whether it is alive, and its heartbeat.
- `storage`: the study's database: opening it (locks, heartbeats), its URL without the password.
- `trial`: the trial's side, in the training process: `connect_trial`, reporting eval_loss, pruning.
- `objectives`: what a study optimizes: its metrics, directions and constraints, checked against the eval group.
- `report`: the study's MLflow parent run and its final report.

Hydra 1.3 finds plugins only under the `hydra_plugins` namespace package, so
`hydra_plugins/medexp_optuna_sweeper/plugin.py` is a thin shim over this package. Select the sweeper with
`override /hydra/sweeper: medexp_optuna` (conf/hparams_search/lora_optuna.yaml does).
"""
