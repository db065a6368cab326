"""A run's memory plan under `trainer.memory_budget_gb`: the budget (a number, or `auto`: what the device has free,
with headroom), the longest batch of its training split, the model it trains; the estimate and the levers are
medexp.training.memory_budget's. medexp.training.trainer applies the plan before building the SFT trainer."""

from __future__ import annotations

from dataclasses import replace

from medexp.training.memory_budget import GIB, Batch, ModelShape, Plan, Workload, plan

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
# Blocks from this size up are mmap'd and unmapped when freed. glibc raises the threshold as blocks are freed
# (up to 32 MiB), and keeps freed blocks under it in its arenas, so checkpointing's recomputed layers, each freed
# after its backward, left the peak RSS of SmolLM-135M's 30 layers at 2 x 512 tokens 1.45 GB over the step's start
# instead of ~0.4 GB; a fixed threshold measured 144 MB instead of 513 MB at 8 layers (benchmarks/memory_budget.py).
MMAP_THRESHOLD = 64 * 1024


def device_budget(value: str, cuda: bool) -> tuple[float, float, str]:
    """(budget bytes, bytes this process holds now, how the budget was set) for trainer.memory_budget_gb."""
    if cuda:
        import torch

        free, _ = torch.cuda.mem_get_info()
        own = torch.cuda.memory_allocated()
    else:
        import psutil

        free, own = psutil.virtual_memory().available, psutil.Process().memory_info().rss
    if value != "auto":
        return float(value) * GIB, own, f"trainer.memory_budget_gb={value}"
    # headroom: other processes' growth, the allocator's slack, the estimate's error
    headroom = max(GIB, 0.1 * (own + free))
    where = "GPU" if cuda else "RAM"
    source = f"auto: {free / GIB:.1f} GB {where} free + {own / GIB:.1f} GB held, less {headroom / GIB:.1f} GB headroom"
    return own + free - headroom, own, source


def longest_batch(train, sequences: int, block: int | None) -> Batch:
    """The padded longest batch of a tokenized training split (input_ids, completion_mask when loss is on answers
    only): its `sequences` longest rows, and the most answer tokens any `sequences` rows hold. `block`: packed
    blocks of that many tokens."""
    lengths = [len(ids) for ids in train["input_ids"]]
    if block is not None:
        return Batch(sequences, block, sequences * block)
    masks = train["completion_mask"] if "completion_mask" in train.column_names else None
    answers = [sum(m) for m in masks] if masks is not None else lengths
    return Batch(sequences, max(lengths, default=1), sum(sorted(answers, reverse=True)[:sequences]))


def plan_run(cfg, model, train, precision: str, packing: bool) -> Plan | None:
    """The plan for a run's training split under trainer.memory_budget_gb (None: no budget); a budget set as a
    number that one sequence cannot fit is refused."""
    value = cfg.trainer.memory_budget_gb
    if value is None:
        return None
    import torch

    from medexp.training.answer_head import STORED_LOGITS_BYTES

    cuda = next(model.parameters()).device.type == "cuda"
    budget, own, source = device_budget(str(value), cuda)
    t = cfg.trainer
    trainable, _ = model.get_nb_trainable_parameters()
    work = Workload(
        shape=ModelShape.from_config(model.config),
        base=own,
        trainable=trainable,
        batch=longest_batch(train, int(t.batch_size), int(cfg.dataset.max_tokens) if packing else None),
        dtype_bytes=4 if model.dtype == torch.float32 else 2,
        autocast=precision == "bf16_autocast"
        or (precision in ("bf16", "fp16") and model.dtype == torch.float32),
        eager=str(cfg.model.attn_implementation) == "eager",
        stored_limit=0 if cuda else STORED_LOGITS_BYTES,  # on CUDA the head is TRL's, in its own tiles
        eval_sequences=int(t.eval_batch_size),
        cuda=cuda,
    )
    p = plan(work, budget, source, bool(t.gradient_checkpointing), head_lever=not cuda)
    # only under checkpointing, whose recomputed layers it is for: a mmap per block costs page faults on every pass
    if p.levers.checkpointing and p.actions and not cuda and return_freed_memory():
        p = replace(p, returns_memory=True)
    if not p.fits and value != "auto":
        raise budget_error(value, p, f"its longest training sequence ({p.batch.length} tokens)", own)
    return p


def apply(cfg, p: Plan):
    """A copy of `cfg` whose trainer group carries the plan's checkpointing and micro-batches (the same
    sequences per optimizer step: accumulation makes up the difference)."""
    from copy import deepcopy

    from medexp.config.runtime import gradient_accumulation

    cfg = deepcopy(cfg)
    t = cfg.trainer
    t.gradient_checkpointing = bool(p.levers.checkpointing)  # which layers: checkpoint_kwargs
    micro = p.levers.micro_batch
    if micro:
        steps = gradient_accumulation(t) * (int(t.batch_size) // micro)
        t.batch_size, t.eval_batch_size = micro, min(int(t.eval_batch_size), micro)
        if t.effective_batch_size is None:
            t.gradient_accumulation_steps = steps
    return cfg


def checkpoint_kwargs(p: Plan | None, args: dict) -> dict:
    """The trainer arguments with the plan's every_n_layers (checkpointing of every k-th decoder layer only)."""
    every = p.levers.checkpoint_every if p is not None else 0
    if every <= 1 or not args.get("activation_checkpointing"):
        return args
    return {
        **args,
        "activation_checkpointing_kwargs": {
            **args["activation_checkpointing_kwargs"],
            "every_n_layers": every,
        },
    }


def check_budget_floor(cfg) -> None:
    """Before data and model load: refuse a budget (a number) below what one sequence of dataset.max_tokens needs
    with every lever on, the weights counted from the model's config and this process as it is now. The plan
    checks the real longest sequence again once the model is loaded."""
    value = cfg.trainer.memory_budget_gb
    if value is None or value == "auto":
        return
    import psutil
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(cfg.model.name_or_path), revision=cfg.model.revision)
    shape = ModelShape.from_config(config)
    tied = getattr(config.get_text_config(), "tie_word_embeddings", True)
    weights = (shape.vocab * shape.hidden * (1 if tied else 2) + shape.layers * shape.layer_weights) * (
        2 if str(cfg.model.dtype) in ("bfloat16", "float16") else 4
    )
    tokens = int(cfg.dataset.max_tokens)
    work = Workload(shape, psutil.Process().memory_info().rss + weights, 0, Batch(1, tokens, tokens))
    p = plan(work, float(value) * GIB, f"trainer.memory_budget_gb={value}")
    if not p.fits:
        raise budget_error(value, p, f"one sequence of dataset.max_tokens={tokens} tokens", work.base)


def budget_error(value, p: Plan, sequence: str, base: float):
    from medexp.config import UserError

    return UserError(
        f"trainer.memory_budget_gb={value} is below what one sequence of this run needs: {sequence} needs about "
        f"{p.after / GIB:.1f} GB with every lever medexp has on (activation checkpointing, the LM head in tiles, one "
        f"sequence per pass), {base / GIB:.1f} GB of it the model and this process before training. Set "
        f"trainer.memory_budget_gb to at least {-(-p.after // (GIB / 2)) / 2:g}, train shorter sequences (a lower "
        "dataset.max_tokens), or leave it at auto (what this machine has free)."
    )


def return_freed_memory() -> bool:
    """Have glibc give freed blocks of MMAP_THRESHOLD and more back to the OS at once (Linux; False elsewhere)."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # musl and other C libraries: no mallopt
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
