"""grpo: reinforcement learning with verifiable rewards (`stages.<name>.kind=grpo`): TRL's GRPOTrainer samples
`trainer.grpo_num_generations` completions per question, scores them with the weighted rewards of the `reward`
group (medexp.training.rewards) and moves the run's LoRA adapter towards the completions that beat their group's
mean. Never a default kind: a stage asks for it.

Data: question-answer pairs of any format. Multiple-choice data (dataset.kind=multiple_choice) keeps the gold
option letter, data with decisions (dataset.decision_field, PubMedQA) keeps yes/no/maybe, free-text pairs keep
the reference answer. Each question becomes a conversational prompt: the run's system prompt, the question and
the required answer format (reasoning, then a final line `Answer: X`).

The reference: with trainer.grpo_beta > 0, TRL copies the adapter as it is at the start of the stage into a
frozen "ref" adapter (as for dpo), so the KL leash holds the policy to the stage's starting model; it is dropped
when the stage ends. With 0 (TRL's default since DAPO and Dr. GRPO dropped the KL term) there is no reference
pass at all: the low-rank adapter and the clipped ratio are the leash.

Logged per step: rewards/<term>/mean and /std, reward, reward_std, frac_reward_zero_std (the share of groups
whose rewards all tie: no learning signal), completions/mean_length, completions/clipped_ratio (completions cut
at the length limit), clip_ratio/region_mean, entropy, and kl when grpo_beta > 0. The stage keeps its last
policy (an RL curve has no held-out loss to pick a best checkpoint by); eval_loss is the GRPO loss on the
validation prompts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from medexp.config.errors import UserError
from medexp.data.answer_line import answer_kind, gold_of
from medexp.data.answer_text import FORMAT
from medexp.data.chat import chat_messages
from medexp.data.prepared import PreparedData
from medexp.data.records import QAPair
from medexp.data.rows import RawRecords, Source
from medexp.training.methods.base import StageKind
from medexp.training.methods.dpo import drop_reference
from medexp.training.rewards.registry import build_rewards, check_rewards

log = logging.getLogger(__name__)

VLLM_MEMORY = (
    0.3  # colocated vLLM's share of the GPU: the rest holds the policy, its optimizer and activations
)


class GRPO(StageKind):
    name = "grpo"
    records = (QAPair,)
    needs = "question-answer data (multiple_choice, qa with references or decisions, conversation)"
    verb = "Reinforce"
    perplexity = False  # sampled completions, not the data's answers: no held-out perplexity to compare
    safety_probes = (
        True  # what RL against a scorer most needs watching: the probes' pass rate before and after
    )
    logs = ("reward", "frac_reward_zero_std", "completions/mean_length", "kl")
    # a sweep prunes on the mean reward of the validation questions' rollouts: the GRPO loss does not compare
    # across settings (its advantages are centred per group; beta adds a KL term), the reward does
    progress = ("eval_reward", "maximize")

    def check(self, name: str, stage_cfg: DictConfig, last: bool) -> None:
        check_rewards(stage_cfg.reward, answer_kind(stage_cfg.dataset), name)
        if stage_cfg.mixture:
            raise UserError(
                f"stages.{name}.kind=grpo trains on its own questions, but the run has a mixture "
                f"({', '.join(stage_cfg.mixture)}), which is mixed into supervised stages. Drop it for this run "
                "(mixture={}), or give the GRPO stage the questions you want rewarded as its dataset."
            )
        _check_groups(name, stage_cfg.trainer)
        if stage_cfg.trainer.rollout_engine == "vllm":
            _check_vllm(name)

    def prepare(
        self,
        raw: RawRecords,
        dataset_cfg: DictConfig,
        tokenizer: Any,
        seed: int,
        mixture: Sequence[Source],
    ) -> PreparedData:
        """Cleaned and split as the data's reader prepares it; each split then holds the prompts and the
        gold / reference columns the rewards read."""
        data = super().prepare(raw, dataset_cfg, tokenizer, seed, mixture)
        data.lengths = {split: data.token_lengths(split) for split in ("train", "validation")}
        kind, system = answer_kind(dataset_cfg), str(dataset_cfg.system_prompt).strip()
        data.train = prompt_dataset(data.train_pairs, kind, system)
        data.validation = prompt_dataset(data.validation_pairs, kind, system)
        return data

    def build_trainer(
        self,
        cfg: DictConfig,
        model: Any,
        tokenizer: Any,
        data: PreparedData,
        output_dir: Path,
        precision: str,
        callbacks: list[Any],
    ) -> Any:
        return build_grpo_trainer(cfg, model, tokenizer, data, output_dir, precision, callbacks)

    def finish(self, model: Any) -> None:
        drop_reference(model)


def prompt_dataset(pairs: Sequence[tuple[str, str]], kind: str, system: str) -> Any:
    """prompt (system + question + the required format), gold (the option letter or yes/no/maybe, "" for free
    text), reference (the answer) and answer_kind columns."""
    import datasets

    prompts, golds = [], []
    for question, answer in pairs:
        messages = chat_messages(system, question)
        if not question.endswith(FORMAT[kind]):  # a final_line pair carries the instruction already
            messages[-1] = {**messages[-1], "content": f"{messages[-1]['content']}\n\n{FORMAT[kind]}"}
        prompts.append(messages)
        golds.append(gold_of(answer, kind))
    return datasets.Dataset.from_dict(
        {
            "prompt": prompts,
            "gold": golds,
            "reference": [answer for _, answer in pairs],
            "answer_kind": [kind] * len(pairs),
        }
    )


def _check_groups(name: str, t: DictConfig) -> None:
    """Every generation batch (and evaluation batch) holds whole groups of grpo_num_generations completions."""
    from medexp.config.runtime import gradient_accumulation

    group = int(t.grpo_num_generations)
    generation = int(t.batch_size) * gradient_accumulation(t)
    for what, size, hint in (
        ("trainer.batch_size x the accumulation steps", generation, "trainer.batch_size"),
        ("trainer.eval_batch_size", int(t.eval_batch_size), "trainer.eval_batch_size"),
    ):
        if size % group:
            raise UserError(
                f"stages.{name}: trainer.grpo_num_generations={group} does not divide the generation batch "
                f"({what} = {size} completions), so a question's group would be split across batches. Make "
                f"{hint} a multiple of {group} (e.g. {max(1, size // group) * group}), or choose a group size "
                f"that divides {size}."
            )


def _check_vllm(name: str) -> None:
    """vLLM rollouts need the vllm package and a CUDA GPU."""
    import importlib.util

    missing = importlib.util.find_spec("vllm") is None
    if not missing:
        import torch

        if torch.cuda.is_available():
            return
    raise UserError(
        f"stages.{name}: trainer.rollout_engine=vllm generates the rollouts with TRL's colocated vLLM engine, "
        f"which needs {'the vllm package (pip install vllm)' if missing else 'a CUDA GPU'}, and this machine "
        "has none. Use trainer.rollout_engine=transformers (the default: generate() on CPU or GPU)."
    )


def build_grpo_trainer(
    cfg: DictConfig,
    model: Any,
    tokenizer: Any,
    data: PreparedData,
    output_dir: Path,
    precision: str,
    callbacks: list[Any],
) -> Any:
    from trl import GRPOConfig, GRPOTrainer

    from medexp.training.trainer import training_arguments, trl_trainer

    t = cfg.trainer
    funcs, weights = build_rewards(cfg.reward)
    shared = {
        **training_arguments(cfg, output_dir, precision),
        "load_best_model_at_end": False,  # an RL stage keeps its last policy: no held-out loss to pick by
        "metric_for_best_model": None,
        "include_num_input_tokens_seen": "no",  # GRPO's batches are prompts; it logs num_tokens itself
    }
    vllm = t.rollout_engine == "vllm"
    args = GRPOConfig(
        **shared,
        num_generations=int(t.grpo_num_generations),  # a question's group: its advantages are relative to it
        max_completion_length=int(t.grpo_max_completion_length),
        temperature=float(t.grpo_temperature),
        beta=float(t.grpo_beta),  # > 0: TRL keeps a frozen copy of the starting adapter as the reference
        loss_type=str(t.grpo_loss),
        # Dr. GRPO also drops the per-group std scaling (a question-difficulty bias); the others keep it
        scale_rewards="none" if t.grpo_loss == "dr_grpo" else "group",
        reward_weights=weights,
        use_vllm=vllm,
        vllm_mode="colocate",  # in the training process, on its GPU: no separate vLLM server to launch
        vllm_gpu_memory_utilization=VLLM_MEMORY,
        log_completions=False,  # TRL's rich table of samples; medexp's console line reports the rewards
    )
    # no early stopping: a GRPO stage has no held-out loss to stop on (its last policy is kept)
    trainer = trl_trainer(
        GRPOTrainer, args, cfg, model, tokenizer, data, callbacks, early_stopping=False, reward_funcs=funcs
    )
    log.info(
        "GRPO: %d completions per question, rewards %s, beta %s, loss %s, rollouts by %s",
        t.grpo_num_generations,
        ", ".join(f"{f.__name__} x{w:g}" for f, w in zip(funcs, weights, strict=True)),
        t.grpo_beta,
        t.grpo_loss,
        t.rollout_engine,
    )
    return trainer
