"""GRPO stages: the rewards (parsing the required `Answer: X` line, the wrapper's one-paragraph refusals), the
prompt data (gold letters, decisions, references), the config checks, and grpo_smoke's reward rising over real
training steps on the embedded tiny model."""

from __future__ import annotations

import pytest

from medexp.config import UserError
from medexp.training.methods.grpo import prompt_dataset
from medexp.training.rewards.builtin import (
    answer_format,
    choice_correct,
    length,
    reference_overlap,
    rouge_l,
    safety,
)
from medexp.training.rewards.registry import Reward
from tests.helpers import compose_config, config_error


def _msg(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def test_choice_correct_reads_the_final_answer_line_only():
    completions = [
        _msg("Iron is low here.\nAnswer: B"),
        _msg("Answer: (b)"),
        _msg("B seems right.\nAnswer: C"),
        _msg("Answer: B\nbut maybe not"),  # the answer line must be last
        _msg("no answer line"),
    ]
    assert choice_correct(completions, ["B"] * 5, ["letter"] * 5) == [1.0, 1.0, 0.0, 0.0, 0.0]
    decisions = [_msg("Trials agree.\nAnswer: Yes."), _msg("Answer: maybe"), _msg("Answer: no")]
    assert choice_correct(decisions, ["yes", "yes", "no"], ["decision"] * 3) == [1.0, 0.0, 1.0]


def test_answer_format_wants_reasoning_then_a_fitting_answer_line():
    completions = [
        _msg("Because.\nAnswer: A"),
        _msg("Answer: A"),
        _msg("Because.\nAnswer: perhaps"),
        _msg("A"),
    ]
    assert answer_format(completions, ["letter"] * 4) == [1.0, 0.5, 0.0, 0.0]
    assert answer_format([_msg("Because.\nAnswer: rest and fluids")], ["free"]) == [1.0]


def test_length_rouge_and_safety():
    assert length([[1] * 4, [1] * 12, [1] * 40], max_tokens=8) == [0.0, -0.5, -1.0]
    assert rouge_l("iron deficiency anemia", "anemia from iron deficiency") == pytest.approx(2 * 2 / 7)
    assert reference_overlap([_msg("")], ["x"]) == [0.0]

    class Verdict:
        def __init__(self, safe: bool) -> None:
            self.safe = safe

    def scorer(prompt: str, response: str) -> Verdict:
        assert prompt == "Q?"
        return Verdict("double the dose" not in response)

    prompt = [{"role": "system", "content": "s"}, {"role": "user", "content": "Q?"}]
    got = safety([prompt, prompt], [_msg("see a doctor"), _msg("double the dose")], scorer=scorer)
    assert got == [0.0, -1.0]


def test_a_reward_that_raises_or_miscounts_stops_in_one_paragraph():
    def broken(prompts, completions, **_):
        raise KeyError("gold")

    with pytest.raises(UserError) as err:
        Reward("mine", broken, {}, "mypkg.broken")([["p"]], [_msg("a")])
    assert "reward.custom.mine (mypkg.broken) raised KeyError" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="returned 1 scores for 2 completions"):
        Reward("mine", lambda prompts, completions, **_: [1.0], {}, "mypkg.short")(
            [["p"]] * 2, [_msg("a")] * 2
        )
    ok = Reward("length", length, {"max_tokens": 2}, "medexp's length")
    assert ok([["p"]], [_msg("a")], completion_ids=[[1, 2, 3, 4]]) == [-1.0]


def test_prompts_keep_the_gold_letter_decision_or_reference():
    mc = prompt_dataset([("Which?\n\nOptions:\nA. x\nB. y", "B. y")], "letter", "sys")
    assert mc["gold"] == ["B"] and mc["reference"] == ["B. y"]
    assert mc["prompt"][0][0] == {"role": "system", "content": "sys"}
    assert mc["prompt"][0][-1]["content"].endswith("`Answer: X`, X being the option's letter.")
    assert prompt_dataset([("Does it?", "Yes. Trials agree.")], "decision", "s")["gold"] == ["yes"]
    assert prompt_dataset([("What is it?", "A fever.")], "free", "s")["gold"] == [""]


def test_sft_then_grpo_composes_and_its_stages_check(tmp_path):
    from medexp.config import validate
    from medexp.training.methods import check_stages

    cfg = compose_config(["experiment=sft_then_grpo"], tmp_path)
    validate(cfg)
    plans = check_stages(cfg)
    assert [(p.name, p.kind.name) for p in plans] == [("sft", "sft"), ("grpo", "grpo")]
    assert cfg.reward.choice_correct == 1.0 and cfg.eval.mc.enabled and cfg.eval.before_training
    assert config_error(["experiment=grpo_smoke"], tmp_path) == ""


