"""The typed schema of every config group, and the root of `medexp.train` (the other commands' roots are in
medexp/config/commands.py, which registers them all). The dataset, trainer and eval groups, whose checks are
longer, each have a module of their own (medexp/config/{dataset,trainer,evaluation}.py), re-exported here.

Each dataclass is registered in Hydra's ConfigStore: a group's schema as `<group>/schema` (every YAML option of
the group names it first in its defaults list) and each command's root as `<command>_schema` (first in
conf/<command>.yaml). OmegaConf then refuses an unknown key or a value of the wrong type while Hydra composes
the config, before anything heavy is imported; `medexp.config.errors` turns that into one paragraph.

Values live in the YAML options (with a comment on why); the schema holds types and what each field means.
`MISSING` (`???`) marks a value every option must set. Closed sets are the enums of medexp.config.choices.

What types cannot say (ranges, fields that must agree, files that must exist, extras that must be installed) is
declared on the dataclass it belongs to, as `RULES` and a `check` method (medexp/config/rules.py); `validate`
(medexp/config/checks.py) runs them all over a composed config.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from omegaconf import MISSING, DictConfig

from medexp.config.checks import looks_like_local_path
from medexp.config.choices import (
    MUTATING_INITS,
    AttnImplementation,
    ComputeDtype,
    LoraBias,
    LoraInit,
    ModelDtype,
    QuantType,
)
from medexp.config.dataset import DatasetConfig, NearDupConfig
from medexp.config.errors import UserError
from medexp.config.evaluation import (
    EvalConfig,
    GenerationEvalConfig,
    JudgeConfig,
    MCEvalConfig,
    OODEvalConfig,
    SafetyEvalConfig,
)
from medexp.config.reward import RewardConfig
from medexp.config.rules import Rules, between, check_tree, positive, require
from medexp.config.stages import stage_configs
from medexp.config.trainer import TrainerConfig


# --- model -------------------------------------------------------------------------------------------------
@dataclass
class ModelConfig:
    name_or_path: str = MISSING  # a hub id, a local directory, or a model in the HF cache
    license: str | None = None  # the base model's license, copied into exported model cards
    revision: str | None = None  # hub branch, tag or commit to pin; null = main
    trust_remote_code: bool = False  # run code shipped with the model; only for repositories you trust
    attn_implementation: AttnImplementation = AttnImplementation.sdpa  # attention kernel transformers uses
    dtype: ModelDtype = ModelDtype.auto  # dtype the weights are loaded in

    @staticmethod
    def check(node: DictConfig, key: str, root: DictConfig) -> None:
        """A local model directory exists and holds a saved model (hub ids are checked by preflight)."""
        name = str(node.name_or_path)
        if not looks_like_local_path(name):
            return
        path = Path(name).expanduser()
        if not path.is_dir():
            raise UserError(
                f"{key}.name_or_path={name!r} looks like a local path but no such directory exists. Give a "
                "directory holding config.json and the weights (as saved by save_pretrained), or a hub id such as "
                "HuggingFaceTB/SmolLM-135M-Instruct."
            )
        if not (path / "config.json").is_file():
            raise UserError(
                f"{key}.name_or_path={name!r} is a directory but has no config.json, so it is not a saved model. "
                "Point it at the folder that save_pretrained wrote."
            )


# --- lora --------------------------------------------------------------------------------------------------
@dataclass
class QuantizationConfig:
    bits: int = MISSING  # 4 or 8-bit base weights (bitsandbytes)
    quant_type: QuantType = QuantType.nf4  # 4-bit data type
    double_quant: bool = True  # quantize the quantization constants too
    compute_dtype: ComputeDtype = ComputeDtype.bfloat16  # dtype of the matmuls on dequantized weights

    RULES: ClassVar[Rules] = (require("bits", lambda v: v in (4, 8), "{key} must be 4 or 8, got {value!r}."),)

    @staticmethod
    def check(node: DictConfig, key: str, root: DictConfig) -> None:
        if importlib.util.find_spec("bitsandbytes") is None:
            raise UserError(
                "lora=qlora needs bitsandbytes, which is not installed. Install the qlora extra with "
                "`pip install 'medexp[qlora]'` (or `pip install bitsandbytes`), or train without quantization "
                "with lora=default."
            )


@dataclass
class LoraConfig:
    r: int = MISSING  # adapter rank
    alpha: float = MISSING  # scaling = alpha / r
    dropout: float = MISSING  # dropout on the adapter input, in [0, 1)
    target_modules: Any = MISSING  # "all-linear" or a list of module names (peft)
    bias: LoraBias = LoraBias.none  # which biases train besides the adapters
    use_dora: bool = False  # DoRA: a trained magnitude per output feature besides the low-rank direction
    use_rslora: bool = False  # rsLoRA: scaling = alpha / sqrt(r), so a large rank still learns
    init: LoraInit = LoraInit.default  # how A and B start (pissa / olora move part of W into the adapter)
    train_modules: list[str] = field(default_factory=list)  # modules trained in full (modules_to_save)
    quantization: QuantizationConfig | None = None  # null = full-precision base; set = QLoRA

    RULES: ClassVar[Rules] = (
        positive("r", 16),
        require(
            "alpha", lambda v: v > 0, "{key} must be positive, got {value}. 2 x lora.r is the usual start."
        ),
        between("dropout", 0, 1, high_open=True, hint="0.05 is a common choice."),
    )

    @staticmethod
    def check(node: DictConfig, key: str, root: DictConfig) -> None:
        """PiSSA and OLoRA are saved as an ordinary LoRA for the original base, which some settings cannot be."""
        if str(node.init) not in MUTATING_INITS:
            return
        clashes = [
            ("lora.use_dora=true", node.use_dora),
            (f"lora.train_modules={list(node.train_modules)}", bool(node.train_modules)),
            ("lora.quantization (lora=qlora)", node.quantization is not None),
        ]
        clash = [setting for setting, on in clashes if on]
        if clash:  # peft converts such adapters wrongly or not at all (measured; tests/training)
            raise UserError(
                f"lora.init={node.init} cannot be combined with {clash[0]}: PiSSA and OLoRA move part of the base "
                "weights into the adapter, and medexp saves the result as an ordinary LoRA for the original base "
                "(peft's conversion), which loses DoRA's magnitudes, fails with trained whole modules and would "
                "quantize the residual. Drop that setting, or use lora.init=default or gaussian."
            )


# --- tracking, paths ---------------------------------------------------------------------------------------
@dataclass
class TrackingConfig:
    enabled: bool = MISSING  # false = log nothing; outputs still land in the run directory
    uri: str = MISSING  # any MLflow tracking URI: sqlite:///..., http://host:port, databricks
    artifact_location: str | None = None  # for new experiments on a local store; a server picks its own
    experiment: str = MISSING  # MLflow experiment name; created on first use
    run_name: str | None = None  # null = MLflow's generated name
    log_adapter: bool = MISSING  # upload adapter/ as a run artifact
    system_metrics_interval: float | None = (
        None  # seconds between CPU/GPU/memory samples (system/*); null = off
    )

    RULES: ClassVar[Rules] = (
        positive("system_metrics_interval", 10),
    )  # 0 or less would sample in a busy loop


@dataclass
class PathsConfig:
    output_root: str = MISSING  # one folder per single run under it
    multirun_root: str = MISSING  # one folder per sweep under it
    output_dir: str = MISSING  # this run's folder
    mlruns_dir: str = MISSING  # the embedded MLflow store
    assets_dir: str = MISSING  # the tiny model and sample data shipped inside the package


# --- roots -------------------------------------------------------------------------------------------------
@dataclass
class StageConfig:
    dataset: DatasetConfig = MISSING  # the stage's data: +dataset@stages.<name>.dataset=<option>
    kind: str | None = None  # sft, pretrain, dpo, kto, orpo, simpo, grpo; null = its data's default kind
    trainer: dict[str, Any] = field(default_factory=dict)  # trainer settings this stage changes


@dataclass
class OptunaTrialConfig:
    storage: str | None = None  # the study's database URL (set by the sweeper)
    study_name: str | None = None  # the study's name in that database
    trial: int | None = None  # this run's trial number in the study


@dataclass
class TrainConfig:
    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    lora: LoraConfig = MISSING
    trainer: TrainerConfig = MISSING
    eval: EvalConfig = MISSING
    tracking: TrackingConfig = MISSING
    paths: PathsConfig = MISSING
    seed: int = MISSING  # one seed for data split, LoRA init and data order
    optimized_metric: Any = MISSING  # what train() returns to a sweeper; a list for a multi-objective study
    mixture: dict[str, DatasetConfig] = field(default_factory=dict)  # more datasets trained with `dataset`
    stages: dict[str, StageConfig] = field(default_factory=dict)  # train in stages, in order
    reward: RewardConfig = field(default_factory=RewardConfig)  # what grpo stages are rewarded for
    optuna: OptunaTrialConfig = field(default_factory=OptunaTrialConfig)  # set per trial by the sweeper
    resume: str | None = None  # continue a run that died: its output directory or MLflow run id

    @staticmethod
    def check(node: DictConfig, key: str, root: DictConfig) -> None:
        """The stages expand (each stage's trainer, its overrides applied, checked like `trainer`). Whether
        `optimized_metric` names a metric the eval group computes is the evaluation suites' to say
        (medexp.evaluation.metrics.check_optimized_metric, run by the train command right after validate)."""
        for name, stage_cfg in stage_configs(node):  # a run without `stages` is one stage: the run, named ""
            if name:
                check_tree(stage_cfg.trainer, "trainer", stage_cfg)


GROUPS: dict[str, type] = {
    "model": ModelConfig,
    "dataset": DatasetConfig,
    "lora": LoraConfig,
    "trainer": TrainerConfig,
    "eval": EvalConfig,
    "tracking": TrackingConfig,
    "paths": PathsConfig,
    "reward": RewardConfig,
}

__all__ = [  # the groups' schemas, wherever each is defined
    "GROUPS",
    "DatasetConfig",
    "EvalConfig",
    "GenerationEvalConfig",
    "JudgeConfig",
    "LoraConfig",
    "MCEvalConfig",
    "ModelConfig",
    "NearDupConfig",
    "OODEvalConfig",
    "OptunaTrialConfig",
    "PathsConfig",
    "QuantizationConfig",
    "RewardConfig",
    "SafetyEvalConfig",
    "StageConfig",
    "TrackingConfig",
    "TrainConfig",
    "TrainerConfig",
]
