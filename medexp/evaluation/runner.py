"""The evaluation loop: the eval group's suites (medexp.evaluation.suites: generation on held-out questions,
the quality judge, multiple choice, out-of-domain prompts, safety probes, a user's prompts and own suites) run in
order on a trained model, each answered by the adapted model and by the base model (adapters off), under one
progress bar. Metric names: eval/<name>, eval/base/<name>, eval/delta/<name> (adapted - base)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from medexp.evaluation.result import EvalResult
from medexp.evaluation.suites.base import EvalContext, Suite
from medexp.evaluation.suites.registry import after_training

if TYPE_CHECKING:
    from medexp.data import PreparedData


class _Progress:
    """One bar over every answer the suites produce (generated or scored), for both models; the description
    names the suite being run. Callees see `over(items)`, a list that moves the bar as it is iterated, or call
    `advance(n)` as n answers are done (a batch of generations)."""

    def __init__(self, total: int) -> None:
        from tqdm.auto import tqdm

        from medexp.console import redirect_console_logging

        self._redirect = contextlib.ExitStack()
        self._redirect.enter_context(redirect_console_logging())
        self.bar = tqdm(total=total, desc="eval", unit="answer", dynamic_ncols=True)

    def suite(self, name: str) -> None:
        self.bar.set_description(f"eval {name}")

    def over(self, items: list) -> list:
        return _Ticking(items, self.bar)

    def advance(self, n: int) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.set_description("eval")
        self.bar.close()
        self._redirect.close()


class _Ticking(list):
    """A list whose iteration advances a progress bar by one as each item is done with."""

    def __init__(self, items: list, bar: Any) -> None:
        super().__init__(items)
        self.bar = bar

    def __iter__(self):
        for item in super().__iter__():
            yield item
            self.bar.update(1)


def evaluate_model(
    eval_cfg: DictConfig,
    model: Any,
    tokenizer: Any,
    data: PreparedData,
    source_cfgs: dict[str, DictConfig],
    seed: int,
    suites: list[Suite] | None = None,
) -> EvalResult:
    """Run every enabled suite of `eval_cfg` (or `suites`) on `model` (a PEFT model; its base is the same with
    adapters off), in order, under one progress bar."""
    chosen = after_training(eval_cfg) if suites is None else suites
    ctx = EvalContext(eval_cfg, model, tokenizer, data, source_cfgs, seed, progress=None)
    total = sum(suite.prepare(ctx) for suite in chosen)  # every suite's inputs first: the bar's total
    ctx.progress = _Progress(total)
    try:
        for suite in chosen:
            ctx.progress.suite(suite.name)
            suite.run(ctx)
    finally:
        ctx.progress.close()
    return ctx.result
