"""Rewards for grpo stages (the `reward` config group): small functions in TRL's reward signature
(medexp.training.rewards.builtin) and the registry that builds the weighted terms (medexp.training.rewards.registry).
The safety reward's scorer is named by import path (reward.terms.safety.scorer, medexp's rule scorer by default),
since training may not import evaluation."""
