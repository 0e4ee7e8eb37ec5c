"""Post-training with verifiable rewards: Flow-GRPO on the unified model (:mod:`mingexp.lit.grpo`), its rewards
(:mod:`mingexp.rl.rewards`), rollouts (:mod:`mingexp.rl.rollout`) and training prompts (:mod:`mingexp.rl.prompts`)."""
