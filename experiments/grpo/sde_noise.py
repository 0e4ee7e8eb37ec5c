"""What the SDE's noise costs the policy before any training: the reward of the training sampler against the ODE's.

Flow-GRPO trains on an SDE with the ODE's marginals (mingexp.diffusion.sde), but with a handful of steps the
discretised SDE is not the ODE: large noise levels cost sample quality, and a policy whose samples are worse than the
model's own sampler spends its rollouts learning to undo the noise. This script scores 96 training prompts
(mingexp.rl.prompts.ShapesPrompts, batch 7 of seed 0) with the GRPO reward (GenEval's rules over the shapes detector,
partial credit) for the ODE at inference's 20 steps and for the SDE rollout at several (steps, noise level) pairs, the
same seeds for each, and prints the mean reward (partial and strict) and the ODE's per tag.

    python experiments/grpo/sde_noise.py outputs/train/runs/<make train>/checkpoints/last.ckpt
"""

from __future__ import annotations

import sys

import torch


def main(ckpt: str, n: int = 96) -> None:
    from mingexp.eval.geneval.shapes_detector import ShapesDetector
    from mingexp.io.run import load_checkpoint
    from mingexp.models.generation import generate
    from mingexp.rl.prompts import ShapesPrompts
    from mingexp.rl.rewards.geneval import GenEvalReward
    from mingexp.rl.rollout import rollout

    torch.set_grad_enabled(False)
    model, _ = load_checkpoint(ckpt)
    meta = ShapesPrompts().batch(0, 7, n)
    prompts = [m["prompt"] for m in meta]
    reward = GenEvalReward(ShapesDetector())
    size = model.default_size()
    images = generate(model, prompts, list(range(n)), batch_size=n)
    scores = reward(images, prompts, meta)
    print(f"ODE, {model.sampler.steps} steps: reward {float(scores.total.mean()):.3f}, strict {float(scores.components['strict'].mean()):.3f}")
    inputs = model.mllm.processor(prompts)
    for steps, noise_level in ((10, 0.7), (10, 0.3), (20, 0.7), (20, 0.3), (10, 1e-4)):
        generators = [torch.Generator().manual_seed(i) for i in range(n)]
        out = rollout(model, inputs, generators, steps, model.sampler.guidance_scale, noise_level, size, size)
        s = reward(out.images, prompts, meta)
        print(f"SDE, {steps} steps, a = {noise_level}: reward {float(s.total.mean()):.3f}, strict {float(s.components['strict'].mean()):.3f}")
    by_tag: dict[str, list[float]] = {}
    for m, value in zip(meta, scores.total.tolist()):
        by_tag.setdefault(m["tag"], []).append(value)
    print("ODE per tag:", {k: (len(v), round(sum(v) / len(v), 3)) for k, v in by_tag.items()})


if __name__ == "__main__":
    main(sys.argv[1])
