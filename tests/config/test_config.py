"""Every option of every config group composes and validates; the packaged configs are the repository's."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from medexp.config import UserError, looks_like_local_path, validate

CONF = Path(__file__).resolve().parents[2] / "conf"
# conf/hydra/ holds presets of Hydra's own groups (hydra/launcher), composed in tests/sweep/test_sweeper.py
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra" and any(p.rglob("*.yaml")))
OPTIONS = sorted(
    (group, str(path.relative_to(CONF / group).with_suffix("")))
    for group in GROUPS
    for path in (CONF / group).rglob("*.yaml")
)


def test_every_group_has_options():
    # the groups the design names; a missing folder would silently drop a whole concern
    for group in ("model", "dataset", "lora", "trainer", "eval", "tracking", "paths", "experiment"):
        assert group in GROUPS
    assert len(OPTIONS) >= 17


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_validates(make_cfg, group, option):
    cfg = make_cfg(f"{group}={option}")
    # GRPO's policy loss does not compare across settings: its search maximizes held-out accuracy instead
    expected = "eval/mc/validation/accuracy" if option == "grpo_optuna" else "eval_loss"
    assert cfg.optimized_metric == expected
    if group == "lora" and cfg.lora.quantization is not None:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            with pytest.raises(UserError, match=r"medexp\[qlora\]"):
                validate(cfg)
            return
    if group == "dataset" and option in ("file", "text"):
        with pytest.raises(UserError, match=r"dataset\.path is required"):
            validate(make_cfg(f"{group}={option}", "eval=none"))
        return
    if (
        group == "dataset" and cfg.dataset.kind == "text"
    ):  # pretraining alone: no questions to generate answers to
        from medexp.training.methods import check_stages

        with pytest.raises(UserError, match=r"no held-out questions for eval\.generation"):
            validate(cfg)
            check_stages(cfg)  # the pretrain kind's own rule (medexp.training.methods)
        cfg = make_cfg(f"{group}={option}", "eval=none")
    validate(cfg)


def test_composed_values_follow_the_issue(make_cfg):
    cfg = make_cfg()
    assert cfg.model.name_or_path == "HuggingFaceTB/SmolLM-135M-Instruct"
    assert cfg.dataset.name == "keivalya/MedQuad-MedicalQnADataset"
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.target_modules) == (
        16,
        32,
        0.05,
        "all-linear",
    )
    t = cfg.trainer
    assert (t.learning_rate, t.lr_scheduler, t.warmup_ratio, t.weight_decay, t.max_grad_norm, t.epochs) == (
        2e-4,
        "cosine",
        0.05,
        0.01,
        1.0,
        3,
    )
    assert cfg.tracking.uri.startswith("sqlite:///") and cfg.tracking.uri.endswith("mlruns/mlflow.db")
    q = make_cfg("lora=qlora").lora.quantization
    assert (q.bits, q.quant_type, q.double_quant, q.compute_dtype) == (4, "nf4", True, "bfloat16")
    assert make_cfg("dataset=medquad_128").dataset.name == "Laurent1/MedQuad-MedicalQnADataset_128tokens_max"


def test_smoke_preset_is_offline_and_small(make_cfg):
    cfg = make_cfg("experiment=smoke")
    assert Path(cfg.model.name_or_path).is_dir()
    assert Path(cfg.dataset.path).is_file()
    assert cfg.trainer.max_steps <= 60
    assert cfg.trainer.precision == "fp32"


def test_cli_overrides_win_over_the_experiment(make_cfg):
    cfg = make_cfg("experiment=smoke", "lora.r=4", "trainer.max_steps=7")
    assert (cfg.lora.r, cfg.trainer.max_steps) == (4, 7)


@pytest.mark.parametrize(
    ("name", "local"),
    [
        ("HuggingFaceTB/SmolLM-135M-Instruct", False),
        ("gpt2", False),
        ("/models/x", True),
        ("./x", True),
        ("~/x", True),
        ("a/b/c", True),
    ],
)
def test_local_path_detection(name, local):
    assert looks_like_local_path(name) is local


def test_help_and_cfg_job_need_no_heavy_imports(tmp_path):
    """--help and --cfg job are instant: neither torch nor transformers is imported."""
    code = (
        "import sys, runpy\n"
        "sys.argv = ['medexp.train', '--cfg', 'job', 'experiment=smoke']\n"
        "try:\n    runpy.run_module('medexp.train', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'mlflow', 'trl', 'peft') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert "lora:" in out.stdout and "HEAVY []" in out.stdout, out.stdout + out.stderr


def test_wheel_ships_configs_and_assets(tmp_path):
    """A non-editable install carries conf/ (as medexp.conf) and the tiny model and sample data."""
    root = Path(__file__).resolve().parents[2]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(root),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("medexp-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for group, option in OPTIONS:
        assert f"medexp/conf/{group}/{option}.yaml" in names
    assert "medexp/conf/train.yaml" in names
    assert "medexp/assets/tiny_llama/model.safetensors" in names
    assert "medexp/assets/sample/medquad_sample.jsonl" in names
