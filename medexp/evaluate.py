"""Evaluate a finished run again, without training:

    python -m medexp.evaluate source=<run id | output or adapter dir | models:/name/version> [eval=full ...]

The flow: resolve the source (adapter + the run's config) -> rebuild the run's data split -> base model +
adapter -> held-out loss and perplexity (adapted and base) -> the eval group's suites -> report -> log into
the source's MLflow run (when it has one) and write everything under this command's output directory.
"""

from __future__ import annotations

from omegaconf import DictConfig

from medexp.config import command, validate


@command("evaluate")
def main(cfg: DictConfig) -> None:
    validate(cfg)
    from medexp.evaluation.pipeline import evaluate_source

    evaluate_source(cfg)


if __name__ == "__main__":
    main()
