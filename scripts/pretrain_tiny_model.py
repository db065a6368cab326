"""Build medexp's embedded tiny model: a ~1M-parameter Llama with its own byte-level BPE tokenizer.

It is pretrained as a plain language model on the encyclopedia-style passages of the sample
(`medexp/assets/sample/pretrain_corpus.txt`), so it knows the facts but has never seen the chat format
or the answer phrasing. LoRA fine-tuning on the question-answer pairs therefore lowers eval loss visibly,
which is what the smoke preset checks. The tokenizer has no pad token on purpose: medexp must set one.

    python scripts/make_sample_data.py && python scripts/pretrain_tiny_model.py   # ~3 min on 2 CPU cores
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "medexp" / "assets" / "sample"
OUT = ROOT / "medexp" / "assets" / "tiny_llama"

# ChatML, as SmolLM-Instruct uses, so the tiny model exercises the same template path as the real bases.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def train_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        unk_token=None,
        model_max_length=512,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def blocks(tokenizer: PreTrainedTokenizerFast, passages: list[str], n: int, size: int) -> torch.Tensor:
    """n training blocks of `size` tokens, each a stream of passages with their sentences shuffled."""
    rng = random.Random(0)
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    out = []
    for _ in range(n):
        ids: list[int] = []
        while len(ids) < size:
            sentences = rng.choice(passages).split(". ")
            rng.shuffle(sentences)
            text = ". ".join(s.rstrip(".") for s in sentences) + "."
            ids += tokenizer(text)["input_ids"] + [eot]
        out.append(ids[:size])
    return torch.tensor(out)


def main(steps: int = 1500) -> None:
    torch.manual_seed(0)
    passages = (SAMPLE / "pretrain_corpus.txt").read_text().splitlines()
    qa = (SAMPLE / "medquad_sample.jsonl").read_text().splitlines()
    tokenizer = train_tokenizer(passages + qa)

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention, like SmolLM
        max_position_embeddings=512,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        pad_token_id=None,
    )
    model = LlamaForCausalLM(config)
    print(f"parameters: {sum(p.numel() for p in model.parameters()):,}")

    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.05)
    data = blocks(tokenizer, passages, n=steps * 16, size=128)
    model.train()
    for step in range(steps):
        batch = data[step * 16 : (step + 1) * 16]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step:5d}  loss {loss.item():.3f}", flush=True)

    OUT.mkdir(parents=True, exist_ok=True)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(OUT, safe_serialization=True)
    tokenizer.save_pretrained(OUT)
    print(f"saved to {OUT}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1500)
