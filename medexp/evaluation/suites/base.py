"""The interface every evaluation suite follows, medexp's own and a user's (`eval.suites.<name>._target_`).

A suite says which metrics it produces for a config (`metrics`, the names after `eval/`, and whether base/ and
delta/ copies exist), what turns it on (`switches`), how many answers it will produce (`prepare`, for the one
progress bar) and does its work in `run`, writing into `ctx.result`. The metric map that config checks and
sweep constraints use (medexp.evaluation.metrics) is built from the suites' `metrics`, so one list names them.

A suite object serves one evaluation: `prepare` may keep the inputs it read on `self` for `run`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from omegaconf import DictConfig, OmegaConf

from medexp.evaluation.result import EvalResult

if TYPE_CHECKING:
    from medexp.data import PreparedData
    from medexp.evaluation.generation import Generation


@dataclass(frozen=True)
class Switch:
    """A config value a metric needs: its key, whether this config has it on, and how to turn it on."""

    key: str  # e.g. eval.safety.enabled
    on: bool
    fix: str = ""  # the override that turns it on; "" = `<key>=true`
    preset: str | None = None  # an eval option with it on, named as an alternative, e.g. eval=safety

    @property
    def turn_on(self) -> str:
        return self.fix or f"{self.key}=true"


def flag(eval_cfg: DictConfig, path: str, preset: str | None = None) -> Switch:
    """The boolean eval.<path> as a Switch."""
    return Switch(f"eval.{path}", bool(OmegaConf.select(eval_cfg, path)), preset=preset)


@dataclass(frozen=True)
class Metric:
    """One metric a suite logs as eval/<name> (for the adapted model)."""

    name: str  # after eval/, e.g. rouge_l or mc/medqa/accuracy
    base: bool = True  # also eval/base/<name>, the base model's value (with eval.before_training)
    delta: bool = True  # also eval/delta/<name> = adapted - base (with eval.before_training)
    needs: tuple[Switch, ...] = ()  # config values this metric needs besides the suite's own switches
    certain: bool = True  # False: logged only when the data holds such items (multiple-choice questions)
    # for such a metric: why this run's data can never hold them (a sentence), or None; judged on the train root
    never: Callable[[DictConfig], str | None] | None = None


@dataclass
class EvalContext:
    """What a suite runs on: the eval group, the trained model (a PEFT model: its base is the same with adapters
    off), the run's prepared data, each data source's config by name ("dataset" is the main one), the seed, the
    result to write into and the one progress bar (`suite(name)`, `over(items)`, `advance(n)`)."""

    eval_cfg: DictConfig
    model: Any
    tokenizer: Any
    data: PreparedData
    sources: dict[str, DictConfig]
    seed: int
    progress: Any
    result: EvalResult = field(default_factory=EvalResult)

    @property
    def compare(self) -> bool:
        """Whether the base model answers too (eval.before_training): eval/base/* and eval/delta/*."""
        return bool(self.eval_cfg.before_training)

    @property
    def models(self) -> int:
        """How many models answer each prompt: 2 with the base model, else 1 (for progress counts)."""
        return 2 if self.compare else 1

    @property
    def system_prompt(self) -> str:
        """The main dataset's system prompt, used for prompts of no dataset (out-of-domain, safety, a file)."""
        return str(self.sources["dataset"].system_prompt).strip()

    def answer(
        self, system: str | list[str], prompts: list[str]
    ) -> tuple[list[Generation], list[Generation] | None]:
        """The adapted model's greedy answers and, when the base model is evaluated too, its answers (else None),
        generated in batches of eval.generation.batch_size; the progress bar moves by each batch."""
        from medexp.evaluation.generation import as_base, generate

        gen_cfg = self.eval_cfg.generation
        adapted = generate(
            self.model, self.tokenizer, system, prompts, gen_cfg, advance=self.progress.advance
        )
        if not self.compare:
            return adapted, None
        with as_base(self.model):
            base = generate(
                self.model, self.tokenizer, system, prompts, gen_cfg, advance=self.progress.advance
            )
        return adapted, base

    def latencies(
        self, system: str | list[str], prompts: list[str]
    ) -> tuple[list[float], list[float] | None]:
        """Single-request seconds of the adapted model and, with the base model, of the base model (else None)."""
        from medexp.evaluation.generation import as_base, request_latencies

        gen_cfg, advance = self.eval_cfg.generation, self.progress.advance
        adapted = request_latencies(self.model, self.tokenizer, system, prompts, gen_cfg, advance)
        if not self.compare:
            return adapted, None
        with as_base(self.model):
            return adapted, request_latencies(self.model, self.tokenizer, system, prompts, gen_cfg, advance)


class Suite:
    """Base class of medexp's suites; a user's suite may subclass it or just have `metrics` and `run`."""

    name: str = ""  # shown on the progress bar and in errors
    # False for a suite whose metrics the training loop measures (held-out loss): evaluate_model does not run it
    runs_after_training: ClassVar[bool] = True

    def switches(self, eval_cfg: DictConfig) -> tuple[Switch, ...]:
        """The config values that turn this suite on; it runs when all are on."""
        return ()

    def enabled(self, eval_cfg: DictConfig) -> bool:
        return all(s.on for s in self.switches(eval_cfg))

    def metrics(self, eval_cfg: DictConfig) -> list[Metric]:
        """The metrics this suite logs for this eval group when it is on (names after eval/)."""
        raise NotImplementedError

    def prepare(self, ctx: EvalContext) -> int:
        """Read the inputs; return how many answers the progress bar counts for this suite (both models)."""
        return 0

    def run(self, ctx: EvalContext) -> None:
        """Answer, score, and write metrics (`ctx.result.add`) and generations-table rows into `ctx.result`."""
        raise NotImplementedError


def read_jsonl(path: Path) -> list[dict]:
    """The objects of a JSON-lines file (blank lines skipped): the embedded prompt sets."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
