"""Sampling with diffusers' ``FlowMatchEulerDiscreteScheduler`` and classifier-free guidance.

One diffusion pass per image (the released code runs one per scale and keeps the last). Guidance runs the
conditional and unconditional branches as ONE batched DiT forward per step::

    v_u, v_c = DiT([x, x], σ_t, [c_null, c]).chunk(2)
    v = v_u + w·(v_c − v_u)
    x ← scheduler.step(v, t, x)

With an image condition (editing with image guidance, InstructPix2Pix-style, for models trained with the
instruction dropped), three branches run as one forward: null, image-only and image + instruction::

    v = v_u + w_I·(v_I − v_u) + w·(v_c − v_I)

A fresh scheduler is made per call (schedulers carry a step index), so samplers share no state. Its config
is the sampler's one state: built from ``shift`` / ``num_train_timesteps``, or read from a scheduler folder the
way upstream reads the release's (``FlowMatchEulerDiscreteScheduler.from_pretrained(<folder>/scheduler)``:
whatever that class takes from the file, its defaults for the rest), with ``shift`` / ``num_train_timesteps``
then overriding the folder's values (and saying so when they differ).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from mingexp.errors import ConfigError

DenoiseFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, cond, σ) → velocity


def guided_velocity(denoise: DenoiseFn, x: torch.Tensor, c_in: torch.Tensor, sigma: torch.Tensor, w: float) -> torch.Tensor:
    """Classifier-free guidance as ONE batched forward: ``c_in`` = [c_null; c] (2B, T, C_cap), σ a scalar tensor;
    v = v_u + w·(v_c − v_u)."""
    v_u, v_c = denoise(torch.cat([x, x]), c_in, sigma.expand(2 * x.shape[0])).chunk(2)
    return v_u + w * (v_c - v_u)


class FlowSampler:
    """Euler flow-matching sampler.

    Args:
        steps: number of denoising steps.
        guidance_scale: w; 1 disables guidance (and the unconditional branch).
        shift: the scheduler's timestep shift (1 = none); with ``scheduler`` an override of the folder's (None: the
            folder's; without a folder None is 1).
        num_train_timesteps: the scheduler's timestep range (None: the folder's, else 1000); the denoiser's
            timestep is σ · this (:meth:`~mingexp.models.denoisers.base.Denoiser.timestep`).
        scheduler: a diffusers scheduler folder (``scheduler_config.json``), read by
            ``FlowMatchEulerDiscreteScheduler.from_pretrained`` as upstream reads the release's.
    """

    def __init__(self, steps: int = 30, guidance_scale: float = 5.0, shift: float | None = None, num_train_timesteps: int | None = None,
                 scheduler: str | Path | None = None) -> None:
        from diffusers import FlowMatchEulerDiscreteScheduler

        if steps < 1:
            raise ConfigError(f"model.sampler.steps={steps}: must be ≥ 1.")
        self.steps, self.guidance_scale = int(steps), float(guidance_scale)
        base: dict[str, Any] = {}
        if scheduler is not None:
            folder = Path(str(scheduler))
            if not (folder / "scheduler_config.json").is_file():
                raise ConfigError(f"model.sampler.scheduler={scheduler}: no scheduler_config.json there; pass a diffusers scheduler folder "
                                  "(a release's or an export's scheduler/) or null.")
            base = dict(FlowMatchEulerDiscreteScheduler.from_pretrained(str(folder)).config)
        overrides = {k: v for k, v in (("shift", shift), ("num_train_timesteps", num_train_timesteps)) if v is not None}
        for key, value in overrides.items():
            if key in base and float(base[key]) != float(value):
                print(f"[mingexp] model.sampler.{key}={value} overrides {scheduler}'s {key}={base[key]} (set it to null to sample as "
                      "the folder says).", flush=True)
        self.config = FlowMatchEulerDiscreteScheduler.from_config({**base, **overrides}).config
        if self.config.get("use_dynamic_shifting"):
            raise ConfigError(f"model.sampler: the scheduler config ({scheduler or 'given'}) sets use_dynamic_shifting, which needs a "
                              "resolution-dependent mu that neither upstream's SANA pipeline nor mingexp passes; set it false "
                              "(and a fixed shift).")
        self.shift, self.num_train_timesteps = float(self.config["shift"]), int(self.config["num_train_timesteps"])

    def scheduler(self):
        """A fresh scheduler (schedulers carry a step index) of the sampler's config."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler.from_config(self.config)

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
                v = guided_velocity(denoise, x, c_in, sigma, w)
            else:
                v = denoise(x, cond, sigma.expand(x.shape[0]))
            x = sched.step(v, t, x).prev_sample
            if progress is not None:
                progress(k, steps)
        return x
