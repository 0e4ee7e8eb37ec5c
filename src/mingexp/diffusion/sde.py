"""The flow ODE's sampler as a stochastic policy: Flow-GRPO's SDE with the ODE's marginals (Liu et al. 2025).

In mingexp's convention (:mod:`mingexp.diffusion.flow`: x_σ = (1 − σ)·x_0 + σ·ε, v = ε − x_0, sampling runs σ from 1
to 0) the Euler ODE step is x' = x + v·dt with dt = σ' − σ < 0. Flow-GRPO replaces it by the reverse-time SDE whose
marginals are the ODE's: with the score written through the velocity, s(x, σ) = −(x + (1 − σ)·v) / σ,

    x' = x·(1 + s_σ²·dt / (2σ)) + v·(1 + s_σ²·(1 − σ) / (2σ))·dt  +  s_σ·√(−dt)·z,     z ~ N(0, I)
    s_σ = a·√(σ / (1 − σ))                                         (a = ``noise_level``, 0.7 in Flow-GRPO)

so one denoising step is a Gaussian policy π(x' | x) = N(μ_θ(x, σ), (s_σ√(−dt))²·I) with an exact log-probability.
At σ = 1 the denominator 1 − σ uses the schedule's second σ instead (Flow-GRPO's ``sigma_max``), and a = 0 is the
Euler ODE step exactly. The log-probability is averaged over a sample's elements, as Flow-GRPO does (the policy
ratio exp(log π − log π_old) is then per element on average, which keeps the clipped objective's scale independent of
the latent size). The KL between two such policies at one step (same x, same σ) is ‖μ_θ − μ_ref‖² / (2·(s_σ√(−dt))²),
averaged the same way.

Reference: yifan123/flow_grpo, ``flow_grpo/diffusers_patch/sd3_sde_with_logprob.py`` (σ written as ``sigma`` there
too); tests/unit/test_sde.py checks the step against ``torch.distributions.Normal`` and diffusers' Euler step, and its
marginals against the ODE's on a Gaussian flow whose velocity is known in closed form.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class SDEStep:
    """One step of the policy. Attributes: ``sample`` (B, ...) x'; ``log_prob`` (B,) log π(x' | x) averaged over
    elements; ``mean`` (B, ...) μ; ``std`` (B,) the step's standard deviation s_σ·√(−dt)."""

    sample: torch.Tensor
    log_prob: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor


def _per_row(value: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float32, device=like.device)
    if t.ndim == 0:
        t = t.expand(like.shape[0])
    return t.view(-1, *([1] * (like.ndim - 1)))


def sde_std(sigma: torch.Tensor, sigma_max: float, noise_level: float) -> torch.Tensor:
    """s_σ = a·√(σ / (1 − σ)), with σ = 1 read as ``sigma_max`` in the denominator (Flow-GRPO)."""
    sigma = sigma.float()
    return noise_level * torch.sqrt(sigma / (1 - torch.where(sigma >= 1, torch.full_like(sigma, sigma_max), sigma)))


def sde_step(velocity: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor | float, sigma_next: torch.Tensor | float,
             sigma_max: float, noise_level: float = 0.7, sample: torch.Tensor | None = None,
             noise: torch.Tensor | None = None) -> SDEStep:
    """One step from σ to σ' (< σ) of the SDE above, in fp32.

    Args:
        velocity: v̂(x, σ) (B, C, h, w), the guided velocity the sampler would use.
        x: (B, C, h, w) the current sample; sigma / sigma_next: scalars or (B,).
        sigma_max: the schedule's σ after its first (used at σ = 1).
        sample: x' to score (training: the rollout's next sample); None draws it with ``noise`` (B, C, h, w).
    """
    v, x = velocity.float(), x.float()
    s, s_next = _per_row(sigma, x), _per_row(sigma_next, x)
    dt = s_next - s
    std_sigma = sde_std(s, sigma_max, noise_level)
    mean = x * (1 + std_sigma**2 / (2 * s) * dt) + v * (1 + std_sigma**2 * (1 - s) / (2 * s)) * dt
    std = std_sigma * torch.sqrt(-dt)
    if sample is None:
        if noise is None:
            raise ValueError("sde_step: give the next sample to score, or the noise to draw it with")
        sample = mean + std * noise.float()
    sample = sample.float().detach()
    if noise_level == 0:
        # the ODE step: a point mass, no density
        return SDEStep(mean, torch.zeros(x.shape[0], device=x.device), mean, std.flatten())
    log_prob = -((sample - mean) ** 2) / (2 * std**2) - torch.log(std) - 0.5 * math.log(2 * math.pi)
    return SDEStep(sample, log_prob.mean(dim=tuple(range(1, x.ndim))), mean, std.flatten())


def step_kl(mean: torch.Tensor, mean_ref: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(B,) KL(π_θ ‖ π_ref) of one step with a shared std: ‖μ − μ_ref‖² / (2·std²), averaged over elements."""
    d = (mean.float() - mean_ref.float()) ** 2
    return d.mean(dim=tuple(range(1, d.ndim))) / (2 * std.float() ** 2)
