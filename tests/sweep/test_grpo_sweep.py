"""Sweeps over GRPO options (hparams_search=grpo_optuna): the preset composes, its objective and safety constraint
are accepted where a run logs them, a GRPO trial reports its eval_reward (not its policy loss) to a maximizing
study's pruner, and a real 2-trial study on the tiny model through `python -m medexp.train --multirun`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from tests.helpers import run_cli
from tests.training.test_stage_scores import _questions

PRESET = ["hparams_search=grpo_optuna", "experiment=sft_then_grpo"]


def test_the_preset_composes_with_its_objective_constraint_and_search_space(tmp_path):
    job = run_cli([*PRESET, "--cfg", "job"], tmp_path, timeout=300)
    assert job.returncode == 0, job.stderr[-3000:]
    assert "optimized_metric: eval/mc/validation/accuracy" in job.stdout
    hydra = run_cli([*PRESET, "--cfg", "hydra"], tmp_path, timeout=300)
    assert hydra.returncode == 0, hydra.stderr[-3000:]
    for line in ("direction: maximize", "- eval/delta/safety_pass_rate >= 0",
                 "stages.grpo.trainer.grpo_beta: choice(0.0, 0.01, 0.04, 0.1)",
                 "stages.grpo.trainer.learning_rate: tag(log, interval(1e-6, 5e-5))",
                 "stages.grpo.trainer.grpo_num_generations: choice(4, 8, 16)"):  # fmt: skip
        assert line in hydra.stdout, hydra.stdout


def test_the_objective_and_constraint_are_accepted_where_the_run_logs_them(make_cfg, tmp_path):
    from medexp.sweep.objectives import objectives_error

    constraint = ["eval/delta/safety_pass_rate >= 0"]
    assert objectives_error(make_cfg(*PRESET), None, constraint, "median") is None
    mc = _questions(tmp_path / "mc.jsonl")
    smoke_mc = make_cfg(
        "hparams_search=grpo_optuna", "experiment=grpo_smoke", "reward=mc",
        "dataset@stages.grpo.dataset=medmcqa", f"stages.grpo.dataset.path={mc}",
    )  # fmt: skip
    assert objectives_error(smoke_mc, None, constraint, "median") is None
    # free-text data holds no multiple-choice question: the objective would be missing from every trial
    free = make_cfg("hparams_search=grpo_optuna", "experiment=grpo_smoke")
    assert "never logs" in objectives_error(free, None, constraint, "median")
    # ... unless the questions come from a set of their own
    own_set = make_cfg(
        "hparams_search=grpo_optuna", "experiment=grpo_smoke", "+dataset@eval.mc.sets.exam=medmcqa",
        f"eval.mc.sets.exam.path={mc}", "optimized_metric=eval/mc/exam/accuracy",
    )  # fmt: skip
    assert objectives_error(own_set, None, constraint, "median") is None


def _reported(direction: str, metric: str, better: str, values: dict[str, float]) -> dict[int, float]:
    """What a trial of a fresh `direction` study reports through the callback at two evaluations."""
    from transformers import TrainerControl, TrainerState

    from medexp.sweep.trial import TrialReporter

    study = optuna.create_study(direction=direction)
    trial = study.ask()
    callback = TrialReporter(trial, "s", None).callback(metric, better)
    state = TrainerState()
    for step in (1, 2):
        state.global_step = step
        callback.on_evaluate(None, state, TrainerControl(), metrics=values)
    return study.trials[0].intermediate_values


def test_a_grpo_trial_reports_its_reward_and_never_a_loss_to_a_maximizing_study():
    from medexp.training.methods.registry import KINDS

    grpo, sft = KINDS["grpo"], KINDS["sft"]
    assert grpo.progress == ("eval_reward", "maximize") and sft.progress == ("eval_loss", "minimize")
    values = {"eval_loss": 0.01, "eval_reward": 0.7}
    assert _reported("maximize", *grpo.progress, values) == {1: 0.7, 2: 0.7}
    assert _reported("minimize", *sft.progress, values) == {1: 0.01, 2: 0.01}
    # a falling loss told to a maximizing study would prune the best trials: nothing is reported
    assert _reported("maximize", *sft.progress, values) == {}


@pytest.mark.slow  # two GRPO trials with safety probes, each in the sweep's process: ~2 min on a shared 2-core CPU
def test_a_two_trial_grpo_study_maximizes_accuracy_under_the_safety_constraint(tmp_path):
    mc = _questions(tmp_path / "mc.jsonl")
    args = [
        "--multirun", "hparams_search=grpo_optuna", "experiment=grpo_smoke", "reward=mc",
        "dataset@stages.grpo.dataset=medmcqa", f"stages.grpo.dataset.path={mc}",
        "++stages.grpo.dataset.val_fraction=0.25", "stages.grpo.trainer.max_steps=2",
        "stages.grpo.trainer.eval_steps=1", "stages.grpo.trainer.batch_size=8",
        "stages.grpo.trainer.eval_batch_size=8", "stages.grpo.trainer.grpo_max_completion_length=8",
        "stages.grpo.trainer.grpo_num_generations=choice(2, 4)", "eval.generation.max_new_tokens=8",
        "hydra.sweeper.n_trials=2",
    ]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1"}  # generation of a 1M model is many tiny matmuls
    proc = subprocess.run(
        [sys.executable, "-m", "medexp.train", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "Traceback" not in proc.stdout + proc.stderr

    study = optuna.load_study(
        study_name="grpo_optuna", storage=f"sqlite:///{tmp_path}/multirun/grpo_optuna/optuna.db"
    )
    trials = [t for t in study.trials if not t.user_attrs.get("medexp.surplus")]
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    for t in trials:
        assert 0 <= t.value <= 1 and t.value * 12 == pytest.approx(
            round(t.value * 12)
        )  # 12 held-out questions
        assert set(t.params) == {"stages.grpo.trainer.grpo_beta", "stages.grpo.trainer.learning_rate",
                                 "stages.grpo.trainer.grpo_num_generations"}  # fmt: skip
        (violation,) = t.constraints.values()  # the base's pass rate minus the trial's: <= 0 is feasible
        assert -1 <= violation <= 1
        # the GRPO stage reported its validation reward at both evaluations (reward=mc: 0 to 1.2)
        assert sorted(t.intermediate_values) == [1, 2]
        assert all(0 <= v <= 1.2 for v in t.intermediate_values.values())
    assert f"best trial: #{study.best_trial.number}" in proc.stdout or not any(
        v <= 0 for t in trials for v in t.constraints.values()
    )
    assert Path(tmp_path / "multirun" / "grpo_optuna" / "report" / "best_params.yaml").is_file()
