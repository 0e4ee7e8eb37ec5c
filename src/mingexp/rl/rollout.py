"""Rollouts: a group of images per prompt from the policy the SDE makes of the sampler, with every step's log-probability.

The policy at one step (:func:`policy_step`) is the sampler's own guided velocity (one batched DiT forward over the
null and the prompt condition, ``v = v_u + w·(v_c − v_u)``, as :class:`~mingexp.diffusion.sampler.FlowSampler` does),
turned into a Gaussian step by :func:`mingexp.diffusion.sde.sde_step` on the schedule of diffusers'
``FlowMatchEulerDiscreteScheduler`` with ``steps`` steps (the training sampler may take fewer steps than inference:
Flow-GRPO's denoising reduction). Image i's starting noise and its step noises come from its own generator, seeded by
the caller from (seed, step, rank, i), so a resumed run redraws them exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from PIL import Image

from mingexp.diffusion.sampler import guided_velocity
from mingexp.diffusion.sde import SDEStep, sde_step
from mingexp.models.processor import MLLMInputs


@dataclass
class Rollout:
    """One rollout of N images. Attributes: ``latents`` (N, T+1, C, h, w) x at each step (x_0 the noise); ``log_probs``
    (N, T); ``sigmas`` (T+1,) the schedule (last 0); ``sigma_max`` the σ after the first; ``images`` the decoded images."""

    latents: torch.Tensor
    log_probs: torch.Tensor
    sigmas: torch.Tensor
    sigma_max: float
    images: list[Image.Image]


def condition(model, inputs: MLLMInputs, guidance_scale: float, repeat: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(tokens (P·repeat, T, C), null (1, T, C) or None without guidance) for P prompts, each encoded once and repeated
    for its group; the connector's statistics left alone."""
    tokens = model.encode(inputs, update_statistics=False).tokens
    null = model.null_tokens(tokens) if guidance_scale != 1.0 else None
    return tokens.repeat_interleave(repeat, dim=0), null


def policy_step(model, x: torch.Tensor, tokens: torch.Tensor, null: torch.Tensor | None, sigma: torch.Tensor, sigma_next: torch.Tensor,
                sigma_max: float, guidance_scale: float, noise_level: float, sample: torch.Tensor | None = None,
                noise: torch.Tensor | None = None) -> SDEStep:
    """One step of the policy at noise level σ → σ' for x (N, C, h, w): the guided velocity, then the SDE step."""
    sigma_t = torch.as_tensor(sigma, device=x.device)
    if null is not None:
        v = guided_velocity(model.denoise, x, torch.cat([null.expand_as(tokens), tokens]), sigma_t, guidance_scale)
    else:
        v = model.denoise(x, tokens, sigma_t.expand(x.shape[0]))
    return sde_step(v, x, sigma, sigma_next, sigma_max, noise_level, sample=sample, noise=noise)


def schedule(model, steps: int) -> torch.Tensor:
    """(steps + 1,) the sampler's σ schedule (diffusers' scheduler, the model's sampler config), ending at 0."""
    sched = model.sampler.scheduler()
    sched.set_timesteps(int(steps))
    return sched.sigmas.float().cpu()


@torch.no_grad()
def rollout(model, inputs: MLLMInputs, generators: Sequence[torch.Generator], steps: int, guidance_scale: float,
            noise_level: float, height: int, width: int) -> Rollout:
    """N = ``len(generators)`` images (one generator each) sampled with the SDE policy, decoded, with their trajectories:
    ``inputs`` holds P prompts, each sampled N / P times (a group)."""
    from mingexp.models.unified import to_pil

    device, f = model.device, model.vae.spatial_factor
    tokens, null = condition(model, inputs, guidance_scale, repeat=len(generators) // inputs.batch_size)
    sigmas = schedule(model, steps)
    sigma_max = float(sigmas[1]) if len(sigmas) > 2 else float(sigmas[0])
    shape = (1, model.dit.in_channels, height // f, width // f)
    x = torch.cat([torch.randn(shape, generator=g) for g in generators]).to(device=device, dtype=tokens.dtype)
    xs, log_probs = [x], []
    for k in range(len(sigmas) - 1):
        noise = torch.cat([torch.randn(shape, generator=g) for g in generators]).to(device)
        step = policy_step(model, x, tokens, null, sigmas[k], sigmas[k + 1], sigma_max, guidance_scale, noise_level, noise=noise)
        x = step.sample.to(tokens.dtype)
        xs.append(x)
        log_probs.append(step.log_prob)
    decoded = ((model.vae.decode(x).float() + 1) / 2).clamp(0, 1)
    return Rollout(torch.stack(xs, 1), torch.stack(log_probs, 1), sigmas, sigma_max, [to_pil(im) for im in decoded])
