"""GGUF export (`python -m medexp.export format=gguf|gguf_lora`) through llama.cpp's own converters.

    format=gguf       merged model -> convert_hf_to_gguf.py -> gguf/model-<quant>.gguf (+ llama.cpp's quantizer)
    format=gguf_lora  adapter      -> convert_lora_to_gguf.py -> gguf/adapter-<lora_quant>.gguf
    both              + gguf/Modelfile for Ollama (medexp.serving.modelfile)

The converters ship in llama.cpp's source, not in llama-cpp-python's wheel: llama-cpp-python's source
distribution vendors them (vendor/llama.cpp, with the gguf-py they are written against), so the folder is
found from gguf.converter_dir or $MEDEXP_LLAMA_CPP_DIR (docs/deploy.md says how to get it). They run in a
subprocess (medexp.serving.gguf_runner): they put their own gguf-py first on sys.path. Types other than
f32/f16/bf16/q8_0 are made from a 16-bit GGUF by llama.cpp's quantizer, llama_model_quantize, through
llama-cpp-python's binding, or the `llama-quantize` binary of a llama.cpp build where that is not installed.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from medexp.config import UserError
from medexp.config.commands import GGUF_CONVERTER_QUANTS

log = logging.getLogger("medexp.export")

ENV = "MEDEXP_LLAMA_CPP_DIR"
LLAMA_CPP_PYTHON = "0.3.36"  # the converter and the llama.cpp that loads its files come from one release
CACHE = Path.home() / ".cache" / "medexp"  # where the docs' (and .ci/run's) commands unpack the converter
CACHED = CACHE / f"llama_cpp_python-{LLAMA_CPP_PYTHON}" / "vendor" / "llama.cpp"
GET_CONVERTER = (
    f"Get llama.cpp's converter from llama-cpp-python's source: `pip download llama-cpp-python=={LLAMA_CPP_PYTHON} "
    f"--no-binary :all: --no-deps -d {CACHE} && tar xzf {CACHE}/llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz -C "
    f"{CACHE}` (found there by default), or name a llama.cpp checkout with gguf.converter_dir=... or {ENV}. "
    "It needs `pip install 'medexp[gguf]'` too."
)


def converter_dir(gguf: DictConfig) -> Path:
    """The llama.cpp folder with convert_hf_to_gguf.py and gguf-py: gguf.converter_dir, $MEDEXP_LLAMA_CPP_DIR, or
    the unpacked source in ~/.cache/medexp."""
    if gguf.converter_dir or os.environ.get(ENV):
        named, key = (
            (gguf.converter_dir, "gguf.converter_dir") if gguf.converter_dir else (os.environ[ENV], ENV)
        )
    elif CACHED.is_dir():
        named, key = str(CACHED), "the cached converter"
    else:
        raise UserError(
            f"GGUF export needs llama.cpp's converter: gguf.converter_dir and {ENV} are unset, and {CACHED} "
            f"does not exist. {GET_CONVERTER}"
        )
    folder = Path(str(named)).expanduser()
    if not (folder / "convert_hf_to_gguf.py").is_file() or not (folder / "gguf-py").is_dir():
        raise UserError(
            f"{key}={named} holds no convert_hf_to_gguf.py with gguf-py beside it. {GET_CONVERTER}"
        )
    return folder


def quantizer() -> tuple[str, Any] | None:
    """How a type beyond the converter's is made: ("binding", llama_cpp) or ("binary", path); None if neither."""
    try:
        import llama_cpp
    except ImportError:
        binary = shutil.which("llama-quantize")
        return ("binary", binary) if binary else None
    return "binding", llama_cpp


def preflight(cfg: DictConfig) -> None:
    """What a GGUF export needs, checked before anything is written: the converter, and a quantizer if the type asks."""
    if cfg.get("format", "hf") == "hf":
        return
    converter_dir(cfg.gguf)
    quant = str(cfg.gguf.quant)
    if cfg.format == "gguf" and quant not in GGUF_CONVERTER_QUANTS and quantizer() is None:
        raise UserError(
            f"gguf.quant={quant} is made by llama.cpp's quantizer, and neither llama-cpp-python (`pip install "
            f"'medexp[gguf]'`) nor a `llama-quantize` binary on PATH (build llama.cpp: `cmake -B build && cmake "
            f"--build build --target llama-quantize`) is here. Install one, or pick a type the converter writes "
            f"itself: {', '.join(GGUF_CONVERTER_QUANTS)}."
        )


def _pre_tokenizer(gguf: DictConfig, model_dir: Path) -> str:
    """The pre-tokenizer name for a tokenizer the converter does not know: gguf.pre_tokenizer, else gpt-2 where
    tokenizer.json's pre-tokenizer is exactly GPT-2's byte-level split, else "" (refused)."""
    if gguf.pre_tokenizer:
        return str(gguf.pre_tokenizer)
    path = model_dir / "tokenizer.json"
    pre = json.loads(path.read_text()).get("pre_tokenizer") if path.is_file() else None
    gpt2 = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return "gpt-2" if pre == gpt2 else ""


