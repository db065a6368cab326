"""A trained model ready to answer, shared by `medexp.chat` and `medexp.serve`: the training run's system prompt
and chat template applied to every conversation, tokens streamed as they are generated."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig


@dataclass
class Sampling:
    max_new_tokens: int = 256
    temperature: float = 0.7  # 0 = greedy
    top_p: float = 0.9
    logit_bias: dict[int, float] | None = None  # token id -> added to its logit; -100 bans it (OpenAI's)

    def generate_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": self.temperature > 0}
        if self.temperature > 0:
            kwargs |= {"temperature": self.temperature, "top_p": self.top_p}
        if self.logit_bias:
            kwargs["sequence_bias"] = {(token,): float(bias) for token, bias in self.logit_bias.items()}
        return kwargs


def _stop_when(stop: threading.Event) -> Any:
    """A stopping criterion that ends generation at the next token once `stop` is set (a client that left)."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    class Stopped(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            import torch

            return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([Stopped()])


class Assistant:
    """The adapted model with its tokenizer and the system prompt it was trained with. Behind one server several
    assistants share one model (medexp.serving.adapters): `adapter` is the peft adapter that answers for this one
    (None: the model as it is), `parent` the base model's id it adapts, `root` where it came from."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        system_prompt: str,
        name: str,
        adapter: str | None = None,
        parent: str | None = None,
        root: str | None = None,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt
        self.name = name
        self.adapter, self.parent, self.root = adapter, parent, root
        # No lock here: the caller decides how many generations share the weights at once (medexp.chat runs one;
        # medexp.serve admits limits.max_concurrent and queues the rest).

    def messages(self, conversation: list[dict[str, str]]) -> list[dict[str, str]]:
        """The training system prompt first; the conversation's own system messages are replaced by it."""
        turns = [m for m in conversation if m["role"] != "system"]
        return [{"role": "system", "content": self.system_prompt}, *turns]

    def prompt_ids(self, conversation: list[dict[str, str]]) -> list[int]:
        """The conversation's token ids, as the model reads them before its answer."""
        return list(
            self.tokenizer.apply_chat_template(
                self.messages(conversation), add_generation_prompt=True, tokenize=True, return_dict=True
            )["input_ids"]
        )

    def prompt_tokens(self, conversation: list[dict[str, str]]) -> Any:
        return self.tokenizer.apply_chat_template(
            self.messages(conversation), add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(next(self.model.parameters()).device)

    def stream(
        self,
        conversation: list[dict[str, str]],
        sampling: Sampling,
        info: dict[str, int] | None = None,
        stop: threading.Event | None = None,
    ) -> Iterator[str]:
        """Text pieces of the answer as they are generated; `info` gets prompt_tokens, and completion_tokens at the
        end. Setting `stop`, or closing this iterator, ends the generation at the next token."""
        import torch
        from transformers import TextIteratorStreamer

        stop = stop or threading.Event()
        inputs = self.prompt_tokens(conversation)
        streamer = TextIteratorStreamer(
            self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=300
        )
        kwargs = dict(
            **inputs,
            streamer=streamer,
            stopping_criteria=_stop_when(stop),
            pad_token_id=self.tokenizer.pad_token_id,
            **sampling.generate_kwargs(),
        )
        counts: dict[str, int] = info if info is not None else {}
        counts["prompt_tokens"] = int(inputs["input_ids"].shape[1])
        failed: list[Exception] = []

        def run() -> None:
            try:
                with torch.no_grad():
                    ids = self.model.generate(**kwargs)
                counts["completion_tokens"] = int(ids.shape[1] - inputs["input_ids"].shape[1])
            except Exception as exc:  # noqa: BLE001  (re-raised to the reader, who would otherwise wait on)
                failed.append(exc)
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            yield from (piece for piece in streamer if piece)
        finally:
            stop.set()  # a reader that stops early (a client that left) stops the generation too
            thread.join()
        if failed:
            raise failed[0]


def load_assistant(cfg: DictConfig) -> Assistant:
    """Resolve `cfg.source` and load base + adapter (merged into the weights) on the best available device; the
    one-source loader of `medexp.chat` (`medexp.serve` loads through medexp.serving.adapters)."""
    from medexp.config import trained_system_prompt
    from medexp.training.source import load_trained, resolve_source

    trained = resolve_source(
        cfg, Path(cfg.paths.output_dir) / "source"
    )  # before torch: a bad source fails fast

    import torch

    from medexp.training.model import resolve_precision

    model, tokenizer = load_trained(trained, resolve_precision(str(cfg.precision)))
    if trained.config.lora.quantization is None:  # one adapter: folded into the weights, the base's speed
        model = model.merge_and_unload()  # (a 4-bit base stays unmerged: merging would re-quantize it)
    if torch.cuda.is_available() and trained.config.lora.quantization is None:
        model = model.to("cuda")
    system_prompt = trained_system_prompt(trained.config)
    name = cfg.model_name or f"medexp-{trained.run_id or trained.adapter_dir.parent.name}"
    return Assistant(model, tokenizer, system_prompt, str(name))


def chat_loop(assistant, sampling, read=input, write=sys.stdout.write) -> int:
    """Read a question, stream the answer, keep the history; returns the number of answers given."""
    history: list[dict[str, str]] = []
    answers = 0
    while True:
        try:
            question = read("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            write("\n")
            return answers
        if question in ("/exit", "/quit"):
            return answers
        if question == "/reset":
            history = []
            write("(conversation cleared)\n")
            continue
        if not question:
            continue
        history.append({"role": "user", "content": question})
        write("model> ")
        pieces = []
        for piece in assistant.stream(history, sampling):
            pieces.append(piece)
            write(piece)
            sys.stdout.flush()
        write("\n")
        history.append({"role": "assistant", "content": "".join(pieces).strip()})
        answers += 1
