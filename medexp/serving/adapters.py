"""What one `medexp.serve` answers: one trained adapter, or several on one base model loaded once.

    source=RUN                                 one adapter, folded into the weights for generation
    source=[RUN_A,RUN_B,models:/medquad-lora/2] the base loaded once, each adapter under its own name, unmerged

Each adapter is served under the name its source gives it: `medexp-<run id>` for a run id or a run directory
(the directory's name when no run was tracked), `<name>/<version>` (or `<name>@<alias>`) for a models:/ URI; a
single adapter may be renamed with `model_name`. Unmerged, the base model is served too, under its own id
(model.name_or_path), and one forward pass can mix rows of different adapters and of the base (peft's mixed-batch
`adapter_names`, which peft refuses for merged weights and for DoRA). Adapters on different bases, with different
vocabularies, or with DoRA among several, are refused before the model loads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from medexp.config import UserError
from medexp.serving.assistant import Assistant
from medexp.serving.engine import BASE_ROWS


@dataclass
class Served:
    """The assistants one server answers, by the name a request gives as `model` (the first is the default),
    the base model's id, and whether the one adapter was folded into the weights."""

    assistants: dict[str, Assistant]
    base: str
    merged: bool
    notes: list[str] = field(default_factory=list)  # said on the startup line

    @property
    def default(self) -> Assistant:
        return next(iter(self.assistants.values()))

    def pick(self, model: str | None) -> Assistant | None:
        """The assistant a request's `model` names (the default when it names none), or None for an unknown one."""
        return self.default if not model else self.assistants.get(model)

    def listing(self) -> list[dict[str, Any]]:
        """GET /v1/models' entries, as vLLM lists LoRA adapters: each with its base as `parent`, and the base."""
        return [
            {
                "id": a.name,
                "object": "model",
                "owned_by": "medexp",
                "root": a.root or a.name,
                "parent": a.parent,
            }
            for a in self.assistants.values()
        ]

    def summary(self) -> str:
        """What the startup line says is served."""
        names = ", ".join(n for n, a in self.assistants.items() if a.adapter != BASE_ROWS)
        how = "adapter merged into the weights for generation" if self.merged else "adapters unmerged"
        return f"{names} on {self.base} ({'; '.join([how, *self.notes])})"


def sources_of(cfg: DictConfig) -> list[str]:
    """`source` as a list: one source, or a list of them (`source=[A,B]`)."""
    if OmegaConf.is_missing(cfg, "source"):
        from medexp.config.commands import SOURCE_FORMS

        raise UserError(f"source is required. {SOURCE_FORMS}")
    given = cfg.source
    sources = (
        [str(s).strip() for s in given] if isinstance(given, ListConfig | list) else [str(given).strip()]
    )
    if not sources or any(not s for s in sources):
        raise UserError(
            f"source={OmegaConf.to_container(given) if isinstance(given, ListConfig) else given!r} names no "
            "trained model. Give one source, or several as source=[RUN_A,RUN_B,models:/medquad-lora/2]."
        )
    return sources


def served_name(source: str, trained: Any) -> str:
    """The `model` a request names this adapter by: the registered name for a models:/ URI, else medexp-<run id>
    (a directory's name when no run was tracked)."""
    if source.startswith("models:/"):
        return source.removeprefix("models:/")
    return f"medexp-{trained.run_id or trained.adapter_dir.parent.name}"


def base_of(config: DictConfig) -> dict[str, Any]:
    """What must agree for adapters to share one loaded base: the model, its revision, dtype and quantization."""
    model, quant = config.model, config.lora.quantization
    return {
        "model": str(model.name_or_path),
        "revision": model.revision,
        "dtype": str(model.dtype),
        "quantization": None if quant is None else OmegaConf.to_container(quant, resolve=True),
    }


def check_together(sources: list[str], trained: list[Any], names: list[str], model_name: str | None) -> None:
    """Refuse, in one paragraph each, what cannot be served behind one loaded base."""
    if len(sources) == 1:
        return
    if model_name:
        raise UserError(
            f"model_name={model_name!r} names the one adapter served, but source lists {len(sources)}: each is "
            f"served under its source's name ({', '.join(names)}). Leave model_name out."
        )
    if len(set(names)) < len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise UserError(
            f"source lists the same adapter name twice ({', '.join(twice)}): {sources}. Each adapter is served "
            "under its run's name; list each run once."
        )
    bases = [base_of(t.config) for t in trained]
    if any(b != bases[0] for b in bases):
        differ = [k for k in bases[0] if any(b[k] != bases[0][k] for b in bases)]
        each = "; ".join(
            f"{s} on " + ", ".join(f"{k}={json.dumps(b[k])}" for k in differ)
            for s, b in zip(sources, bases, strict=True)
        )
        raise UserError(
            f"source lists adapters trained on different base models: {each}. One server loads one base and "
            "serves the adapters trained on it; serve the others with a second python -m medexp.serve on another "
            "port."
        )
    for source, t in zip(sources, trained, strict=True):
        settings = json.loads((Path(t.adapter_dir) / "adapter_config.json").read_text())
        if settings.get("use_dora"):
            raise UserError(
                f"source {source} is a DoRA adapter (lora.use_dora=true); peft cannot mix DoRA adapters with others "
                f"in one batch, so it cannot share a server with them. Serve it alone (source={source}), or export "
                "it merged (python -m medexp.export merge=true) and serve that."
            )


