"""Flow-GRPO's SDE step (mingexp.diffusion.sde) against what we did not write: torch's Normal and KL, diffusers' Euler
step, and the closed-form marginals of a Gaussian flow."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from torch.distributions import Normal, kl_divergence

from mingexp.diffusion.sde import sde_std, sde_step, step_kl


def test_the_step_log_probability_is_the_gaussian_density_of_its_mean_and_std():
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(3, 4, 2, 2, generator=g), torch.randn(3, 4, 2, 2, generator=g)
    sigma, sigma_next = torch.tensor([0.9, 0.5, 0.2]), torch.tensor([0.8, 0.4, 0.0])
    step = sde_step(v, x, sigma, sigma_next, sigma_max=0.95, noise_level=0.7, noise=torch.randn(3, 4, 2, 2, generator=g))
    # closed form: N(μ, (s_σ √(σ − σ'))²) with s_σ = a √(σ / (1 − σ)) and μ from Flow-GRPO's update
    s = 0.7 * torch.sqrt(sigma / (1 - sigma))
    dt = (sigma_next - sigma).view(-1, 1, 1, 1)
    sv = s.view(-1, 1, 1, 1)
    mean = x * (1 + sv**2 / (2 * sigma.view(-1, 1, 1, 1)) * dt) + v * (1 + sv**2 * (1 - sigma.view(-1, 1, 1, 1)) / (2 * sigma.view(-1, 1, 1, 1))) * dt
    std = s * torch.sqrt(sigma - sigma_next)
    torch.testing.assert_close(step.mean, mean)
    torch.testing.assert_close(step.std, std)
    expected = Normal(mean, std.view(-1, 1, 1, 1)).log_prob(step.sample).mean(dim=(1, 2, 3))
    torch.testing.assert_close(step.log_prob, expected)
    # scoring a given next sample gives the same density as drawing it
    again = sde_step(v, x, sigma, sigma_next, sigma_max=0.95, noise_level=0.7, sample=step.sample)
    torch.testing.assert_close(again.log_prob, step.log_prob)


def test_sigma_one_uses_the_schedules_second_sigma_and_noise_level_zero_is_diffusers_euler_step():
    assert torch.isfinite(sde_std(torch.tensor([1.0]), 0.95, 0.7)).all()
    torch.testing.assert_close(sde_std(torch.tensor([1.0]), 0.95, 0.7), 0.7 * torch.sqrt(torch.tensor([1.0 / 0.05])))
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    sched.set_timesteps(5)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 4, 4, generator=g)
    for k, t in enumerate(sched.timesteps):
        v = torch.randn(2, 3, 4, 4, generator=g)
        euler = sched.step(v, t, x).prev_sample
        ode = sde_step(v, x, sched.sigmas[k], sched.sigmas[k + 1], float(sched.sigmas[1]), noise_level=0.0, noise=torch.zeros_like(x))
        torch.testing.assert_close(ode.sample, euler)
        x = euler


def test_the_step_kl_is_torchs_kl_between_the_two_gaussians():
    g = torch.Generator().manual_seed(2)
    m1, m2 = torch.randn(4, 3, 2, 2, generator=g), torch.randn(4, 3, 2, 2, generator=g)
    std = torch.rand(4, generator=g) + 0.1
    expected = kl_divergence(Normal(m1, std.view(-1, 1, 1, 1)), Normal(m2, std.view(-1, 1, 1, 1))).mean(dim=(1, 2, 3))
    torch.testing.assert_close(step_kl(m1, m2, std), expected)
    assert torch.equal(step_kl(m1, m1, std), torch.zeros(4))


def _gaussian_flow(m: torch.Tensor, s: torch.Tensor):
    """The exact velocity of x_σ = (1 − σ)x₀ + σε for x₀ ~ N(m, s²): E[ε − x₀ | x_σ = x] in closed form."""

    def velocity(x: torch.Tensor, sigma: float) -> torch.Tensor:
        a = 1 - sigma
        var = a**2 * s**2 + sigma**2
        return (sigma - a * s**2) * (x - a * m) / var - m

    return velocity


@pytest.mark.parametrize("noise_level", [0.3, 0.7])
def test_the_sdes_marginals_are_the_odes_on_a_gaussian_flow(noise_level):
    """Many samples through the SDE and through the ODE with the exact velocity: at every step their mean and std match
    the flow's closed-form marginal N((1 − σ)m, (1 − σ)²s² + σ²), and the ends match the data."""
    torch.manual_seed(0)
    n, steps = 40000, 60
    m, s = torch.tensor([1.5, -0.5, 0.0]), torch.tensor([0.5, 1.0, 0.2])
    velocity = _gaussian_flow(m, s)
    sigmas = torch.linspace(1, 0, steps + 1)
    sigma_max = float(sigmas[1])
    x_sde = torch.randn(n, 3, 1, 1)
    x_ode = x_sde.clone()
    for k in range(steps):
        sig, nxt = float(sigmas[k]), float(sigmas[k + 1])
        v = velocity(x_sde.view(n, 3), sig).view(n, 3, 1, 1)
        x_sde = sde_step(v, x_sde, sig, nxt, sigma_max, noise_level, noise=torch.randn_like(x_sde)).sample
        x_ode = x_ode + velocity(x_ode.view(n, 3), sig).view(n, 3, 1, 1) * (nxt - sig)
        if k + 1 in (steps // 4, steps // 2, 3 * steps // 4):
            a = 1 - nxt
            mean, std = a * m, torch.sqrt(a**2 * s**2 + nxt**2)
            for x in (x_sde, x_ode):
                torch.testing.assert_close(x.view(n, 3).mean(0), mean, atol=0.03, rtol=0)
                torch.testing.assert_close(x.view(n, 3).std(0), std, atol=0.03, rtol=0.03)
    for x in (x_sde, x_ode):
        torch.testing.assert_close(x.view(n, 3).mean(0), m, atol=0.03, rtol=0)
        torch.testing.assert_close(x.view(n, 3).std(0), s, atol=0.04, rtol=0.06)
    assert not torch.allclose(x_sde, x_ode)  # the SDE really is stochastic: same marginals, other paths
    assert math.isfinite(float(x_sde.abs().max()))
