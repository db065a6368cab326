"""Standard medical benchmarks on a trained adapter and its base, through lm-evaluation-harness:

    python -m medexp.benchmark source=<run id | run dir | models:/name/version> \\
        [tasks=[pubmedqa,medmcqa,medqa_4options]] [limit=200] [include_path=my_tasks/]

Needs the benchmark extra (pip install -e ".[bench]"). The work is `medexp.evaluation.benchmark`.
"""

from __future__ import annotations

from omegaconf import DictConfig

from medexp.config import command, validate


@command("benchmark")
def main(cfg: DictConfig) -> None:
    validate(cfg)  # batch_size, limit, num_fewshot, tasks: medexp/config/commands.py
    from medexp.evaluation.benchmark import benchmark_source

    benchmark_source(cfg)


if __name__ == "__main__":
    main()
