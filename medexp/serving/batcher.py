"""Continuous batching for `medexp.serve`: one worker thread owns the model and decodes every running sequence
together, one forward pass per token for the whole batch. A sequence that arrives while others decode joins at the
next step: its prompt is read in a forward of its own (with the others that arrived meanwhile, left-padded), and
its KV cache is laid beside the running ones, the shorter padded on the left. A finished sequence leaves the batch
at once, and the cache columns no sequence needs any more are cut.

Left padding is invisible to each sequence: the attention mask hides the padded columns, and position ids count
only a sequence's own tokens, so a sequence decodes in a batch as it would alone (up to float rounding).

Each sequence has its own decoding (max_new_tokens, temperature, top_p, logit_bias, seed) and its own queue of
Steps, read by the request's handler thread (`Engine.generate`); a reader that stops reading (a stop sequence, a
client that left) marks its row, and the row leaves at the next step. Other model work (scoring a prompt) runs in
the same thread between steps, so that only one thread ever runs the model."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

END = object()  # the last item of a row's queue


@dataclass(eq=False)
class Row:
    """One sequence being decoded: its prompt, what it asks, where its Steps go."""

    prompt: list[int]
    decoding: Any  # medexp.serving.engine.Decoding
    sampler: Any  # its torch.Generator
    cancel: threading.Event | None = None
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    made: int = 0  # tokens generated
    last: int = 0  # the latest token: the input of the row's next forward
    left: bool = False  # its reader has stopped reading

    @property
    def adapter(self) -> str | None:
        return getattr(self.decoding, "adapter", None)

    def abandoned(self) -> bool:
        return self.left or (self.cancel is not None and self.cancel.is_set())


class Batcher:
    """Decodes the rows submitted to it, at most `max_batch` in one forward; `engine` supplies the model, its
    stop tokens and `pick` (a row's next Step from its logits), and hears each forward's size through `on_batch`."""

    def __init__(self, engine: Any, max_batch: int) -> None:
        self.engine, self.max_batch = engine, max_batch
        self.rows: list[Row] = []  # the running batch, in the cache's row order
        self.cache: Any = None
        self.mask: Any = None  # (rows, cache length) attention mask: 0 for left padding
        self._incoming: list[Row] = []
        self._calls: list[tuple[Callable[[], Any], Future]] = []
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def submit(self, row: Row) -> None:
        with self._wake:
            self._incoming.append(row)
            self._start()
            self._wake.notify()

    def call(self, work: Callable[[], Any]) -> Any:
        """`work()` run in the worker thread between two steps; its result (or its exception) here."""
        done: Future = Future()
        with self._wake:
            self._calls.append((work, done))
            self._start()
            self._wake.notify()
        return done.result()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="medexp-batcher", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not (self.rows or self._incoming or self._calls):
                    self._wake.wait()
                calls, self._calls = self._calls, []
                room = max(0, self.max_batch - len(self.rows))
                joining, self._incoming = self._incoming[:room], self._incoming[room:]
            for work, done in calls:
                try:
                    done.set_result(work())
                except BaseException as exc:  # noqa: BLE001  (handed to the caller, who re-raises it)
                    done.set_exception(exc)
            try:
                self.step(joining)
            except Exception as exc:  # noqa: BLE001  (every reader of this batch gets it; the server goes on)
                for row in self.rows + joining:
                    row.out.put(exc)
                self.rows, self.cache, self.mask = [], None, None

    def step(self, joining: list[Row]) -> None:
        """Drop the rows nobody reads, read the prompts of those joining, then one token for every row."""
        for row in [r for r in self.rows + joining if r.abandoned()]:
            row.out.put(END)  # a reader waiting on a cancelled row's next token gets the end instead
        self._keep([r for r in self.rows if not r.abandoned()])
        joining = [r for r in joining if not r.abandoned()]
        if joining:
            self._join(joining)
        if self.rows:
            self._decode()

    def _forward(self, rows: list[Row], ids: Any, mask: Any, cache: Any, last_only: bool) -> Any:
        import torch

        engine = self.engine
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1] :]
        kwargs: dict[str, Any] = {engine.cache_arg: cache}
        if last_only and engine.keeps_logits:
            kwargs["logits_to_keep"] = 1
        if any(r.adapter for r in rows):  # peft's mixed-adapter batch ("__base__": no adapter)
            kwargs["adapter_names"] = [r.adapter or engine.loaded_adapter for r in rows]
        with torch.no_grad():
            out = engine.model(
                input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **kwargs
            )
        engine.on_batch(len(rows))
        return out

    def _join(self, rows: list[Row]) -> None:
        """The joining rows' prompts in one forward, left-padded; their first tokens; their caches beside the
        running ones."""
        import torch

        device, width = self.engine.device, max(len(r.prompt) for r in rows)
        ids = torch.zeros((len(rows), width), dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(rows):
            ids[i, width - len(row.prompt) :] = torch.tensor(row.prompt, device=device)
            mask[i, width - len(row.prompt) :] = 1
        out = self._forward(rows, ids, mask, None, last_only=True)
        cache = getattr(out, self.engine.cache_arg)
        if self.rows:
            self.cache, self.mask = stack_caches(self.cache, self.mask, cache, mask)
        else:
            self.cache, self.mask = cache, mask
        self.rows = self.rows + rows
        self._emit(rows, out.logits[:, -1].float())

    def _decode(self) -> None:
        import torch

        ids = torch.tensor([[r.last] for r in self.rows], device=self.mask.device)
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=-1)
        out = self._forward(self.rows, ids, self.mask, self.cache, last_only=True)
        self.cache = getattr(out, self.engine.cache_arg)
        self._emit(list(self.rows), out.logits[:, -1].float())

    def _emit(self, rows: list[Row], logits: Any) -> None:
        """Each row's next Step to its reader; rows that have finished leave the batch."""
        done = set()
        for i, row in enumerate(rows):
            step = self.engine.pick(logits[i], row.decoding, row.sampler)
            row.made, row.last = row.made + 1, step.token
            row.out.put(step)
            if step.token in self.engine.stop_ids or row.made >= row.decoding.max_new_tokens:
                row.out.put(END)
                done.add(id(row))
        if done:
            self._keep([r for r in self.rows if id(r) not in done])

    def _keep(self, rows: list[Row]) -> None:
        """Only these rows stay in the batch (their cache rows too), and the columns they all pad are cut."""
        if len(rows) == len(self.rows):
            return
        if not rows:
            self.rows, self.cache, self.mask = [], None, None
            return
        import torch

        index = torch.tensor([self.rows.index(r) for r in rows], device=self.mask.device)
        mask = self.mask[index]
        start = int(mask.any(0).nonzero()[0])  # the first column some row still reads
        select_cache(self.cache, lambda t: t[index][..., start:, :])
        self.rows, self.mask = rows, mask[:, start:]


def cache_layers(cache: Any) -> list[Any]:
    """The layers of a transformers DynamicCache, each holding `keys` and `values` of (rows, heads, length, dim)."""
    layers = getattr(cache, "layers", None)
    if layers is None or not all(hasattr(layer, "keys") for layer in layers):
        raise TypeError(
            f"batched serving needs a DynamicCache of full-attention layers, not {type(cache).__name__}"
        )
    return layers


def select_cache(cache: Any, change: Callable[[Any], Any]) -> None:
    """Each layer's keys and values replaced by `change(tensor)`, in place."""
    for layer in cache_layers(cache):
        if layer.keys is not None and layer.keys.numel():
            layer.keys, layer.values = change(layer.keys), change(layer.values)


def stack_caches(cache: Any, mask: Any, more: Any, more_mask: Any) -> tuple[Any, Any]:
    """`more`'s rows below `cache`'s (into `cache`), the shorter of the two padded on the left to the other's
    length; and the joint attention mask."""
    import torch
    import torch.nn.functional as F

    length = max(mask.shape[1], more_mask.shape[1])

    def padded(t: Any, have: int) -> Any:
        return F.pad(t, (0, 0, length - have, 0)) if have < length else t

    for layer, extra in zip(cache_layers(cache), cache_layers(more), strict=True):
        layer.keys = torch.cat([padded(layer.keys, mask.shape[1]), padded(extra.keys, more_mask.shape[1])])
        layer.values = torch.cat(
            [padded(layer.values, mask.shape[1]), padded(extra.values, more_mask.shape[1])]
        )
    joint = torch.cat(
        [F.pad(mask, (length - mask.shape[1], 0)), F.pad(more_mask, (length - more_mask.shape[1], 0))]
    )
    return cache, joint
