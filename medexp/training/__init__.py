"""Training: the stage kinds (`methods`: sft, pretrain, dpo, kto, orpo, simpo, grpo, registered by name), base
model + LoRA/QLoRA adapters (`model`), the SFT trainer and shared training arguments (`trainer`), the stage
loop (`stage`), held-out loss (`held_out`), `resume=` (`resume`, `run_record`), and finding a trained run's
adapter and config again (`source`)."""
