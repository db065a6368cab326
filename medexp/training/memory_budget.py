"""`trainer.memory_budget_gb`: estimate the peak memory of a run's longest batch before training, and turn on the
levers that bring it under the budget, cheapest first.

The estimate (bytes) is what the process holds when the plan is made (weights, libraries: measured, `base`) plus:
- the adapters' training state: trainable parameters x 16 (fp32 weight, gradient, AdamW's two moments), and
  `RUNTIME_BYTES` the trainer adds once it is built;
- the body's activations: per layer and token, the tensors a Llama-family decoder layer with LoRA on every linear
  keeps for its backward, counted from the config (`ACT_PER_LAYER`: hidden, intermediate and key/value widths),
  times `ACT_SCALE`, fitted to the peak RSS measured on the embedded tiny model and on SmolLM-135M's 30-layer
  shape (benchmarks/memory_budget.py); with activation checkpointing, each layer's input plus twice one layer's
  activations (the layer recomputed, and its backward's temporaries);
- the LM head: medexp's answer-only head (medexp.training.answer_head, on CPU) keeps the fp32 logits of the answer
  tokens for its backward, which briefly needs `STORED_HEAD_COPIES` times answer tokens x vocab x 4 bytes; in
  tiles (TRL's kernel) it needs `TILE_COPIES` tiles of min(answer tokens, 4096) x columns.

The levers, in order of what they cost in speed: activation checkpointing (one more forward of the body, ~30%),
the answer head in narrow tiles (`HEAD_COLUMNS` vocab columns: more, smaller matmuls), then fewer sequences per
forward pass with gradient accumulation making up the difference, so the optimizer step sees the same batch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

GIB = 2**30
# Calibrated: measured peak RSS over this structural count (benchmarks/memory_budget.py): the allocator's slack and
# the small tensors (RoPE tables, masks, index copies) the count leaves out.
ACT_SCALE = 1.3
# The answer-only head's backward holds the kept logits, their softmax and its gradient at once (measured 4.7x).
STORED_HEAD_COPIES = 5.0
EVAL_HEAD_COPIES = 2.5  # without gradients: the logits and logsumexp's temporary
TILE_COPIES = (
    8.0  # TRL's chunked kernel: its tile buffer and the elementwise temporaries of its fold (measured 7.6x)
)
TOKEN_TILE = 4096  # TRL's TOKEN_CHUNK_SIZE: rows per tile
TRL_COLUMNS = 32768  # TRL's own vocab columns per tile
HEAD_COLUMNS = 4096  # the narrow tiles the budget asks for: 64 MiB per fp32 tile
TRAIN_STATE_BYTES = 16  # per trainable parameter: fp32 weight, gradient, AdamW exp_avg and exp_avg_sq
# what the trainer, its optimizer and data loader add to the process after the plan is made (tiny model, measured)
RUNTIME_BYTES = 128 * 2**20


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
    checkpointing: bool = False
    head_columns: int | None = None  # None: the head as medexp runs it by default
    micro_batch: int | None = None  # sequences per forward pass; None: the whole batch


def act_per_layer(shape: ModelShape) -> float:
    """Elements one decoder layer keeps per token for its backward: the norms' inputs and outputs, q, k, v and the
    RoPE'd q, k, the attention output, the MLP's gate, up, SiLU and product, and LoRA's dropout copy (and mask) of
    the input of each of the seven projections."""
    h, i, kv = shape.hidden, shape.intermediate, shape.kv_width
    return 21.5 * h + 5.25 * i + 3 * kv


def activation_bytes(
    shape: ModelShape, batch: Batch, dtype_bytes: int, checkpointing: bool, eager: bool = False
) -> float:
    tokens = batch.sequences * batch.length
    layer = act_per_layer(shape) * ACT_SCALE * dtype_bytes * tokens
    if eager:  # attention probabilities and their dropout copy: heads x length per token
        layer += 2 * shape.heads * batch.length * dtype_bytes * tokens
    if checkpointing:  # each layer's input kept; one layer recomputed, with its backward's temporaries
        return shape.layers * shape.hidden * dtype_bytes * tokens + 2 * layer
    return shape.layers * layer


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
    dtype_bytes: int = 4  # activations: 4 in fp32, 2 in bf16 / fp16
    eager: bool = False  # attn_implementation=eager keeps the attention probabilities
    stored_limit: float = (
        2 * GIB
    )  # medexp.training.answer_head.STORED_LOGITS_BYTES; 0 where TRL runs the head
    eval_sequences: int = 0  # trainer.eval_batch_size: evaluation's batches (no gradients) can peak higher


def estimate(work: Workload, levers: Levers) -> dict[str, float]:
    """The estimated peak in bytes, by part (`total` their sum)."""
    micro = levers.micro_batch or work.batch.sequences
    batch = work.batch.split(micro)
    parts = {
        "base": work.base,
        "adapters": work.trainable * TRAIN_STATE_BYTES + RUNTIME_BYTES,
        "activations": activation_bytes(
            work.shape, batch, work.dtype_bytes, levers.checkpointing, work.eager
        ),
        "head": head_bytes(work.shape, batch.answer_tokens, levers.head_columns, work.stored_limit),
    }
    # evaluation: no activations kept (about one layer's at a time), the head's forward only
    eval_sequences = min(work.eval_sequences, levers.micro_batch or work.eval_sequences)
    evaluated = work.batch.split(eval_sequences) if eval_sequences else None
    parts["evaluation"] = (
        activation_bytes(work.shape, evaluated, work.dtype_bytes, checkpointing=True, eager=work.eager)
        + head_bytes(work.shape, evaluated.answer_tokens, levers.head_columns, work.stored_limit, grad=False)
        if evaluated
        else 0.0
    )
    step = max(parts["activations"] + parts["head"], parts["evaluation"])
    parts["total"] = parts["base"] + parts["adapters"] + step
    return parts


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

    @property
    def actions(self) -> list[str]:
        """What the budget turned on."""
        out = []
        if self.levers.checkpointing and not self.asked_checkpointing:
            out.append("activation checkpointing")
        if self.levers.head_columns:
            out.append(f"answer head in {self.levers.head_columns}-column tiles")
        if self.levers.micro_batch:
            steps = self.batch.sequences // self.levers.micro_batch
            out.append(f"{self.levers.micro_batch} sequences per pass x {steps} accumulated")
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
            f"{', '.join(self.actions)}: {self.after / GIB:.1f} GB{verdict}{skipped}"
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
            "memory_budget/head_columns": str(levers.head_columns or "default"),
            "memory_budget/micro_batch": str(levers.micro_batch or self.batch.sequences),
            "memory_budget/returns_freed_memory": str(self.returns_memory),
        }


def plan(
    work: Workload, budget: float, source: str, checkpointing: bool = False, head_lever: bool = True
) -> Plan:
    """The cheapest levers that bring the longest batch under `budget` (bytes): checkpointing, then the head in
    narrow tiles (where medexp computes the head: `head_lever`), then the fewest micro-batches that divide the
    batch. `checkpointing`: already on by trainer.gradient_checkpointing. When even one sequence per pass does
    not fit, the plan holds every lever and `fits` is False."""
    before = estimate(work, Levers(checkpointing=checkpointing))["total"]
    n = work.batch.sequences
    ladder = [Levers(checkpointing=checkpointing), Levers(checkpointing=True)]
    if head_lever:
        ladder.append(Levers(checkpointing=True, head_columns=HEAD_COLUMNS))
    lean = ladder[-1]
    ladder += [replace(lean, micro_batch=m) for m in range(n - 1, 0, -1) if n % m == 0]
    for levers in ladder:
        after = estimate(work, levers)["total"]
        if after <= budget:
            return Plan(budget, source, work.batch, levers, before, after, True, head_lever, checkpointing)
    return Plan(budget, source, work.batch, ladder[-1], before, after, False, head_lever, checkpointing)
