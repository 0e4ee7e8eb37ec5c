"""Sampling with diffusers' ``FlowMatchEulerDiscreteScheduler`` and classifier-free guidance.

One diffusion pass per image (the released code runs one per scale and keeps the last). Guidance runs the
conditional and unconditional branches as ONE batched DiT forward per step::

    v_u, v_c = DiT([x, x], σ_t, [c_null, c]).chunk(2)
    v = v_u + w·(v_c − v_u)
    x ← scheduler.step(v, t, x)

With an image condition (editing with image guidance, InstructPix2Pix-style, for models trained with the
instruction dropped), three branches run as one forward: null, image-only and image + instruction::

    v = v_u + w_I·(v_I − v_u) + w·(v_c − v_I)

A fresh scheduler is made per call (schedulers carry a step index), so samplers share no state.
"""

from __future__ import annotations

from typing import Callable

import torch

from mingexp.errors import ConfigError

DenoiseFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, cond, σ) → velocity


class FlowSampler:
    """Euler flow-matching sampler.

    Args:
        steps: number of denoising steps.
        guidance_scale: w; 1 disables guidance (and the unconditional branch).
        shift: the scheduler's timestep shift (SANA uses 3 at 512 px with its DPM solver; 1 = none).
    """

    def __init__(self, steps: int = 30, guidance_scale: float = 5.0, shift: float = 1.0, num_train_timesteps: int = 1000) -> None:
        if steps < 1:
            raise ConfigError(f"model.sampler.steps={steps}: must be ≥ 1.")
        self.steps, self.guidance_scale, self.shift = int(steps), float(guidance_scale), float(shift)
        self.num_train_timesteps = int(num_train_timesteps)

    def scheduler(self):
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=self.num_train_timesteps, shift=self.shift)

    @torch.no_grad()
    def __call__(
        self,
        denoise: DenoiseFn,
        cond: torch.Tensor,
        null_cond: torch.Tensor | None,
        latent_shape: tuple[int, ...],
        generator: torch.Generator | list[torch.Generator] | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        image_cond: torch.Tensor | None = None,
        image_guidance_scale: float | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Denoise from pure noise.

        Args:
            denoise: ``denoise(x_t, cond, sigma) -> velocity`` with x_t (N, C, h, w), cond (N, T, C_cap),
                sigma (N,) the noise level in [0, 1] (the scheduler's σ_t; its timestep is σ_t·1000).
            cond: (B, T, C_cap) conditions; null_cond: (B, T, C_cap) or (1, T, C_cap) null conditions.
            latent_shape: (B, C, h, w).
            generator: one generator, or one per image (per-image seeds give batch-independent samples).
            image_cond / image_guidance_scale: (B, T, C_cap) the condition without the instruction, and w_I
                (three-branch guidance; both or neither).
            progress: called as ``progress(k, steps)`` after step k (a progress bar).
        """
        steps = self.steps if steps is None else int(steps)
        w = self.guidance_scale if guidance_scale is None else float(guidance_scale)
        if isinstance(generator, (list, tuple)):
            x = torch.cat([torch.randn((1, *latent_shape[1:]), generator=g) for g in generator])
        else:
            x = torch.randn(latent_shape, generator=generator)
        x = x.to(device=cond.device, dtype=cond.dtype)
        three = image_cond is not None and image_guidance_scale is not None and null_cond is not None
        guided = (w != 1.0 and null_cond is not None) and not three
        if three:
            c_in = torch.cat([null_cond.expand_as(cond), image_cond, cond])
            w_i = float(image_guidance_scale)
        elif guided:
            c_in = torch.cat([null_cond.expand_as(cond), cond])
        sched = self.scheduler()
        sched.set_timesteps(steps, device=cond.device)
        for k, (t, sigma) in enumerate(zip(sched.timesteps, sched.sigmas), start=1):  # sigmas has one more entry (the final 0)
            if three:
                v_u, v_i, v_c = denoise(torch.cat([x, x, x]), c_in, sigma.expand(3 * x.shape[0])).chunk(3)
                v = v_u + w_i * (v_i - v_u) + w * (v_c - v_i)
            elif guided:
                v_u, v_c = denoise(torch.cat([x, x]), c_in, sigma.expand(2 * x.shape[0])).chunk(2)
                v = v_u + w * (v_c - v_u)
            else:
                v = denoise(x, cond, sigma.expand(x.shape[0]))
            x = sched.step(v, t, x).prev_sample
            if progress is not None:
                progress(k, steps)
        return x