def _run_converter(folder: Path, script: str, pre_tokenizer: str, args: list[str], what: str) -> None:
    command = [
        sys.executable,
        "-m",
        "medexp.serving.gguf_runner",
        str(folder),
        script,
        pre_tokenizer,
        "--",
        *args,
    ]
    # the medexp this module is part of (a checkout's, not another install's) runs the converter
    paths = [
        str(Path(__file__).parents[2]),
        *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)),
    ]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    if proc.returncode == 3:  # gguf_runner.UNKNOWN_TOKENIZER_EXIT
        raise UserError(
            f"llama.cpp's converter does not recognise the tokenizer of {what} (its BPE pre-tokenizer is not in "
            "the converter's list) and it is not plain GPT-2 byte-level BPE. Name llama.cpp's pre-tokenizer for "
            "it, e.g. gguf.pre_tokenizer=llama-bpe (the tokenizer_pre names in llama.cpp's src/llama-vocab.cpp), "
            "or point gguf.converter_dir at a newer llama.cpp."
        )
    if proc.returncode != 0:
        tail = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()][-1:] or [
            "no output"
        ]
        raise UserError(
            f"llama.cpp's {script} could not convert {what} (exit {proc.returncode}): {tail[0][:400]}"
        )


def convert_model(gguf: DictConfig, model_dir: Path, outfile: Path, outtype: str) -> Path:
    """A Hugging Face model folder -> one GGUF file of a type the converter writes (or auto: 16-bit)."""
    args = [str(model_dir), "--outfile", str(outfile), "--outtype", outtype]
    _run_converter(
        converter_dir(gguf), "convert_hf_to_gguf.py", _pre_tokenizer(gguf, model_dir), args, str(model_dir)
    )
    return outfile


def quantize(source: Path, target: Path, quant: str) -> Path:
    """llama.cpp's llama_model_quantize: a 16-bit GGUF -> `quant` (tensors whose rows do not fit a k-quant's
    256-wide blocks get llama.cpp's fallback type, as llama-quantize does)."""
    how, tool = quantizer()  # preflight has refused the case of neither
    if how == "binding":
        params = tool.llama_model_quantize_default_params()
        params.ftype = getattr(tool, f"LLAMA_FTYPE_MOSTLY_{quant.upper()}")
        if tool.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params)) != 0:
            raise UserError(f"llama.cpp's quantizer could not write gguf.quant={quant} from {source}.")
    else:
        proc = subprocess.run([tool, str(source), str(target), quant.upper()], capture_output=True, text=True)
        if proc.returncode != 0:
            raise UserError(
                f"{tool} could not write gguf.quant={quant} (exit {proc.returncode}): {proc.stderr[-300:]}"
            )
    return target


def export_gguf(cfg: DictConfig, merged_dir: Path, out: Path) -> Path:
    """The merged model as out/gguf/model-<quant>.gguf (converter, then quantizer for the other types)."""
    out.mkdir(parents=True, exist_ok=True)
    quant = str(cfg.gguf.quant)
    target = out / f"model-{quant}.gguf"
    if quant in GGUF_CONVERTER_QUANTS:
        return convert_model(cfg.gguf, merged_dir, target, quant)
    wide = convert_model(cfg.gguf, merged_dir, out / "model-16bit.gguf", "auto")
    try:
        return quantize(wide, target, quant)
    finally:
        wide.unlink(missing_ok=True)


def lora_refusals(adapter_config: dict) -> list[str]:
    """What llama.cpp's convert_lora_to_gguf.py cannot carry over faithfully, each with why."""
    problems = []
    if adapter_config.get("use_dora"):
        problems.append("DoRA (its magnitude vectors are not LoRA A/B tensors; the converter stops on them)")
    if adapter_config.get("use_rslora"):
        problems.append("rsLoRA (llama.cpp scales a GGUF LoRA by alpha / r, not alpha / sqrt(r))")
    if adapter_config.get("modules_to_save"):
        problems.append(f"fully trained modules {adapter_config['modules_to_save']} (lora.train_modules)")
    if adapter_config.get("rank_pattern") or adapter_config.get("alpha_pattern"):
        problems.append("per-module ranks or alphas (one lora_alpha is written for the whole adapter)")
    if adapter_config.get("bias", "none") != "none":
        problems.append(f"trained biases (lora.bias={adapter_config['bias']})")
    return problems


def base_model_args(trained: Any) -> list[str]:
    """The converter's arguments naming the base model: its local folder, or its Hub id (config fetched)."""
    model = trained.config.model
    if Path(str(model.name_or_path)).expanduser().is_dir():
        return ["--base", str(Path(str(model.name_or_path)).expanduser())]
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(str(model.name_or_path), revision=model.revision, local_files_only=True)
        return ["--base", folder]
    except Exception:  # noqa: BLE001 - not in the local cache (or offline): the converter reads the config from the Hub
        return ["--base-model-id", str(model.name_or_path)]


def export_gguf_lora(cfg: DictConfig, trained: Any, out: Path) -> Path:
    """The adapter alone as out/gguf/adapter-<lora_quant>.gguf, for llama.cpp's --lora and Ollama's ADAPTER."""
    adapter_config = json.loads((Path(trained.adapter_dir) / "adapter_config.json").read_text())
    problems = lora_refusals(adapter_config)
    if problems:
        raise UserError(
            f"format=gguf_lora cannot carry this adapter into llama.cpp: it uses {'; '.join(problems)}. Export "
            "the merged model instead (format=gguf), which folds every kind of adapter into the weights."
        )
    out.mkdir(parents=True, exist_ok=True)
    quant = str(cfg.gguf.lora_quant)
    target = out / f"adapter-{quant}.gguf"
    args = [str(trained.adapter_dir), "--outfile", str(target), "--outtype", quant, *base_model_args(trained)]
    _run_converter(converter_dir(cfg.gguf), "convert_lora_to_gguf.py", "", args, str(trained.adapter_dir))
    return target
