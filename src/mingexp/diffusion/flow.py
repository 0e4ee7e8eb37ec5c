"""Rectified flow (SD3 / MetaQueries convention), as Ming-Lite-Uni trains its DiT.

    x_t = (1 − σ)·x_0 + σ·ε,      ε ~ N(0, I),  σ ∈ [0, 1]
    v_θ(x_t, σ, c) ≈ ε − x_0       (the velocity dx_t/dσ)
    L_flow = E ‖v_θ − (ε − x_0)‖²

σ is drawn ``uniform`` (MetaQueries) or ``logit_normal`` (σ = sigmoid(n), n ~ N(mean, std); SD3), then
optionally shifted, σ' = shift·σ / (1 + (shift − 1)·σ) (shift > 1 spends more steps at high noise, as
SANA's samplers do). Everything here works in σ; how a denoiser reads it (σ·1000 for SANA and SD3, σ for
FLUX) is the denoiser's own convention (``mingexp.models.denoisers``).

``prediction`` is what the network outputs: ``velocity`` (SD3, SANA, MetaQueries) or ``sample``, the clean
image x̂_0 (x-prediction, Li & He 2025, "Back to Basics: Let Denoising Generative Models Denoise"), turned
into the velocity it implies before the loss and the sampler see it::

    v̂ = (x_t − x̂_0) / max(σ, σ_min)

so the loss stays the velocity loss above (‖x̂_0 − x_0‖² / σ², weighted towards low noise) and the sampler
is unchanged. A network that outputs images only has to produce points near the data (flat canvases,
solid shapes), not reproduce the noise it was given: for pixel-space models whose patches are large
against their width this is the difference between speckled and clean samples.

Condition dropout for classifier-free guidance drops a row's whole condition with probability p; the
null condition is ``empty_prompt`` (the MLLM run on an empty prompt, MetaQueries) or ``zeros`` (an
all-zeros condition, the released Ming code).
"""

from __future__ import annotations

import torch

from mingexp.errors import ConfigError

TIMESTEP_SAMPLINGS = ("uniform", "logit_normal")
PREDICTIONS = ("velocity", "sample")


class FlowMatching:
    """Interpolation, velocity target and timestep sampling of rectified flow."""

    def __init__(
        self,
        timestep_sampling: str = "logit_normal",
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
        shift: float = 1.0,
        prediction: str = "velocity",
        min_sigma: float = 0.05,
    ) -> None:
        if prediction not in PREDICTIONS:
            raise ConfigError(f"model.flow.prediction={prediction!r}: use one of {PREDICTIONS}.")
        if not 0 < min_sigma < 1:
            raise ConfigError(f"model.flow.min_sigma={min_sigma}: must be in (0, 1).")
        if timestep_sampling not in TIMESTEP_SAMPLINGS:
            raise ConfigError(f"model.flow.timestep_sampling={timestep_sampling!r}: use one of {TIMESTEP_SAMPLINGS}.")
        if shift <= 0:
            raise ConfigError(f"model.flow.shift={shift}: must be positive (1 = no shift).")
        if logit_std <= 0:
            raise ConfigError(f"model.flow.logit_std={logit_std}: must be positive.")
        self.timestep_sampling = timestep_sampling
        self.logit_mean, self.logit_std, self.shift = float(logit_mean), float(logit_std), float(shift)
        self.prediction, self.min_sigma = prediction, float(min_sigma)

    def sample_sigmas(self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
        """(n,) noise levels σ in (0, 1)."""
        if self.timestep_sampling == "uniform":
            sigma = torch.rand(n, generator=generator)
        else:
            sigma = torch.sigmoid(torch.randn(n, generator=generator) * self.logit_std + self.logit_mean)
        sigma = self.shift * sigma / (1 + (self.shift - 1) * sigma)
        return sigma.to(device)

    @staticmethod
    def interpolate(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x_t = (1 − σ)·x_0 + σ·ε with σ broadcast over (B, C, H, W)."""
        s = sigma.view(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)
        return (1 - s) * x0 + s * noise

    @staticmethod
    def target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The velocity ε − x_0."""
        return noise - x0

    def velocity(self, output: torch.Tensor, x_t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The velocity the network's output stands for, (B, C, H, W), at noise levels σ (B,)."""
        if self.prediction == "velocity":
            return output
        # x-prediction: v̂ = (x_t − x̂_0) / σ; σ clipped so the last, near-clean steps do not divide by ~0
        sigma = sigma.float().clamp(min=self.min_sigma)
        return (x_t - output) / sigma.view(-1, *([1] * (x_t.ndim - 1))).to(x_t.dtype)

    @staticmethod
    def loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean squared error over every element, computed in fp32."""
        return torch.nn.functional.mse_loss(prediction.float(), target.float())


class EmptyPromptNull:
    """The null condition is the model's condition for an empty prompt (MetaQueries): the MLLM on "", through the
    connector."""

    def tokens(self, model, like: torch.Tensor) -> torch.Tensor:
        empty = model.mllm.processor([""]).to(like.device)
        # one constant row: it must not move the connector's running input statistics
        return model.encode(empty, update_statistics=False).tokens


class ZerosNull:
    """The null condition is all zeros at the condition width (the released code's ``encoder_hidden_states * 0``)."""

    def tokens(self, model, like: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(like[:1])


class ConditionDropout:
    """Which rows of a batch train the unconditional branch of classifier-free guidance, and what they see instead
    (``null_condition``: :class:`EmptyPromptNull` | :class:`ZerosNull`, ``model/cond_dropout/null_condition=empty_prompt|zeros``)."""

    def __init__(self, p: float = 0.1, null_condition: EmptyPromptNull | ZerosNull | None = None) -> None:
        if not 0 <= p < 1:
            raise ConfigError(f"model.cond_dropout.p={p}: must be in [0, 1).")
        self.p, self.null_condition = float(p), null_condition or EmptyPromptNull()

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n,) bool, True where the condition is dropped."""
        if self.p == 0:
            return torch.zeros(n, dtype=torch.bool)
        return torch.rand(n, generator=generator) < self.p
