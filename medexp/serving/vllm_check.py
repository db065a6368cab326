"""Whether vLLM serves an exported adapter as it is, checked at export from its adapter_config.json, and the
`vllm serve` command for it.

What vLLM refuses or mishandles (vllm/lora/peft_helper.py and its tests; vllm-project/vllm#9280, #10849):
`modules_to_save` ("vLLM only supports modules_to_save being None"; medexp's lora.train_modules), DoRA ("vLLM
does not yet support DoRA"), a trained bias ("Adapter bias is not supported"), a rank above `--max-lora-rank`
(default 16; it takes 1, 8, 16, 32, 64, 128, 256, 320 or 512), PiSSA/OLoRA initialisation recorded in the config
(recent versions refuse `init_lora_weights='pissa'`), and LoRA on modules its model code has no LoRA layer for
(for Llama-family models: the q/k/v/o attention and gate/up/down MLP projections; vLLM fuses them as qkv_proj
and gate_up_proj). rsLoRA is served (alpha / sqrt(r)).
"""

from __future__ import annotations

from typing import Any

PROJECTIONS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's accepted --max-lora-rank values
DEFAULT_MAX_LORA_RANK = 16


def rank(adapter_config: dict[str, Any]) -> int:
    """The largest rank of any module: r, or a larger one from rank_pattern."""
    return max(
        [int(adapter_config.get("r", 8)), *map(int, (adapter_config.get("rank_pattern") or {}).values())]
    )


def max_lora_rank(adapter_config: dict[str, Any]) -> int | None:
    """The --max-lora-rank this adapter needs beyond the default, or None if the default does."""
    needed = rank(adapter_config)
    if needed <= DEFAULT_MAX_LORA_RANK:
        return None
    return next((r for r in MAX_LORA_RANKS if r >= needed), needed)


def refusals(adapter_config: dict[str, Any]) -> list[str]:
    """What vLLM refuses or cannot apply in this adapter, whatever its flags."""
    problems = []
    if adapter_config.get("modules_to_save"):
        problems.append(
            f"fully trained modules {list(adapter_config['modules_to_save'])} (lora.train_modules)"
        )
    if adapter_config.get("use_dora"):
        problems.append("DoRA (lora.use_dora)")
    if adapter_config.get("bias", "none") != "none":
        problems.append(f"trained biases (lora.bias={adapter_config['bias']})")
    init = str(adapter_config.get("init_lora_weights", True)).lower()
    if init.startswith(("pissa", "olora")):
        problems.append(f"init_lora_weights={init} (the adapter needs PiSSA/OLoRA's modified base)")
    targets = adapter_config.get("target_modules") or []
    if isinstance(targets, str):
        problems.append(f"target modules given as a pattern ({targets!r}), which vLLM matches only by suffix")
    else:
        outside = sorted({str(t).split(".")[-1] for t in targets} - PROJECTIONS)
        if outside:
            problems.append(
                f"LoRA on {outside}, outside the attention and MLP projections vLLM has LoRA layers for"
            )
    if rank(adapter_config) > MAX_LORA_RANKS[-1]:
        problems.append(
            f"rank {rank(adapter_config)}, above vLLM's largest --max-lora-rank ({MAX_LORA_RANKS[-1]})"
        )
    return problems


def advice(adapter_config: dict[str, Any]) -> str | None:
    """One paragraph on what to do for vLLM, or None when `vllm serve --enable-lora` takes the adapter as it is."""
    problems = refusals(adapter_config)
    if problems:
        return (
            f"vLLM will not serve this adapter as exported: it has {'; '.join(problems)}. Serve the merged model "
            "instead (export with merge=true, then `vllm serve <output_dir>/merged`), or train without those "
            "settings (lora.train_modules=[], lora.use_dora=false, lora.bias=none, lora.init=default, "
            "lora.target_modules on the q/k/v/o/gate/up/down projections) to serve it as a LoRA."
        )
    needed = max_lora_rank(adapter_config)
    if needed:
        return (
            f"vLLM refuses this adapter at its default --max-lora-rank {DEFAULT_MAX_LORA_RANK}: its rank is "
            f"{rank(adapter_config)}. Start vLLM with --max-lora-rank {needed} (more GPU memory per LoRA slot), or "
            "serve the merged model (merge=true)."
        )
    return None


def serve_command(base: str, name: str, adapter_path: str, adapter_config: dict[str, Any]) -> str:
    """`vllm serve BASE --enable-lora --lora-modules NAME=PATH` with the flags this adapter needs."""
    needed = max_lora_rank(adapter_config)
    flags = f" --max-lora-rank {needed}" if needed else ""
    return f"vllm serve {base} --enable-lora --lora-modules {name}={adapter_path}{flags}"


def card_lines(base: str, name: str, adapter_config: dict[str, Any]) -> list[str]:
    """The model card's section on serving the adapter with vLLM."""
    lines = ["", "## Serving with vLLM", ""]
    note = advice(adapter_config)
    if not refusals(adapter_config):  # served as a LoRA, with --max-lora-rank where the rank asks for it
        lines += ["```bash", serve_command(base, name, "./adapter", adapter_config), "```", ""]
    return lines + ([note, ""] if note else [])
