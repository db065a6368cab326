"""`trainer.memory_budget_gb`: estimate the peak memory of a run's longest batch before training, and turn on the
cheapest levers that bring it under the budget.

The estimate (bytes) is what the process holds when the plan is made (`base`: weights, libraries, measured) plus
the adapters' training state (trainable parameters x 16: fp32 weight, gradient, AdamW's moments; `RUNTIME_BYTES`),
the body's activations and the LM head's peak. Activations: per layer and token, what a Llama-family decoder layer
with LoRA on every linear keeps for its backward, counted from the config (`act_per_layer`) times `ACT_SCALE`
(fitted to measured peak RSS); under bf16 autocast `AUTOCAST_SHARE` of that (the matmuls' saved inputs and outputs
are bf16, norms and the residual stream fp32) plus the bf16 copy of each frozen weight a matmul keeps. A
checkpointed layer keeps only its input; the one being recomputed holds a layer's worth, its backward another. The
head: medexp's answer-only head (medexp.training.answer_head, on CPU) keeps the answer tokens' fp32 logits
(`STORED_HEAD_COPIES` x tokens x vocab x 4 at its backward's peak); TRL's tiled kernel `TILE_COPIES` tiles.

The plan tries every combination of the levers (checkpointing every k-th decoder layer, transformers'
`every_n_layers`; the answer head in narrow tiles; micro-batches that divide the batch, accumulation making up the
difference) and keeps the one that fits at the least estimated slowdown (`slowdown`, from measured costs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import product

GIB = 2**30
# Measured peak RSS over the structural count (benchmarks/memory_budget.py): allocator slack, RoPE tables, masks
ACT_SCALE = 1.3
# Bytes autograd saves per layer and token under bf16 autocast over fp32's: 47.4 KB / 73.5 KB, SmolLM2-135M's layer
# at 2 x 1024 tokens with LoRA on every linear (saved-tensor hooks; benchmarks/memory_levers.py --saved)
AUTOCAST_SHARE = 0.65
# The answer-only head's backward holds the kept logits, their softmax and its gradient at once (measured 4.7x).
STORED_HEAD_COPIES = 5.0
EVAL_HEAD_COPIES = 2.5  # without gradients: the logits and logsumexp's temporary
# TRL's chunked kernel: its tile buffer and the elementwise temporaries of its fold (measured 7.6x)
TILE_COPIES = 8.0
TOKEN_TILE = 4096  # TRL's TOKEN_CHUNK_SIZE: rows per tile
TRL_COLUMNS = 32768  # TRL's own vocab columns per tile
HEAD_COLUMNS = 4096  # the narrow tiles the budget asks for: 64 MiB per fp32 tile
TRAIN_STATE_BYTES = 16  # per trainable parameter: fp32 weight, gradient, AdamW exp_avg and exp_avg_sq
RUNTIME_BYTES = 128 * 2**20  # the trainer, optimizer and loader, added after the plan (tiny model, measured)
# Step time each lever adds. The step is split by matmul FLOPs into the body (forward + input gradients of the frozen
# weights: 4 x layer weights per token and layer) and the head (4 x hidden x vocab per answer token). Checkpointing
# a layer adds one more forward of it: half its share. The head in HEAD_COLUMNS tiles costs 2.2x the kept-logits
# head (TRL's kernel recomputes each tile, in narrow matmuls; once on this CPU, 4 layers: +2.65 CPU s per 1024-token
# sequence, benchmarks/memory_levers.py). Each halving of the sequences per pass: on a CPU a pass of 1024 tokens
# already keeps the cores busy (assumed small: the measurement's noise, +-30%, hides it); on CUDA, not measured,
# assumed dear, so that checkpointing comes first there, as issue 26 lists the levers.
CHECKPOINT_COST = 0.5
TILE_COST = 1.2
SPLIT_COST = {"cpu": 0.02, "cuda": 0.5}


@dataclass(frozen=True)
class ModelShape:
    """What the estimate reads from a decoder-only model's config."""

    layers: int
    hidden: int
    intermediate: int
    kv_width: int  # key/value heads x head dim
    heads: int
    vocab: int

    @classmethod
    def from_config(cls, config) -> ModelShape:
        c = config.get_text_config() if hasattr(config, "get_text_config") else config
        heads = int(c.num_attention_heads)
        head_dim = int(getattr(c, "head_dim", None) or c.hidden_size // heads)
        return cls(
            layers=int(c.num_hidden_layers),
            hidden=int(c.hidden_size),
            intermediate=int(getattr(c, "intermediate_size", None) or 4 * c.hidden_size),
            kv_width=int(getattr(c, "num_key_value_heads", None) or heads) * head_dim,
            heads=heads,
            vocab=int(c.vocab_size),
        )

    @property
    def layer_weights(self) -> int:
        """Parameters of one decoder layer's seven projections."""
        h = self.hidden
        return h * (h + 2 * self.kv_width) + h * h + 3 * h * self.intermediate


@dataclass(frozen=True)
class Batch:
    """The longest batch of a run: sequences per forward pass, their padded length, and answer tokens (those the
    LM head projects)."""

    sequences: int
    length: int
    answer_tokens: int

    def split(self, micro: int) -> Batch:
        """One micro-batch of `micro` of these sequences (its share of the answer tokens, rounded up)."""
        return Batch(micro, self.length, -(-self.answer_tokens * micro // self.sequences))


@dataclass(frozen=True)
class Levers:
    checkpoint_every: int = 0  # 0: no activation checkpointing; k: every k-th decoder layer (1: all of them)
    head_columns: int | None = None  # None: the head as medexp runs it by default
    micro_batch: int | None = None  # sequences per forward pass; None: the whole batch

    @property
    def checkpointing(self) -> bool:
        return self.checkpoint_every > 0


def checkpointed_layers(layers: int, every: int) -> int:
    """How many of `layers` transformers checkpoints with every_n_layers=`every` (layer 0, every, 2 x every...)."""
    return -(-layers // every) if every else 0


def act_per_layer(shape: ModelShape) -> float:
    """Elements one decoder layer keeps per token for its backward: the norms' inputs and outputs, q, k, v and the
    RoPE'd q, k, the attention output, the MLP's gate, up, SiLU and product, and LoRA's dropout copy (and mask) of
    the input of each of the seven projections."""
    h, i, kv = shape.hidden, shape.intermediate, shape.kv_width
    return 21.5 * h + 5.25 * i + 3 * kv


def activation_bytes(
    shape: ModelShape, batch: Batch, dtype_bytes: int, every: int, eager: bool = False, autocast: bool = False
) -> float:
    """The body's activations with every `every`-th layer checkpointed (0: none); `dtype_bytes` is the weights' and
    the residual stream's element size, `autocast`: matmuls in bf16 on fp32 weights."""
    tokens = batch.sequences * batch.length
    act = dtype_bytes * (AUTOCAST_SHARE if autocast else 1.0)
    layer = act_per_layer(shape) * ACT_SCALE * act * tokens
    if eager:  # attention probabilities and their dropout copy: heads x length per token
        layer += 2 * shape.heads * batch.length * act * tokens
    if autocast:  # the bf16 copy of each frozen weight a matmul keeps for its backward
        layer += shape.layer_weights * 2
    kept = checkpointed_layers(shape.layers, every)
    if not kept:
        return shape.layers * layer
    # each checkpointed layer keeps its input; the one recomputed holds a layer's worth, its backward another
    return (shape.layers - kept) * layer + kept * shape.hidden * dtype_bytes * tokens + 2 * layer


def head_bytes(
    shape: ModelShape, answer_tokens: int, columns: int | None, stored_limit: float, grad: bool = True
) -> float:
    """The LM head's peak: kept fp32 logits (medexp's default while they fit `stored_limit`), else tiles. Without
    gradients (evaluation) the logits and their logsumexp temporary only."""
    kept = answer_tokens * shape.vocab * 4
    if columns is None and kept <= stored_limit:
        return (STORED_HEAD_COPIES if grad else EVAL_HEAD_COPIES) * kept
    tile = min(answer_tokens, TOKEN_TILE) * min(columns or TRL_COLUMNS, shape.vocab) * 4
    return TILE_COPIES * tile


@dataclass(frozen=True)
class Workload:
    shape: ModelShape
    base: float  # bytes the process holds before training (weights, libraries)
    trainable: int  # trainable parameters
    batch: Batch  # the longest training batch
    dtype_bytes: int = 4  # weights and residual stream: 4 in fp32 (bf16 autocast too), 2 in bf16 / fp16
    autocast: bool = False  # trainer.precision=bf16_autocast: matmuls (and what they keep) in bf16
    eager: bool = False  # attn_implementation=eager keeps the attention probabilities
    stored_limit: float = 2 * GIB  # answer_head.STORED_LOGITS_BYTES; 0 where TRL runs the head
    eval_sequences: int = 0  # trainer.eval_batch_size: evaluation's batches (no gradients) can peak higher
    cuda: bool = False  # micro-batches cost more on a GPU (SPLIT_COST)


def estimate(work: Workload, levers: Levers) -> dict[str, float]:
    """The estimated peak in bytes, by part (`total` their sum)."""
    micro = levers.micro_batch or work.batch.sequences
    batch = work.batch.split(micro)
    body = (work.shape, batch, work.dtype_bytes, levers.checkpoint_every, work.eager, work.autocast)
    parts = {
        "base": work.base,
        "adapters": work.trainable * TRAIN_STATE_BYTES + RUNTIME_BYTES,
        "activations": activation_bytes(*body),
        "head": head_bytes(work.shape, batch.answer_tokens, levers.head_columns, work.stored_limit),
    }
    # evaluation: no activations kept (about one layer's at a time), the head's forward only
    eval_sequences = min(work.eval_sequences, levers.micro_batch or work.eval_sequences)
    evaluated = work.batch.split(eval_sequences) if eval_sequences else None
    parts["evaluation"] = (
        activation_bytes(work.shape, evaluated, work.dtype_bytes, 1, work.eager, work.autocast)
        + head_bytes(work.shape, evaluated.answer_tokens, levers.head_columns, work.stored_limit, grad=False)
        if evaluated
        else 0.0
    )
    step = max(parts["activations"] + parts["head"], parts["evaluation"])
    parts["total"] = parts["base"] + parts["adapters"] + step
    return parts


def slowdown(work: Workload, levers: Levers) -> float:
    """A step's estimated time with `levers` over its time without (CHECKPOINT_COST, TILE_COST, SPLIT_COST)."""
    shape, batch = work.shape, work.batch
    body = shape.layers * shape.layer_weights * batch.sequences * batch.length
    head = shape.hidden * shape.vocab * batch.answer_tokens
    checkpointed = checkpointed_layers(shape.layers, levers.checkpoint_every) / shape.layers
    cost = CHECKPOINT_COST * checkpointed * body + (TILE_COST * head if levers.head_columns else 0.0)
    passes = batch.sequences / (levers.micro_batch or batch.sequences)
    return 1 + cost / (body + head) + SPLIT_COST["cuda" if work.cuda else "cpu"] * math.log2(passes)


@dataclass(frozen=True)
class Plan:
    budget: float  # bytes
    source: str  # how the budget was set: "trainer.memory_budget_gb=8" or "auto: ..."
    batch: Batch
    levers: Levers
    before: float  # estimated peak with nothing turned on
    after: float  # estimated peak with the plan's levers
    fits: bool
    head_lever: bool = True  # False where medexp does not compute the head (TRL does, on CUDA)
    asked_checkpointing: bool = False  # trainer.gradient_checkpointing was on already
    returns_memory: bool = False  # glibc returns freed blocks to the OS (medexp.training.memory_plan, on CPU)
    layers: int = 0  # the model's decoder layers
    slowdown: float = 1.0  # the levers' estimated step time over a step without them

    @property
    def checkpointed(self) -> int:
        return checkpointed_layers(self.layers, self.levers.checkpoint_every)

    @property
    def actions(self) -> list[str]:
        """What the budget turned on."""
        out = []
        if self.levers.checkpointing and not self.asked_checkpointing:
            some = (
                f" of {self.checkpointed} of {self.layers} layers" if self.checkpointed < self.layers else ""
            )
            out.append(f"activation checkpointing{some}")
        if self.levers.head_columns:
            out.append(f"answer head in {self.levers.head_columns}-column tiles")
        if self.levers.micro_batch:
            steps = self.batch.sequences // self.levers.micro_batch
            out.append(f"{self.levers.micro_batch} per pass x {steps} accumulated")
        if self.returns_memory:
            out.append("freed memory returned to the OS")
        return out

    def line(self) -> str:
        """The console line."""
        gb = f"{self.budget / GIB:.1f} GB ({self.source})"
        longest = f"{self.batch.sequences} x {self.batch.length} tokens"
        if not self.actions:
            return (
                f"memory budget {gb}: longest batch ({longest}) estimated at {self.before / GIB:.1f} GB, fits"
            )
        skipped = "" if self.head_lever else "; the LM head is TRL's here, no head lever"
        verdict = "" if self.fits else ", still over the budget: the leanest plan medexp has"
        return (
            f"memory budget {gb}: longest batch ({longest}) estimated at {self.before / GIB:.1f} GB -> "
            f"{', '.join(self.actions)}: {self.after / GIB:.1f} GB, ~{self.slowdown:.2f}x step time"
            f"{verdict}{skipped}"
        )

    def params(self) -> dict[str, str]:
        """MLflow params of the plan (the config's own trainer.* params keep what was asked)."""
        levers = self.levers
        return {
            "memory_budget/budget_gb": f"{self.budget / GIB:.2f}",
            "memory_budget/source": self.source,
            "memory_budget/estimate_gb": f"{self.before / GIB:.2f}",
            "memory_budget/planned_gb": f"{self.after / GIB:.2f}",
            "memory_budget/actions": ", ".join(self.actions) or "none",
            "memory_budget/gradient_checkpointing": str(levers.checkpointing),
            "memory_budget/checkpointed_layers": f"{self.checkpointed}/{self.layers}",
            "memory_budget/head_columns": str(levers.head_columns or "default"),
            "memory_budget/micro_batch": str(levers.micro_batch or self.batch.sequences),
            "memory_budget/estimated_slowdown": f"{self.slowdown:.3f}",
            "memory_budget/returns_freed_memory": str(self.returns_memory),
        }


def candidates(work: Workload, checkpointing: bool, head_lever: bool) -> list[Levers]:
    """Every combination of the levers: checkpointing of every k-th layer (one k per distinct count of checkpointed
    layers; only every layer when trainer.gradient_checkpointing asked for it), the head as it is or in tiles
    (`head_lever`), and each micro-batch size that divides the batch."""
    layers, n = work.shape.layers, work.batch.sequences
    every = {checkpointed_layers(layers, k): k for k in range(layers, 0, -1)}  # the smallest k per count
    everys = [1] if checkpointing else [0, *every.values()]
    heads = [None, HEAD_COLUMNS] if head_lever else [None]
    micros = [None, *(m for m in range(n - 1, 0, -1) if n % m == 0)]
    return [Levers(e, h, m) for e, h, m in product(everys, heads, micros)]


def plan(
    work: Workload, budget: float, source: str, checkpointing: bool = False, head_lever: bool = True
) -> Plan:
    """The levers that bring the longest batch under `budget` (bytes) at the least estimated slowdown (ties: the
    lower peak). `checkpointing`: trainer.gradient_checkpointing asked for every layer already. When even one
    sequence per pass with every lever does not fit, the plan holds every lever and `fits` is False."""
    before = estimate(work, Levers(checkpoint_every=int(checkpointing)))["total"]
    levers = candidates(work, checkpointing, head_lever)
    options = [(slowdown(work, lv), estimate(work, lv)["total"], lv) for lv in levers]
    fitting = [o for o in options if o[1] <= budget]
    cost, after, levers = min(fitting, key=lambda o: o[:2]) if fitting else min(options, key=lambda o: o[1])
    found = (before, after, bool(fitting), head_lever, checkpointing, False, work.shape.layers, cost)
    return Plan(budget, source, work.batch, levers, *found)
