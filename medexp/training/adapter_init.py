"""LoRA initialisations that move part of the base weights into the adapter (PiSSA, OLoRA), kept honest.

peft's `init_lora_weights="pissa"` / `"olora"` writes W = W_res + B0 A0: the adapter starts with W's principal
part and the base layer keeps the residual. Two things that medexp relies on then break unless handled:

- "the base model" is no longer the model with its adapters switched off (that is W_res). medexp keeps the
  starting adapter (every trainable tensor at initialisation) and answers as the base by swapping it back in:
  W_res + B0 A0 = W.
- the trained adapter only makes sense on W_res. `adapter/` is therefore written by peft's conversion into an
  ordinary LoRA on the original base (rank 2r, delta W = B A - B0 A0), which evaluate, export, chat and serve
  load like any other adapter. The unconverted weights go to `adapter_unconverted/` beside it: a resumed run
  re-creates the same W_res (the initialisation is deterministic under the run's seed) and loads those.

The starting adapter lives in memory only: a resumed run computes it again.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# medexp's lora.init -> peft's init_lora_weights
PEFT_INIT = {
    "default": True,
    "gaussian": "gaussian",
    "pissa": "pissa",
    "pissa_fast": "pissa_niter_16",  # 16 subspace iterations: the PiSSA paper's fast setting
    "olora": "olora",
}
UNCONVERTED = "adapter_unconverted"  # the folder beside adapter/ with the weights as trained (on W_res)
_ATTR = "medexp_initial_adapter"


def keep_initial_adapter(model: Any) -> None:
    """Remember every trainable tensor as initialised (call right after get_peft_model with a mutating init)."""
    setattr(
        model,
        _ATTR,
        {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad},
    )


def mutates_base(model: Any) -> bool:
    """Whether this model's base layers hold a residual (PiSSA / OLoRA) rather than the base weights."""
    return getattr(model, _ATTR, None) is not None


@contextlib.contextmanager
def initial_adapter(model: Any) -> Iterator[None]:
    """The model as it was initialised, which for PiSSA / OLoRA is the base model; trained weights restored after."""
    import torch

    start = getattr(model, _ATTR)
    params = dict(model.named_parameters())
    trained = {name: params[name].detach().clone() for name in start}
    with torch.no_grad():
        for name, tensor in start.items():
            params[name].copy_(tensor)
    try:
        yield
    finally:
        with torch.no_grad():
            for name, tensor in trained.items():
                params[name].copy_(tensor)


def save_adapter(model: Any, adapter_dir: Path) -> None:
    """Save the adapter where users load it from; with PiSSA / OLoRA converted to a LoRA on the original base."""
    if not mutates_base(model):
        model.save_pretrained(adapter_dir)
        return
    model.save_pretrained(adapter_dir.parent / UNCONVERTED)
    with tempfile.TemporaryDirectory(prefix="medexp-initial-adapter-") as tmp:
        initial_dir = Path(tmp) / "initial"
        config = model.peft_config["default"]
        kind = config.init_lora_weights
        with initial_adapter(model):
            config.init_lora_weights = True  # peft's conversion requires it: loading must not decompose again
            try:
                model.save_pretrained(initial_dir)
            finally:
                config.init_lora_weights = kind
        model.save_pretrained(adapter_dir, path_initial_model_for_weight_conversion=str(initial_dir))


def trained_weights_dir(model: Any, adapter_dir: Path) -> Path:
    """Where a saved stage's weights, as this model trains them, are: adapter/ or, for PiSSA / OLoRA, beside it."""
    return adapter_dir.parent / UNCONVERTED if mutates_base(model) else adapter_dir