def load_served(cfg: DictConfig) -> Served:
    """Resolve every source (a bad one fails before torch loads), check they can share a base, load the base
    once with each adapter, and fold a single adapter into the weights where `cfg.merge` allows."""
    from medexp.config import trained_system_prompt
    from medexp.training.source import resolve

    sources = sources_of(cfg)
    tracking, cache = str(cfg.tracking.uri), Path(cfg.paths.output_dir) / "source"
    from medexp.tracking.client import absolute_uri

    trained = [resolve(s, absolute_uri(tracking), cache) for s in sources]
    names = [served_name(s, t) for s, t in zip(sources, trained, strict=True)]
    if len(sources) == 1 and cfg.model_name:
        names = [str(cfg.model_name)]
    check_together(sources, trained, names, cfg.model_name)
    merge = fold(cfg.merge, len(sources), trained[0].config.lora.quantization is not None)
    tokenizers = _tokenizers(trained, sources)
    model = _load(trained, str(cfg.precision), merge)
    base = base_of(trained[0].config)["model"]
    assistants: dict[str, Assistant] = {}
    for i, (source, t, name) in enumerate(zip(sources, trained, names, strict=True)):
        prompt = trained_system_prompt(t.config)
        adapter = None if merge else f"a{i}"
        assistants[name] = Assistant(model, tokenizers[i], prompt, name, adapter, base, source)
    if not merge and base not in assistants:
        # the base answers the same prompts as the first adapter (its system prompt and template), to compare
        first = assistants[names[0]]
        assistants[base] = Assistant(model, first.tokenizer, first.system_prompt, base, BASE_ROWS, None, base)
    notes = [] if merge or len(sources) > 1 else [_why_unmerged(cfg.merge)]
    return Served(assistants, base, merge, notes)


def fold(asked: bool | None, adapters: int, quantized: bool) -> bool:
    """Whether the weights take the adapter: `merge` (null: where one adapter serves on an unquantized base)."""
    if asked and adapters > 1:
        raise UserError(
            f"merge=true folds one adapter into the weights, but source lists {adapters}: several adapters stay "
            "unmerged so that one batch can mix them. Leave merge out (null), or serve one source."
        )
    if asked and quantized:
        raise UserError(
            "merge=true on a 4-bit (QLoRA) base would re-quantize the merged weights and change the model's "
            "answers. Leave merge out (null) to serve it unmerged, or export it merged in 16 bits "
            "(python -m medexp.export merge=true) and serve that."
        )
    return adapters == 1 and not quantized if asked is None else bool(asked)


def _why_unmerged(asked: bool | None) -> str:
    return "merge=false" if asked is False else "4-bit base: merging would re-quantize it"


def _tokenizers(trained: list[Any], sources: list[str]) -> list[Any]:
    """Each adapter's tokenizer (its chat template may differ); one vocabulary, since one model decodes for all."""
    from transformers import AutoTokenizer

    tokenizers = [AutoTokenizer.from_pretrained(str(t.adapter_dir)) for t in trained]
    for source, tokenizer in zip(sources[1:], tokenizers[1:], strict=True):
        if tokenizer.get_vocab() != tokenizers[0].get_vocab():
            raise UserError(
                f"source {source} has another vocabulary than {sources[0]} (tokens added or changed in training), "
                "so one model cannot decode for both. Serve each with its own python -m medexp.serve."
            )
    return tokenizers


def _load(trained: list[Any], precision: str, merge: bool) -> Any:
    """The base with every adapter (peft names a0, a1, ...), or with the one adapter merged into its weights."""
    import torch
    from peft import PeftModel

    from medexp.training.model import load_base_model, resolve_precision

    first = trained[0].config
    base = load_base_model(first.model, first.lora, resolve_precision(precision))
    model = PeftModel.from_pretrained(base, str(trained[0].adapter_dir), adapter_name="a0")
    for i, t in enumerate(trained[1:], start=1):
        model.load_adapter(str(t.adapter_dir), adapter_name=f"a{i}")
    if merge:
        model = model.merge_and_unload()
    if torch.cuda.is_available() and first.lora.quantization is None:
        model = model.to("cuda")
    return model.eval()
