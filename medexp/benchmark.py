"""Standard medical benchmarks on a trained adapter and its base, through lm-evaluation-harness:

    python -m medexp.benchmark source=<run id | run dir | models:/name/version> \\
        [tasks=[pubmedqa,medmcqa,medqa_4options]] [limit=200] [include_path=my_tasks/]

Needs the benchmark extra (pip install -e ".[bench]"). The work is `medexp.evaluation.benchmark`.
"""

from __future__ import annotations

from omegaconf import DictConfig

from medexp.config import UserError, command


@command("benchmark")
def main(cfg: DictConfig) -> None:
    from medexp.evaluation.benchmark import benchmark_source

    for name, value, least in (
        ("batch_size", cfg.batch_size, 1),
        ("limit", cfg.limit, 1),
        ("num_fewshot", cfg.num_fewshot, 0),
    ):
        if value is not None and value < least:
            raise UserError(
                f"{name} must be a whole number >= {least} (got {value}); null where allowed means the default."
            )
    if not cfg.tasks:
        raise UserError("tasks is empty. Name at least one lm-eval task, e.g. tasks=[pubmedqa,medmcqa].")
    benchmark_source(cfg)


if __name__ == "__main__":
    main()