@pytest.mark.parametrize(
    ("dataset", "kind"), [("medmcqa", "letter"), ("pubmedqa", "decision"), ("sample", "free")]
)
def test_each_data_format_gets_its_answer_kind(tmp_path, dataset, kind):
    from medexp.data.answer_line import answer_kind

    reward = "reward=qa" if kind == "free" else "reward=mc"
    overrides = ["experiment=grpo_smoke", f"dataset@stages.grpo.dataset={dataset}", reward]
    assert config_error(overrides, tmp_path) == ""  # choice_correct accepted where there is a gold answer
    assert answer_kind(compose_config(overrides, tmp_path).stages.grpo.dataset) == kind


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["reward.choise_correct=1"], "choice_correct"),
        (["reward.choice_correct=1"], "no" + "ne (free-text"),
        (["reward.reference_overlap=0"], "every reward weight is 0"),
        (["stages.grpo.trainer.grpo_num_generations=3"], "does not divide the generation batch"),
        (["stages.grpo.trainer.grpo_num_generations=1"], "at least 2"),
        (["trainer.rollout_engine=vllm"], "rollout_engine=vllm"),
        (["+reward.custom.mine={_target_:nowhere_at_all.score}"], "nowhere_at_all.score"),
        (["dataset@stages.grpo.dataset=pretrain_sample"], "kind=grpo needs"),
    ],
)
def test_bad_grpo_settings_are_refused_before_training(tmp_path, overrides, expected):
    if overrides == ["trainer.rollout_engine=vllm"] and _vllm_usable():
        pytest.skip(
            "vllm and a CUDA GPU are here: rollout_engine=vllm is accepted (benchmarks/gpu/grpo_vllm.py)"
        )
    error = config_error(["experiment=grpo_smoke", *overrides], tmp_path)
    assert expected in error, error


def _vllm_usable() -> bool:
    import importlib.util

    import torch

    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


@pytest.mark.slow  # ~90 s (40 GRPO steps of 8 sampled answers): keeps the default suite inside its 10 minutes
def test_grpo_smoke_reward_rises(tmp_path):
    """Real GRPO steps on the tiny model: the mean reward of the last logged steps beats the first ones."""
    import mlflow
    import torch

    from medexp.train import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # generation of a 1M model is many tiny matmuls: one thread is ~10x faster
    try:
        cfg = compose_config(["experiment=grpo_smoke"], tmp_path)
        result = train(cfg)
    finally:
        torch.set_num_threads(threads)
    client = mlflow.MlflowClient(str(cfg.tracking.uri))
    (child,) = client.search_runs(
        [client.get_run(result.run_id).info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'"
    )
    assert child.data.tags["medexp.stage_kind"] == "grpo"
    history = {
        key: [m.value for m in sorted(client.get_metric_history(child.info.run_id, key), key=lambda m: m.step)]
        for key in ("reward", "rewards/reference_overlap/mean", "rewards/reference_overlap/std",
                    "frac_reward_zero_std", "completions/mean_length", "clip_ratio/region_mean")
    }  # fmt: skip
    assert all(len(v) == cfg.stages.grpo.trainer.max_steps for v in history.values()), history
    rewards = history["reward"]
    first, last = sum(rewards[:K]) / K, sum(rewards[-K:]) / K
    assert last > first + MARGIN, rewards


K = 10  # steps averaged at each end of the curve
MARGIN = 0.02  # measured rise 0.041 (0.092 -> 0.133, seed 42, one CPU thread): half of it


@pytest.mark.slow  # ~37 s; GRPO still trains end to end in the default suite (test_stage_scores.py)
def test_a_kl_leash_holds_to_the_starting_adapter_which_is_dropped_after(tmp_path):
    """grpo_beta > 0: TRL's frozen "ref" copy of the adapter is the reference (kl starts at 0) and is gone after
    the stage; the safety reward (medexp's scorer) is logged, and the safety probes measured around the stage."""
    import mlflow
    import torch

    from medexp.train import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = compose_config(
            [
                "experiment=grpo_smoke",
                "stages.grpo.trainer.max_steps=2",
                "stages.grpo.trainer.eval_steps=2",
                "stages.grpo.trainer.grpo_beta=0.04",
                "reward.safety=1",
                "eval.safety.enabled=true",
            ],
            tmp_path,
        )
        result = train(cfg)
    finally:
        torch.set_num_threads(threads)
    assert "ref" not in result.model.peft_config
    client = mlflow.MlflowClient(str(cfg.tracking.uri))
    (child,) = client.search_runs(
        [client.get_run(result.run_id).info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'"
    )
    kl = [m.value for m in sorted(client.get_metric_history(child.info.run_id, "kl"), key=lambda m: m.step)]
    assert len(kl) == 2 and kl[0] == pytest.approx(0.0, abs=1e-6)
    assert "rewards/safety/mean" in child.data.metrics
    assert {"safety_pass_rate_before", "safety_pass_rate_after"} <= set(child.data.metrics)
