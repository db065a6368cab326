"""Export a trained model: the adapter, optionally one merged checkpoint, a model card; optionally register it
in the MLflow Model Registry and push it to the Hugging Face Hub.

    python -m medexp.export source=<run id | run dir | models:/name/version> output_dir=exports/medquad-lora \\
        [merge=true] [format=gguf gguf.quant=q8_0 | format=gguf_lora] [register=true registered_name=medquad-lora]
        [push_to_hub=true hub_repo=user/medquad-lora]

The work is `medexp.serving.publish.export`.
"""

from __future__ import annotations

from omegaconf import DictConfig

from medexp.config import command, validate


@command("export")
def main(cfg: DictConfig) -> None:
    validate(cfg)
    from medexp.serving.publish import export

    export(cfg)


if __name__ == "__main__":
    main()
