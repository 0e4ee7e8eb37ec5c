"""Flow-matching maths, timestep sampling, condition dropout and the sampler."""

import pytest
import torch

from mingexp.diffusion.flow import ConditionDropout, FlowMatching
from mingexp.diffusion.sampler import FlowSampler
from mingexp.errors import ConfigError


def test_interpolation_endpoints_and_velocity():
    x0, eps = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    fm = FlowMatching()
    assert torch.allclose(fm.interpolate(x0, eps, torch.zeros(2)), x0)
    assert torch.allclose(fm.interpolate(x0, eps, torch.ones(2)), eps)
    # the target is d x_t / d sigma
    s, h = torch.full((2,), 0.3), 1e-3
    fd = (fm.interpolate(x0, eps, s + h) - fm.interpolate(x0, eps, s)) / h
    assert torch.allclose(fd, fm.target(x0, eps), atol=1e-3)


def test_sample_prediction_turns_x0_into_the_velocity_and_clips_sigma():
    x0, eps = torch.randn(4, 3, 4, 4), torch.randn(4, 3, 4, 4)
    fm = FlowMatching(prediction="sample", min_sigma=0.05)
    sigma = torch.tensor([0.9, 0.5, 0.1, 0.01])
    x_t = fm.interpolate(x0, eps, sigma)
    v = fm.velocity(x0, x_t, sigma)
    # a perfect x̂_0 implies the true velocity wherever σ ≥ min_sigma ...
    assert torch.allclose(v[:3], fm.target(x0, eps)[:3], atol=1e-5)
    # ... and below it divides by min_sigma, not by σ
    assert torch.allclose(v[3], (x_t[3] - x0[3]) / 0.05, atol=1e-5)
    # velocity prediction passes the output through
    out = torch.randn_like(x0)
    assert FlowMatching().velocity(out, x_t, sigma) is out


def test_sample_prediction_lands_on_the_predicted_image():
    # an x-predicting denoiser that always answers x0: the sampler lands on x0, up to the noise of the
    # scheduler's last σ (1/1000, below min_sigma, where the clipped division moves 2 % of the way)
    x0 = torch.full((2, 1, 3, 3), 0.7)
    fm = FlowMatching(prediction="sample")
    out = FlowSampler(steps=8, guidance_scale=1.0)(lambda x, c, t: fm.velocity(x0, x, t), torch.zeros(2, 1, 1), None, (2, 1, 3, 3),
                                                   generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, x0, atol=5e-3)  # from std-1 noise


def test_uniform_and_logit_normal_ranges():
    g = torch.Generator().manual_seed(0)
    u = FlowMatching("uniform").sample_sigmas(20000, g)
    assert 0 <= u.min() and u.max() <= 1 and abs(float(u.mean()) - 0.5) < 0.01
    ln = FlowMatching("logit_normal", logit_mean=0.0, logit_std=1.0).sample_sigmas(20000, g)
    assert abs(float(ln.median()) - 0.5) < 0.02 and float(ln.std()) < float(u.std())
    shifted = FlowMatching("logit_normal", shift=3.0).sample_sigmas(20000, torch.Generator().manual_seed(0))
    base = FlowMatching("logit_normal").sample_sigmas(20000, torch.Generator().manual_seed(0))
    assert torch.allclose(shifted, 3 * base / (1 + 2 * base), atol=1e-6)
    assert float(shifted.mean()) > float(base.mean())


def test_condition_dropout_rate():
    drop = ConditionDropout(p=0.1).sample(50000, torch.Generator().manual_seed(0))
    assert abs(float(drop.float().mean()) - 0.1) < 0.005
    assert not ConditionDropout(p=0.0).sample(1000).any()


def test_bad_dropout_config():
    with pytest.raises(ConfigError, match="cond_dropout.p"):
        ConditionDropout(p=1.5)


def test_bad_timestep_sampling():
    with pytest.raises(ConfigError, match="model.flow.timestep_sampling='cosine'"):
        FlowMatching("cosine")


@pytest.mark.parametrize("kwargs,msg", [({"prediction": "epsilon"}, "model.flow.prediction='epsilon'"), ({"min_sigma": 0.0}, "model.flow.min_sigma=0.0")])
def test_bad_prediction_config(kwargs, msg):
    with pytest.raises(ConfigError, match=msg):
        FlowMatching(**kwargs)


def test_sampler_batches_cfg_in_one_forward_per_step():
    calls = []

    def denoise(x, c, t):
        calls.append((x.shape[0], c.shape[0], t.shape[0]))
        return x * 0 + c.mean(dim=(1, 2)).view(-1, 1, 1, 1)

    cond, null = torch.ones(3, 2, 4), torch.zeros(1, 2, 4)
    FlowSampler(steps=5, guidance_scale=4.0)(denoise, cond, null, (3, 1, 2, 2), generator=torch.Generator().manual_seed(0))
    assert calls == [(6, 6, 6)] * 5
    calls.clear()
    FlowSampler(steps=5, guidance_scale=1.0)(denoise, cond, null, (3, 1, 2, 2))
    assert calls == [(3, 3, 3)] * 5


def test_sampler_integrates_a_known_flow_exactly():
    # If the true data point is x0 (a constant), the velocity field is (x_t - x0)/sigma; Euler along the
    # scheduler's sigmas then lands exactly on x0.
    x0 = torch.tensor(2.0)

    def denoise(x, c, t):
        sigma = t[0]  # the sampler hands the denoiser σ_t itself
        return (x - x0) / sigma

    out = FlowSampler(steps=10, guidance_scale=1.0)(denoise, torch.zeros(2, 1, 1), None, (2, 1, 3, 3), generator=torch.Generator().manual_seed(1))
    assert torch.allclose(out, torch.full_like(out, 2.0), atol=1e-4)


def test_sampler_is_deterministic_per_seed():
    def denoise(x, c, t):
        return 0.1 * x

    s = FlowSampler(steps=4, guidance_scale=1.0)
    a = s(denoise, torch.zeros(2, 1, 1), None, (2, 3, 4, 4), generator=torch.Generator().manual_seed(7))
    b = s(denoise, torch.zeros(2, 1, 1), None, (2, 3, 4, 4), generator=torch.Generator().manual_seed(7))
    c = s(denoise, torch.zeros(2, 1, 1), None, (2, 3, 4, 4), generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
