"""Training: base model + LoRA/QLoRA adapters (`model`), the TRL trainer (`trainer`), one training stage
(`stage`), held-out loss (`held_out`), and finding a trained run's adapter and config again (`source`)."""
