"""medexp's Optuna sweeper through `python -m medexp.train --multirun`, on the smoke preset, real SQLite storage."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from medexp.sweep.search_space import search_space

# Trials as short as a sweep's mechanics allow: two evaluations each (pruning needs one before the end), batches
# of 8. A sweep's cost in these tests is mostly process start-up and per-trial set-up, not training.
FAST = ["experiment=smoke", "trainer.max_steps=6", "trainer.eval_steps=3", "trainer.batch_size=8"]
# Between the two seeded trials of the constrained study below: eval_loss 7.53 (lr 1e-3) and 8.07 (lr 1e-7, the
# base model's loss), as measured on this machine; training is seeded, so they repeat.
CONSTRAINT_LOSS = 7.8


def sweep_cmd(n_trials: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "medexp.train",
        "--multirun",
        "hparams_search=lora_optuna",
        *FAST,
        f"hydra.sweeper.n_trials={n_trials}",
        *extra,
    ]


def sweep(tmp_path: Path, n_trials: int, *extra: str, expect: int = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        sweep_cmd(n_trials, *extra), cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == expect, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc


def storage(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/multirun/lora_optuna/optuna.db"


def study(tmp_path: Path) -> optuna.Study:
    return optuna.load_study(study_name="lora_optuna", storage=storage(tmp_path))


def states(tmp_path: Path) -> dict[int, str]:
    return {t.number: t.state.name for t in study(tmp_path).trials if not t.user_attrs.get("medexp.surplus")}


def seeded_study(tmp_path: Path, *params: dict) -> None:
    """Create the study before the sweep and queue trials with chosen params, as a user seeding a search."""
    (tmp_path / "multirun" / "lora_optuna").mkdir(parents=True)
    s = optuna.create_study(study_name="lora_optuna", storage=storage(tmp_path))
    for p in params:
        s.enqueue_trial(p)


def mlflow_runs(tmp_path: Path):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("medexp-smoke").experiment_id])
    parents = [r for r in runs if r.data.tags.get("medexp.role") == "study"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def test_search_space_follows_hydras_grammar():
    space, fixed = search_space(
        [
            "lora.r=choice(4, 8, 16)",
            "trainer.learning_rate=tag(log, interval(1e-5, 1e-3))",
            "lora.dropout=interval(0.0, 0.2)",
            "trainer.batch_size=interval(4, 16)",
            "trainer.eval_steps=range(10, 40, 10)",
            "experiment=smoke",
            "lora.alpha=16",
        ]
    )
    assert space == {
        "lora.r": CategoricalDistribution([4, 8, 16]),
        "trainer.learning_rate": FloatDistribution(1e-5, 1e-3, log=True),
        "lora.dropout": FloatDistribution(0.0, 0.2),
        "trainer.batch_size": FloatDistribution(4.0, 16.0),  # Hydra parses interval() bounds as floats
        "trainer.eval_steps": IntDistribution(10, 30, step=10),  # stop excluded, as range() in Hydra
    }
    assert fixed == {"experiment": "smoke", "lora.alpha": "16"}
    # a plain value on the command line fixes a parameter of the configured space
    space, fixed = search_space(["lora.r=choice(4, 8)", "lora.r=8"])
    assert space == {} and fixed == {"lora.r": "8"}


NO_PRUNING = "hydra.sweeper.pruner.name=none"  # where a test asserts that every trial completes


def test_sweep_groups_trials_in_mlflow_and_reproduces_the_best(tmp_path):
    # two trials at a time through hydra-joblib-launcher: the parallel path (and its per-job share of the cores)
    proc = sweep(tmp_path, 3, NO_PRUNING, "hydra/launcher=joblib", "hydra.sweeper.n_jobs=2")
    assert states(tmp_path) == {0: "COMPLETE", 1: "COMPLETE", 2: "COMPLETE"}
    assert_ran_at_once(tmp_path, [0, 1])

    client, parents, children = mlflow_runs(tmp_path)
    (parent,) = parents
    assert parent.info.status == "FINISHED"
    assert parent.data.params["search.lora.r"] == "CategoricalDistribution(choices=(4, 8, 16, 32, 64))"
    assert parent.data.params["search.lora.alpha"] == "CategoricalDistribution(choices=(8, 16, 32, 64, 128))"
    assert "log=True" in parent.data.params["search.trainer.learning_rate"]
    assert (
        parent.data.params["sampler"] == "TPESampler" and "seed: 42" in parent.data.params["sampler.config"]
    )
    assert "'name': 'none'" in parent.data.params["pruner"]
    assert parent.data.metrics["trials/complete"] == 3
    assert parent.data.metrics["best_value"] == pytest.approx(study(tmp_path).best_value)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"trials.csv", "best_params.yaml", "plots"} <= artifacts
    plots = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert plots == {
        "optimization_history.png",
        "param_importances.png",
        "intermediate_values.png",
        "parallel_coordinate.png",
    }

    assert len(children) == 3
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert sorted(c.data.tags["medexp.optuna_trial"] for c in children) == ["0", "1", "2"]
    assert {c.data.tags["medexp.trial_state"] for c in children} == {"COMPLETE"}
    assert {c.info.run_name for c in children} == {"trial_0", "trial_1", "trial_2"}
    trials = {str(t.number): t for t in study(tmp_path).trials}
    for child in children:  # alpha is searched: the run's param is the alpha the trial drew
        trial = trials[child.data.tags["medexp.optuna_trial"]]
        assert float(child.data.params["lora.alpha"]) == trial.params["lora.alpha"]
    assert len({t.params["lora.alpha"] / t.params["lora.r"] for t in trials.values()}) > 1  # scale varies

    # the best trial is printed and saved, with a command that reproduces it as a single run
    best = study(tmp_path).best_trial
    out = proc.stdout
    assert f"best trial: #{best.number}" in out
    assert best.user_attrs["medexp.mlflow_run_id"] in out
    (command,) = [line.split("reproduce: ", 1)[1] for line in out.splitlines() if "reproduce: " in line]
    assert (
        (tmp_path / "multirun" / "lora_optuna" / "report" / "best_params.yaml")
        .read_text()
        .count(f"trial: {best.number}")
    )
    args = shlex.split(command)[3:]
    assert "--multirun" not in args and not any(a.startswith(("optuna.", "hydra.")) for a in args)
    single = subprocess.run(
        [sys.executable, "-m", "medexp.train", *args, "tracking=none", "hydra.run.dir=reproduced"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    assert f"eval_loss={best.value:.4f}" in single.stdout + single.stderr


@pytest.mark.slow  # ~50 s; the suite is at its 10-minute budget
def test_bad_learning_rate_is_pruned(tmp_path):
    good = {"lora.r": 8, "trainer.learning_rate": 1e-3}
    seeded_study(tmp_path, good, good, {"lora.r": 8, "trainer.learning_rate": 1e-5})
    proc = sweep(
        tmp_path, 3, "hydra.sweeper.pruner.name=median", "hydra.sweeper.pruner.median.n_startup_trials=2"
    )
    assert states(tmp_path) == {0: "COMPLETE", 1: "COMPLETE", 2: "PRUNED"}
    pruned = study(tmp_path).trials[2]
    assert pruned.user_attrs["medexp.steps"] == 3  # stopped at its first evaluation, not after 6 steps
    _, _, children = mlflow_runs(tmp_path)
    (child,) = [c for c in children if c.data.tags["medexp.optuna_trial"] == "2"]
    assert child.info.status == "FINISHED"
    assert child.data.tags["pruned"] == "true" and child.data.tags["medexp.trial_state"] == "PRUNED"
    assert "trial 2: pruned at step 3" in proc.stderr + proc.stdout
    assert "Error executing job" not in proc.stderr + proc.stdout


@pytest.mark.slow  # ~30 s; the suite is at its 10-minute budget
def test_a_sweep_that_mostly_fails_stops_with_a_clear_message(tmp_path):
    proc = sweep(tmp_path, 4, "trainer.optim=no_such_optimizer", expect=3)
    assert states(tmp_path) == {0: "FAIL", 1: "FAIL", 2: "FAIL"}  # 3 > 0.5 x 4: the fourth never ran
    assert "medexp: error: the sweep stopped: 3 trials failed, more than max_failure_rate=0.5" in proc.stderr
    assert "no_such_optimizer" in proc.stderr
    _, (parent,), children = mlflow_runs(tmp_path)
    assert parent.info.status == "FAILED"
    assert {c.data.tags["medexp.trial_state"] for c in children} == {"FAIL"}
    assert all("no_such_optimizer" in c.data.tags["error"] for c in children)


@pytest.mark.slow  # two sweeps side by side on 2 cores: ~40 s; run with pytest -m slow
def test_two_workers_share_one_study_without_duplicates(tmp_path):
    (tmp_path / "multirun").mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one core each, as one would partition a machine
    workers = [
        subprocess.Popen(
            sweep_cmd(4), cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    real = [t for t in study(tmp_path).trials if not t.user_attrs.get("medexp.surplus")]
    assert len(real) == 4 and {t.state.name for t in real} <= {"COMPLETE", "PRUNED"}
    assert len({t.number for t in real}) == 4
    workers_seen = {t.user_attrs["medexp.worker"] for t in real}
    assert len(workers_seen) == 2  # both processes took trials
    # and proposed different ones: a worker joining the study reseeds its sampler
    assert len({tuple(sorted(t.params.items())) for t in real}) == 4
    _, parents, children = mlflow_runs(tmp_path)
    assert len([p for p in parents if p.info.lifecycle_stage == "active"]) == 1
    assert sorted(int(c.data.tags["medexp.optuna_trial"]) for c in children) == sorted(t.number for t in real)


@pytest.mark.slow  # kills a sweep mid-trial and resumes it: ~70 s; run with pytest -m slow
def test_a_killed_trial_continues_from_its_checkpoint(tmp_path):
    """kill -9 of the sweep once trial 1 has its first checkpoint; the same command then continues trial 1 (as
    trial 2: same params, same MLflow run, the training run's own resume) and runs the one trial left."""
    longer = [
        "trainer.max_steps=12",
        NO_PRUNING,
    ]  # 4 evaluations, a checkpoint at each: room to kill mid-trial
    proc = subprocess.Popen(
        sweep_cmd(3, *longer),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    checkpoint = tmp_path / "multirun" / "lora_optuna" / "trial_1" / "checkpoints" / "checkpoint-3"
    deadline = time.monotonic() + 300
    while not (checkpoint / "trainer_state.json").is_file():  # written last: the checkpoint is complete
        if time.monotonic() > deadline or proc.poll() is not None:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("the sweep never reached trial 1's first checkpoint")
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = study(tmp_path).trials[0]

    proc = sweep(tmp_path, 3, *longer)  # the same command resumes the study
    trials = study(tmp_path).trials
    assert trials[0].value == first.value  # finished work kept, not run again
    killed, continued, fresh = trials[1:]
    assert killed.state.name == "FAIL" and "medexp.error" not in killed.user_attrs  # interrupted, not failed
    assert continued.state.name == "COMPLETE" and fresh.state.name == "COMPLETE"
    assert continued.system_attrs["failed_trial"] == 1 and continued.params == killed.params
    assert continued.user_attrs["medexp.steps"] == first.user_attrs["medexp.steps"] == 12  # not 12 + 3
    assert continued.user_attrs["medexp.mlflow_run_id"] == killed.user_attrs["medexp.mlflow_run_id"]
    assert sorted(continued.intermediate_values) == [3, 6, 9, 12]  # step 3 inherited from the killed attempt
    out = proc.stdout + proc.stderr
    assert "trial 2 continues trial 1" in out and "resuming the run in" in out
    assert "Launching 1 jobs locally" in out and out.count("Launching 1 jobs locally") == 2
    client, parents, children = mlflow_runs(tmp_path)
    assert len(parents) == 1 and len(children) == 3  # trial 1's run went on; no run for trial 2 of its own
    (run,) = [c for c in children if c.info.run_id == continued.user_attrs["medexp.mlflow_run_id"]]
    assert run.info.status == "FINISHED" and run.data.tags["medexp.resumed"] == "1"
    evals = [m.step for m in client.get_metric_history(run.info.run_id, "eval_loss")]
    assert evals == [0, 3, 6, 9, 12]  # 0 (the base) and 3 from the killed attempt, the rest after: each once
    assert sweep(tmp_path, 3, *longer).stdout.count("Launching") == 0  # nothing left to do


def test_plugin_is_visible_to_hydra():
    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper

    from medexp.sweep.schema import PLUGIN_TARGET
    from medexp.train import _check_sweeper_plugin

    found = {f"{c.__module__}.{c.__name__}" for c in Plugins.instance().discover(Sweeper)}
    assert PLUGIN_TARGET in found  # Hydra instantiates the schema's _target_ only if its scan found it
    _check_sweeper_plugin(["hparams_search=lora_optuna"])  # passes: nothing printed, no exit


def test_hidden_plugin_is_a_clear_error(monkeypatch, capsys):
    from hydra.core.plugins import Plugins

    from medexp.train import _check_sweeper_plugin

    # as under a default editable install, where Hydra's scan finds no medexp sweeper
    monkeypatch.setattr(Plugins.instance(), "discover", lambda kind: [])
    _check_sweeper_plugin(["lora.r=8"])  # single runs do not need the plugin
    with pytest.raises(SystemExit) as exit_info:
        _check_sweeper_plugin(["hparams_search=lora_optuna"])
    assert exit_info.value.code == 2
    assert "editable_mode=compat" in capsys.readouterr().err


def _sweeper_params(*overrides: str) -> dict:
    from hydra import compose, initialize_config_module

    from medexp.config.commands import register_configs
    from medexp.config.resolvers import register_resolvers

    register_configs()
    register_resolvers()
    with initialize_config_module("medexp.conf", version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    return cfg, dict(cfg.hydra.sweeper.params)


def test_alpha_is_searched_and_the_tied_preset_ties_it_to_rank():
    from medexp.sweep.sweeper import MedexpOptunaSweeper

    cfg, params = _sweeper_params("hparams_search=lora_optuna")
    assert set(params) == {"lora.r", "lora.alpha", "trainer.learning_rate"}
    cfg, params = _sweeper_params("hparams_search=lora_optuna_tied", "lora.r=16")
    assert cfg.lora.alpha == 32 and cfg.hydra.sweeper.study_name == "lora_optuna_tied"
    assert params["lora.alpha"] is None  # dropped from the search: the sweeper skips null entries
    sweeper = MedexpOptunaSweeper(**{**GOOD_OPTIONS, "params": cfg.hydra.sweeper.params})
    assert set(sweeper.params) == {"lora.r", "trainer.learning_rate"}


def test_make_pruner_takes_the_named_pruners_options():
    from medexp.sweep.trial import make_pruner

    spec = {"name": "hyperband", "median": {"n_startup_trials": 3}, "hyperband": {"min_resource": 10}}
    hyperband = make_pruner(spec)
    assert isinstance(hyperband, optuna.pruners.HyperbandPruner) and hyperband._min_resource == 10
    median = make_pruner({**spec, "name": "median"})
    assert isinstance(median, optuna.pruners.MedianPruner) and median._n_startup_trials == 3
    assert isinstance(make_pruner({"name": "none"}), optuna.pruners.NopPruner)
    percentile = make_pruner({"name": "percentile", "percentile": {"percentile": 25.0, "n_warmup_steps": 30}})
    assert isinstance(percentile, optuna.pruners.PercentilePruner)
    assert percentile._percentile == 25.0 and percentile._n_warmup_steps == 30
    # null options (as in a study created with them) leave Optuna's defaults
    assert make_pruner({"name": "median", "median": {"n_warmup_steps": None}})._n_warmup_steps == 0


def test_typed_options_reach_optuna_as_plain_values():
    from omegaconf import OmegaConf

    from medexp.config.rules import check_tree
    from medexp.sweep.schema import Direction, MedexpOptunaSweeperConf, PrunerConf, PrunerName
    from medexp.sweep.sweeper import MedexpOptunaSweeper
    from medexp.sweep.trial import make_pruner

    conf = OmegaConf.structured(MedexpOptunaSweeperConf)
    conf.direction, conf.pruner.name, conf.pruner.hyperband.min_resource = "maximize", "hyperband", 5
    assert conf.direction == Direction.maximize and conf.pruner.name is PrunerName.hyperband
    options = {k: conf[k] for k in conf if k not in ("_target_", "sampler")}
    sweeper = MedexpOptunaSweeper(**options, sampler=None)  # as Hydra passes them: Enums, DictConfigs
    assert type(sweeper.direction) is str and sweeper.direction == "maximize"  # for optuna.create_study
    assert type(sweeper.pruner["name"]) is str and sweeper.pruner["hyperband"]["min_resource"] == 5
    check_tree(conf, "hydra.sweeper")  # the schema's range checks pass: no UserError
    pruner = make_pruner(sweeper.pruner)
    assert isinstance(pruner, optuna.pruners.HyperbandPruner) and pruner._min_resource == 5
    assert MedexpOptunaSweeper(**{**options, "pruner": PrunerConf()}, sampler=None).pruner["name"] == "median"


@pytest.mark.parametrize(
    ("override", "names"),
    [
        (
            "hydra.sweeper.pruner.name=asha",
            ["hydra.sweeper.pruner.name", "asha", "hyperband, median, percentile, none"],
        ),
        ("hydra.sweeper.direction=down", ["hydra.sweeper.direction", "down", "minimize, maximize"]),
        ("hydra.sweeper.directions=[minimize,up]", ["hydra.sweeper.directions", "up", "minimize, maximize"]),
        ("hydra.sweeper.pruner.median.n_startup=3", ["hydra.sweeper.pruner.median", "n_startup"]),
        ("hydra.sweeper.pruner.hyperband.min_resource=few", ["hydra.sweeper.pruner.hyperband.min_resource"]),
    ],
)
def test_bad_sweeper_option_is_refused_while_composing(make_cfg, override, names):
    from hydra.errors import HydraException

    with pytest.raises(HydraException) as error:  # Hydra's, with OmegaConf's error as its cause
        make_cfg("hparams_search=lora_optuna", override)
    message = str(error.value) + str(error.value.__cause__ or "")
    assert all(name in message for name in names), message


def test_unknown_pruner_is_a_clear_error(tmp_path):
    proc = sweep(tmp_path, 2, "hydra.sweeper.pruner.name=asha", expect=2)
    err = proc.stderr
    assert "medexp: error: " in err and "hydra.sweeper.pruner.name" in err and "asha" in err, err


def _postgres_available() -> bool:
    return (
        importlib.util.find_spec("psycopg2") is not None
        and shutil.which("initdb") is not None
        and shutil.which("pg_ctl") is not None
        and (os.geteuid() != 0 or shutil.which("runuser") is not None)
    )


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL server on 127.0.0.1 (initdb refuses root, so it runs as the postgres user)."""
    data = Path(tempfile.mkdtemp(prefix="medexp-pg-"))  # outside pytest's root-only tmp dirs
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(data, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = {"check": True, "capture_output": True, "timeout": 120}
    try:
        subprocess.run([*as_user, "initdb", "-D", str(data), "-U", "postgres", "--auth=trust"], **run)
        options = f"-h 127.0.0.1 -p {port} -k {data}"
        start = [
            *as_user,
            "pg_ctl",
            "-D",
            str(data),
            "-l",
            str(data / "server.log"),
            "-o",
            options,
            "-w",
            "start",
        ]
        subprocess.run(start, **run)  # -l: the server must not hold our captured stdout open
        subprocess.run(
            [*as_user, "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "optuna"], **run
        )
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run([*as_user, "pg_ctl", "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


@pytest.mark.slow  # starts a PostgreSQL server and runs a sweep on it: ~30 s; run with pytest -m slow
@pytest.mark.skipif(not _postgres_available(), reason="needs PostgreSQL server binaries and psycopg2")
def test_study_on_a_postgresql_storage(tmp_path, postgres_url):
    """A database URL other than SQLite: what workers on several machines would share."""
    sweep(tmp_path, 2, f"hydra.sweeper.storage={postgres_url}", NO_PRUNING)
    trials = optuna.load_study(study_name="lora_optuna", storage=postgres_url).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert all(
        t.intermediate_values for t in trials
    )  # the trials reported through PostgreSQL as they trained
    _, (parent,), _ = mlflow_runs(tmp_path)
    assert parent.data.params["storage"].startswith("postgresql+psycopg2://postgres@127.0.0.1:")
    assert not (tmp_path / "multirun" / "lora_optuna" / "optuna.db").exists()


GOOD_OPTIONS = {
    "study_name": "s",
    "storage": None,
    "direction": "minimize",
    "directions": None,
    "constraints": [],
    "n_trials": 4,
    "n_jobs": 1,
    "max_failure_rate": 0.5,
    "sampler": None,
    "pruner": {"name": "median"},
    "params": {},
}


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"n_trials": 0}, "hydra.sweeper.n_trials must be a positive whole number, got 0."),
        ({"n_jobs": -1}, "hydra.sweeper.n_jobs must be a positive whole number, got -1."),
        ({"max_failure_rate": 1.5}, "hydra.sweeper.max_failure_rate must be between 0 and 1, got 1.5."),
        (
            {"n_trials": 2, "n_jobs": 3},
            "hydra.sweeper.n_jobs=3 is more than hydra.sweeper.n_trials=2: the surplus",
        ),
    ],
)
def test_bad_sweeper_options_are_named(option, message):
    """The ranges types cannot say, declared beside the schema; the closed sets (direction, directions,
    pruner.name) are refused by OmegaConf while composing (test_bad_sweeper_option_is_refused_while_composing)."""
    from omegaconf import OmegaConf

    from medexp.config import UserError
    from medexp.config.rules import check_tree
    from medexp.sweep.schema import MedexpOptunaSweeperConf

    conf = OmegaConf.structured(MedexpOptunaSweeperConf)
    check_tree(conf, "hydra.sweeper")  # the defaults are sound
    with pytest.raises(UserError) as error:
        check_tree(OmegaConf.merge(conf, option), "hydra.sweeper")
    assert str(error.value).startswith(message)


def test_unsupported_sweep_expression_is_a_clear_error(tmp_path):
    proc = sweep(tmp_path, 2, "lora.r=glob(*)", expect=2)
    assert "medexp: error: the search space cannot be sampled" in proc.stderr


# --- what a study optimizes: constraints, several objectives -------------------------------------------------


def test_constraints_and_objectives_are_parsed_and_checked_against_the_eval_group(make_cfg):
    from medexp.sweep.objectives import missing_metric_error, objectives_error, parse_constraints

    (c,) = parse_constraints(["eval/safety_pass_rate>=0.9"])
    assert (c.text, c.metric, c.op, c.bound) == (
        "eval/safety_pass_rate >= 0.9",
        "eval/safety_pass_rate",
        ">=",
        0.9,
    )
    assert c.violation({"eval/safety_pass_rate": 0.95}) == pytest.approx(-0.05)  # met: <= 0
    assert c.violation({"eval/safety_pass_rate": 0.5}) == pytest.approx(0.4)
    assert c.violation({}) == float("inf")  # not produced: infeasible, never guessed
    (le,) = parse_constraints(["eval_loss <= 3"])
    assert le.violation({"eval_loss": 2.5}) == pytest.approx(-0.5)
    for bad in ["eval/safety_pass_rate > 0.9", "eval_loss <= lots", "<= 3", "eval_loss <= inf"]:
        with pytest.raises(ValueError, match="not `<metric> >= <number>`"):
            parse_constraints([bad])

    cfg = make_cfg("hparams_search=lora_optuna")  # generation and safety off, held-out loss on
    assert missing_metric_error("eval/perplexity", cfg, "x") is None
    assert missing_metric_error("eval/base/loss", cfg, "x") is None
    off = missing_metric_error("eval/safety_pass_rate", cfg, "the constraint 'eval/safety_pass_rate >= 0.9'")
    assert "eval.safety.enabled is off" in off and "eval.safety.enabled=true" in off
    assert "eval.generation.enabled is off" in missing_metric_error("eval/rouge_l", cfg, "x")
    assert "not a metric medexp computes" in missing_metric_error("eval/no_such_score", cfg, "x")
    assert "not a metric medexp computes" in missing_metric_error("eval/delta/loss", cfg, "x")
    safe = make_cfg("hparams_search=lora_optuna", "eval.safety.enabled=true")
    assert objectives_error(safe, None, ["eval/safety_pass_rate >= 0.9"], "hyperband") is None

    two = make_cfg("hparams_search=lora_optuna", "optimized_metric=[eval_loss,eval/perplexity]")
    assert "give one direction for each" in objectives_error(two, None, [], "none")
    assert "1 directions for the 2 metrics" in objectives_error(two, ["minimize"], [], "none")
    assert "cannot prune" in objectives_error(two, ["minimize", "maximize"], [], "hyperband")
    assert objectives_error(two, ["minimize", "maximize"], [], "none") is None


# slow (~30 s, a 4-trial study): kept out of the default suite's 10-minute budget; pytest -m slow runs it
@pytest.mark.slow
def test_a_constrained_multi_objective_study_keeps_infeasible_trials_off_the_front(tmp_path):
    """Three seeded trials: one that learns (low eval_loss and perplexity), one that barely moves, and one whose
    config fails. Minimising eval_loss while maximising perplexity, neither of the first two dominates the other;
    the constraint keeps only the one that barely moved, so it alone is the Pareto front, and the other is marked
    infeasible everywhere. The failing trial is recorded with its error and the sweep goes on."""
    learns = {"lora.r": 8, "lora.alpha": 16, "trainer.learning_rate": 1e-3}
    still = {"lora.r": 8, "lora.alpha": 16, "trainer.learning_rate": 1e-7}
    fails = {"lora.r": 0, "lora.alpha": 16, "trainer.learning_rate": 1e-3}
    seeded_study_directions(tmp_path, ["minimize", "maximize"], fails, learns, still)
    proc = sweep(
        tmp_path,
        3,
        "lora.r=choice(0, 8)",
        "optimized_metric=[eval_loss,eval/perplexity]",
        "hydra.sweeper.directions=[minimize,maximize]",
        f'hydra.sweeper.constraints=["eval_loss >= {CONSTRAINT_LOSS}"]',
        NO_PRUNING,
    )
    s = study(tmp_path)
    t_fails, t_learns, t_still = s.trials
    assert [t.state.name for t in s.trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    # the UserError's own paragraph is recorded (its exact wording is medexp.config's)
    error = t_fails.user_attrs["medexp.error"]
    assert error.startswith("UserError: lora.r must be") and "got 0" in error
    assert "trial 0 failed: UserError: lora.r must be" in proc.stderr + proc.stdout
    assert t_learns.values[0] < CONSTRAINT_LOSS <= t_still.values[0]  # the bound sits between them
    assert t_learns.constraints == {
        f"eval_loss >= {CONSTRAINT_LOSS:g}": pytest.approx(CONSTRAINT_LOSS - t_learns.values[0])
    }
    assert [t.number for t in s.best_trials] == [t_still.number]
    assert "Pareto front: 1 trials" in proc.stdout and f"best trial: #{t_still.number}" in proc.stdout

    table = (tmp_path / "multirun" / "lora_optuna" / "report" / "trials.csv").read_text().splitlines()
    assert table[0].endswith(",feasible") and [row.rsplit(",", 1)[1] for row in table[1:]] == [
        "",
        "False",
        "True",
    ]
    client, (parent,), children = mlflow_runs(tmp_path)
    feasible = {c.data.tags["medexp.optuna_trial"]: c.data.tags.get("medexp.feasible") for c in children}
    assert feasible == {"1": "false", "2": "true"}  # the failing trial stopped before its run began
    assert parent.data.metrics["trials/infeasible"] == 1
    plots = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"pareto_front.png", "parallel_coordinate.png"} <= plots


def seeded_study_directions(tmp_path: Path, directions: list[str], *params: dict) -> None:
    (tmp_path / "multirun" / "lora_optuna").mkdir(parents=True)
    s = optuna.create_study(study_name="lora_optuna", storage=storage(tmp_path), directions=directions)
    for p in params:
        s.enqueue_trial(p)


# --- parallel trials through Hydra's launchers ------------------------------------------------------------------


def _trial_span(trial_dir: Path) -> tuple[str, str]:
    """The first and last timestamps of a trial's Hydra job log ("[2026-11-23 17:45:01,123][...")."""
    stamps = [
        line[1:24] for line in (trial_dir / "train.log").read_text().splitlines() if line.startswith("[20")
    ]
    return stamps[0], stamps[-1]


def assert_ran_at_once(tmp_path: Path, numbers: list[int]) -> None:
    """Those trials ran in processes of their own (not the sweeper's), at the same time, each with its share
    of the cores."""
    import yaml

    trials = study(tmp_path).trials
    sweeper_pid = int(trials[0].user_attrs["medexp.worker"].rpartition(":")[2])
    dirs = [tmp_path / "multirun" / "lora_optuna" / f"trial_{n}" for n in numbers]
    pids = {json.loads((d / "run.json").read_text())["pid"] for d in dirs}
    assert len(pids) == len(numbers) and sweeper_pid not in pids
    (a_start, a_end), (b_start, b_end) = (_trial_span(d) for d in dirs[:2])
    assert a_start < b_end and b_start < a_end  # the two trials' runs overlapped in time
    share = str(max(1, len(os.sched_getaffinity(0)) // len(numbers)))
    for d in dirs:
        env = yaml.safe_load((d / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["env_set"]
        assert env["OMP_NUM_THREADS"] == share


@pytest.mark.slow  # ~45 s (each job a fresh process); the joblib path runs in the default suite
def test_submitit_local_runs_trials_as_slurm_would(tmp_path):
    """hydra/launcher=submitit_local: each job pickled and run in a process of its own, reconnecting to the
    study through the storage URL to report and be pruned, two at once."""
    sweep(tmp_path, 2, "hydra/launcher=submitit_local", "hydra.sweeper.n_jobs=2", NO_PRUNING)
    trials = study(tmp_path).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert all(t.intermediate_values for t in trials)  # each job reported to the study as it trained
    assert_ran_at_once(tmp_path, [0, 1])
    assert (tmp_path / "multirun" / "lora_optuna" / ".submitit").is_dir()


def test_the_slurm_preset_composes_with_gpus_time_and_memory_per_trial():
    cfg, _ = _sweeper_params("hparams_search=lora_optuna", "hydra/launcher=slurm_trial")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.timeout_min, launcher.mem_gb) == (
        1,
        1,
        240,
        32,
    )


def test_n_jobs_over_the_trials_a_resumed_study_has_left_is_refused(tmp_path):
    """n_jobs=2 against a study with one trial left of 4: refused in one paragraph, the study untouched."""
    seeded_study(tmp_path)
    s = study(tmp_path)
    space = {"lora.r": CategoricalDistribution([4, 8, 16, 32, 64])}
    for value in (3.0, 2.0, 1.0):
        s.add_trial(optuna.trial.create_trial(params={"lora.r": 8}, distributions=space, value=value))
    proc = sweep(tmp_path, 4, "hydra.sweeper.n_jobs=2", expect=2)
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("medexp: error:")]
    assert "hydra.sweeper.n_jobs=2 is more than the 1 trials" in line and "n_trials=4, 3 done" in line
    assert [t.state.name for t in study(tmp_path).trials] == ["COMPLETE"] * 3  # nothing asked, nothing lost
