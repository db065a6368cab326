"""Evaluation suites: the metric map is the suites' own list (a real run logs exactly the names it gives), and a
user's own suite, defined in this file, joins a run through `eval.suites.<name>._target_` without any edit to
medexp: its metric reaches MLflow and may be a run's or a study's optimized metric."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from medexp.config import UserError
from medexp.evaluation.metrics import check_optimized_metric, logged_metrics, missing_metric_error
from medexp.evaluation.suites import EvalContext, Metric, Suite

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"


class ShortAnswers(Suite):
    """A user's suite: the share of the first few held-out questions each model answers in at most
    `max_words` words."""

    def __init__(self, max_words: int = 30, questions: int = 3) -> None:
        self.max_words, self.n = max_words, questions

    def metrics(self, eval_cfg) -> list[Metric]:
        return [Metric("short/share")]  # eval/short/share, eval/base/short/share, eval/delta/short/share

    def prepare(self, ctx: EvalContext) -> int:
        self.questions = [q for q, _ in ctx.data.validation_pairs[: self.n]]
        return len(self.questions) * ctx.models

    def run(self, ctx: EvalContext) -> None:
        adapted, base = ctx.answer(ctx.system_prompt, self.questions)

        def share(gens) -> dict[str, float]:
            return {"short/share": sum(len(g.text.split()) <= self.max_words for g in gens) / len(gens)}

        ctx.result.add(share(adapted), share(base) if base is not None else None)
        ctx.result.answers("short", self.questions, [None] * len(self.questions), adapted, base)


SUITE = [f"+eval.suites.short._target_={__name__}.ShortAnswers", "+eval.suites.short.max_words=12"]


def test_a_real_run_logs_exactly_the_metric_map_and_a_users_suite_is_its_optimized_metric(make_cfg):
    """Every eval suite on (and a multiple-choice set, and the user's suite) on the tiny model: each eval/* name
    the run logs is in the map, and each name the map gives for this config is logged (the run's own
    multiple-choice questions only where its data has some: the sample has none)."""
    from medexp.config.metrics import optimized_metrics
    from medexp.train import train

    cfg = make_cfg(
        "experiment=smoke", "eval=full", "trainer.max_steps=4", "trainer.eval_steps=2",
        "eval.generation.num_questions=3", "eval.generation.max_new_tokens=4", "eval.generation.latency_samples=1",
        "eval.generation.bertscore_model=null", "+dataset@eval.mc.sets.pubmedqa=pubmedqa",
        f"eval.mc.sets.pubmedqa.path={FIXTURES / 'pubmedqa.jsonl'}", *SUITE, "optimized_metric=eval/short/share",
    )  # fmt: skip
    check_optimized_metric(cfg)  # the train command's check: the user's metric is one this run computes
    result = train(cfg)
    logged = MlflowClient(str(cfg.tracking.uri)).get_run(result.run_id).data.metrics
    evaluated = {name for name in logged if name.startswith("eval/") or name == "eval_loss"}
    expected = logged_metrics(cfg.eval)
    assert evaluated - set(expected) == set()  # nothing logged that the map does not name
    assert {name for name, always in expected.items() if always} - evaluated == set()  # nothing missing
    assert {name for name, always in expected.items() if not always} == {
        f"eval/{side}mc/validation/{m}"
        for side in ("", "base/", "delta/")
        for m in ("accuracy", "accuracy_norm")
    } | {"eval/mc/validation/questions"}
    assert {"eval/short/share", "eval/base/short/share", "eval/delta/short/share"} <= evaluated
    (value,) = [result.metrics[name] for name in optimized_metrics(cfg)]  # what main() returns to a sweeper
    assert value == logged["eval/short/share"] and 0 <= value <= 1


def test_a_users_metric_is_a_studys_optimized_metric_and_constraint(make_cfg):
    from medexp.sweep.objectives import objectives_error

    cfg = make_cfg("hparams_search=lora_optuna", *SUITE, "optimized_metric=eval/short/share")
    assert (
        objectives_error(cfg, None, ["eval/short/share >= 0.5", "eval/base/short/share <= 1"], "none") is None
    )
    assert objectives_error(cfg, None, ["eval/short/nope >= 0.5"], "none").startswith(
        "the constraint 'eval/short/nope >= 0.5' names 'eval/short/nope', which is not a metric medexp computes"
    )
    unknown = make_cfg("hparams_search=lora_optuna", *SUITE, "optimized_metric=eval/short/nope")
    assert "optimized_metric=eval/short/nope names 'eval/short/nope'" in objectives_error(
        unknown, None, [], "none"
    )
    without = make_cfg("hparams_search=lora_optuna", "optimized_metric=eval/short/share")  # no such suite
    assert "not a metric medexp computes" in objectives_error(without, None, [], "none")
    with pytest.raises(UserError, match="not a metric medexp computes"):
        check_optimized_metric(without)
    # off, the built-in suites' metrics say which switch turns them on
    assert "(eval.generation.latency_samples is off). Turn it on with eval.generation.latency_samples=4" in (
        missing_metric_error("eval/latency_p95_s", make_cfg("eval.generation.latency_samples=0"), "x")
    )


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        (
            ["+eval.suites.mine._target_=no_such_module.MySuite"],
            "ModuleNotFoundError: No module named 'no_such_module'",
        ),
        ([f"+eval.suites.mine._target_={__name__}.NoSuchSuite"], f"{__name__} has no 'NoSuchSuite'"),
        ([f"+eval.suites.mine._target_={__name__}.ShortAnswers", "+eval.suites.mine.colour=red"], "colour"),
        (["+eval.suites.mine._target_=builtins.dict"], "made a dict, which is not an evaluation suite"),
        (["+eval.suites.mine.max_words=3"], "names no suite"),
    ],
)
def test_a_bad_suite_is_one_paragraph(make_cfg, entry, named):
    from medexp.evaluation.suites import check_inputs

    cfg = make_cfg("experiment=smoke", *entry)
    with pytest.raises(UserError) as err:
        check_inputs(cfg.eval)  # what the train command runs before reading any data
    message = str(err.value)
    assert message.startswith("eval.suites.mine") and named in message and "\n" not in message
    with pytest.raises(UserError, match=r"^eval\.suites\.mine"):
        check_optimized_metric(cfg)


# slow (~1 min, one trial): the study end to end; the check above is the default suite's
@pytest.mark.slow
def test_a_sweep_optimizes_a_users_metric(tmp_path):
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "medexp.train", "--multirun", "hparams_search=lora_optuna", "experiment=smoke",
         "trainer.max_steps=4", "trainer.eval_steps=2", "eval.generation.enabled=false", *SUITE,
         "optimized_metric=eval/short/share", "hydra.sweeper.direction=maximize", "hydra.sweeper.n_trials=1",
         "hydra.sweeper.pruner.name=none"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    import optuna

    study = optuna.load_study(
        study_name="lora_optuna", storage=f"sqlite:///{tmp_path}/multirun/lora_optuna/optuna.db"
    )
    (trial,) = study.trials
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("medexp-smoke").experiment_id])
    (child,) = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert trial.value == child.data.metrics["eval/short/share"]
