"""Flow-GRPO on the unified model (Liu et al. 2025, "Flow-GRPO: Training Flow Matching Models via Online RL").

Beside the flow-matching module (:class:`~mingexp.lit.module.UnifiedLitModule`, whose optimizer groups, schedule,
EMA, NaN guard, checkpoint format and sampling weights it inherits) this module post-trains the same model with a
verifiable reward. One training step, for a batch of P prompts (:class:`~mingexp.rl.data.PromptBatch`):

1. **Rollout.** G images per prompt from the SDE policy (:mod:`mingexp.rl.rollout`): the sampler's guided velocity made
   a Gaussian step with an exact log-probability (:mod:`mingexp.diffusion.sde`), on ``steps`` denoising steps (fewer
   than inference: the denoising reduction), CFG as at inference. Noise from (seed, step, rank, image): exact resume.
2. **Reward.** ``reward(images, prompts, metadata)`` → scores in [0, 1] (:mod:`mingexp.rl.rewards`); a group with a
   NaN, an out-of-range score or a wrong count is skipped and counted, and more than ``reward_tolerance`` such groups
   in a row stop the run naming the reward and the problem.
3. **Advantages** within each group: A_i = (r_i − mean_g) / (std_g + 1e-4), clipped to ±``adv_clip_max``; a group of
   equal rewards has A = 0 and gives no gradient (its share is logged as ``grpo/zero_advantage_groups``).
4. **Objective** over the subsampled denoising steps j (``timestep_fraction`` of them, drawn per step), with
   ρ = exp(log π_θ(x_{j+1} | x_j) − log π_old):

       L = mean_j mean_i [ max(−A_i·ρ, −A_i·clip(ρ, 1 − ε, 1 + ε)) + β·KL(π_θ ‖ π_ref)_j ]

   π_ref is the policy at the start of post-training (a frozen copy of the trainable weights, captured at fit start
   after ``init_from`` and kept in the checkpoint; with LoRA the adapters' start, i.e. the base model). One optimizer
   step per rollout, so π_old = π_θ at the step and ρ = 1 up to float rounding (the clip fraction is logged and stays 0);
   the clipped form is kept for the same objective under gradient accumulation across rollouts.

The J trained steps' graphs are held until one backward pass per rollout: memory grows with J, so a large model
lowers ``timestep_fraction`` (or trains LoRA). What trains is what supervised training trains (``model.queries.trainable``, the connector, the DiT, or ``model.lora``);
the MLLM and the VAE stay frozen. The alignment head is not used here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from mingexp.diffusion.sde import step_kl
from mingexp.errors import ConfigError, TrainingDiverged
from mingexp.lit.ema import swapped_weights
from mingexp.lit.module import UnifiedLitModule
from mingexp.models.unified import UnifiedModel
from mingexp.rl.data import PromptBatch
from mingexp.rl.rewards.base import check_scores
from mingexp.rl.rollout import condition, policy_step, rollout


NOISE, TIMESTEPS = 1, 2  # the two random streams of a step (rollout noise, trained denoising steps)


class RewardFailed(TrainingDiverged):
    """Too many reward groups in a row were unusable (NaN, outside [0, 1], wrong count)."""


def _key(name: str) -> str:
    return name.replace(".", "__")


class ReferencePolicy(nn.Module):
    """π_ref: the trainable parameters' values when post-training started, as buffers (``reference.<name>`` in the
    checkpoint, so a resumed run keeps its reference). ``captured`` is false until :meth:`capture`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        for name in self.names:
            self.register_buffer(_key(name), torch.zeros_like(params[name], requires_grad=False))
        self.register_buffer("captured", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def capture(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        for name in self.names:
            getattr(self, _key(name)).copy_(params[name].detach())
        self.captured.fill_(True)

    def swapped(self, model: nn.Module):
        """Context manager: the model computes with the reference weights inside the block, its own after."""
        params = dict(model.named_parameters())
        return swapped_weights([params[n] for n in self.names], [getattr(self, _key(n)) for n in self.names])


class GRPOLitModule(UnifiedLitModule):
    """Args (besides :class:`UnifiedLitModule`'s):
        reward: a reward (:mod:`mingexp.rl.rewards`), ``module.reward._target_``.
        group_size: G images per prompt.
        steps: denoising steps of the training sampler (inference keeps ``model.sampler.steps``).
        guidance_scale: CFG of the rollouts (None: ``model.sampler.guidance_scale``, as at inference).
        noise_level: a in the SDE's s_σ = a·√(σ / (1 − σ)) (Flow-GRPO: 0.7).
        clip_range: ε of the clipped ratio. adv_clip_max: |A| bound. beta: the KL weight (0: no reference kept).
        timestep_fraction: the share of the ``steps`` denoising steps trained on per rollout (at least one).
        reward_tolerance: unusable reward groups in a row before the run stops.
        allow_eval_prompts: the prompt source may give evaluation prompts (``grpo.allow_eval_prompts``; said in the
            report and the run's tags).
        report_dir: where ``grpo.json`` (the prompt source's contamination counts, the settings) is written.
    """

    def __init__(self, model: UnifiedModel, optimizer: Callable[..., torch.optim.Optimizer], lr: Mapping[str, float], reward: Any,
                 group_size: int = 8, steps: int = 10, guidance_scale: float | None = None, noise_level: float = 0.7,
                 clip_range: float = 1e-4, adv_clip_max: float = 5.0, beta: float = 0.04, timestep_fraction: float = 1.0,
                 reward_tolerance: int = 20, allow_eval_prompts: bool = False, report_dir: str | None = None, **kwargs) -> None:
        super().__init__(model, optimizer, lr, **kwargs)
        for key, value, ok in (("group_size", group_size, group_size >= 2), ("steps", steps, steps >= 1),
                               ("noise_level", noise_level, noise_level > 0), ("clip_range", clip_range, clip_range > 0),
                               ("beta", beta, beta >= 0), ("timestep_fraction", timestep_fraction, 0 < timestep_fraction <= 1),
                               ("adv_clip_max", adv_clip_max, adv_clip_max > 0)):
            if not ok:
                raise ConfigError(f"module.{key}={value} is out of range (group_size ≥ 2, steps ≥ 1, noise_level > 0, clip_range > 0, "
                                  "beta ≥ 0, 0 < timestep_fraction ≤ 1, adv_clip_max > 0).")
        self.reward = reward
        self.group_size, self.steps, self.noise_level = int(group_size), int(steps), float(noise_level)
        self.guidance_scale = float(model.sampler.guidance_scale if guidance_scale is None else guidance_scale)
        self.clip_range, self.adv_clip_max, self.beta = float(clip_range), float(adv_clip_max), float(beta)
        self.timestep_fraction = float(timestep_fraction)
        self.reward_tolerance, self.allow_eval_prompts = int(reward_tolerance), bool(allow_eval_prompts)
        self.report_dir = Path(report_dir) if report_dir else None
        self.bad_groups_total = 0
        self.bad_group_streak = 0
        self.reference = ReferencePolicy(model) if self.beta > 0 else None
        if hasattr(reward, "bind"):
            reward.bind(model)

    def memory_estimate(self, batch_size: int) -> str:
        """As supervised training at the rollout's size: ``batch_size`` prompts × G images (× 2 rows under CFG)."""
        return super().memory_estimate(batch_size * self.group_size * (2 if self.guidance_scale != 1.0 else 1))

    # ------------------------------------------------------------------ start
    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.reference is not None and not bool(self.reference.captured):
            self.reference.capture(self.model)  # after init_from; a resumed run restored its own reference
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        source = getattr(datamodule, "source", None)
        if source is None:
            return
        report = source.contamination(int(getattr(datamodule, "seed", 0)))
        hit = int(report["contaminated_captions"])
        if hit and not self.allow_eval_prompts:
            raise ConfigError(f"the training prompts hold {hit} evaluation prompts ({report['prompts_hit']} distinct): refused. Give the "
                              "prompt source other prompts, or set grpo.allow_eval_prompts=true (written into the run's tags and report).")
        counts = {"grpo/contamination/exact": float(report["exact"]["captions"]),
                  "grpo/contamination/normalised": float(report["normalised"]["captions"]),
                  "grpo/contamination/prompts_hit": float(report["prompts_hit"]),
                  "grpo/contamination/checked": float(report["captions"])}
        for logger in self.loggers:
            logger.log_metrics(counts, step=self.global_step)
        print(f"[mingexp] training prompts: {report['captions']} checked against {report['geneval_prompts']} evaluation prompts, "
              f"{hit} match ({'allowed: grpo.allow_eval_prompts=true' if self.allow_eval_prompts else 'none allowed'})", flush=True)
        if self.report_dir is not None and self.trainer.is_global_zero:
            from mingexp.io.records import write_json

            write_json(self.report_dir / "grpo.json", {
                "allow_eval_prompts": self.allow_eval_prompts, "eval_metadata": source.eval_metadata,
                "contamination": {k: v for k, v in report.items() if k not in ("exact", "normalised")} | {
                    "exact": report["exact"]["captions"], "normalised": report["normalised"]["captions"]},
                "settings": {"group_size": self.group_size, "steps": self.steps, "guidance_scale": self.guidance_scale,
                             "noise_level": self.noise_level, "clip_range": self.clip_range, "beta": self.beta,
                             "timestep_fraction": self.timestep_fraction, "reward": type(self.reward).__name__}})

    # ------------------------------------------------------------------ the step
    def _generators(self, n: int, salt: int) -> list[torch.Generator]:
        # ints only: Python's hash of an int tuple is the same in every process (a str's is salted per process)
        base = (self.seed, self.global_step, self.global_rank, salt)
        return [torch.Generator().manual_seed(hash((*base, i)) & (2**63 - 1)) for i in range(n)]

    def _advantages(self, rewards: torch.Tensor, ok: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(A (N,), kept (N,) bool, zero-advantage groups) from rewards grouped G at a time; a group with a bad row is dropped."""
        g = self.group_size
        r, good = rewards.view(-1, g), ok.view(-1, g).all(1)
        mean, std = r.mean(1, keepdim=True), r.std(1, unbiased=False, keepdim=True)
        adv = ((r - mean) / (std + 1e-4)).clamp(-self.adv_clip_max, self.adv_clip_max)
        adv = torch.where(good.view(-1, 1), adv, torch.zeros_like(adv))
        zero = int(((std.view(-1) == 0) & good).sum())
        return adv.flatten(), good.repeat_interleave(g), zero

    def _check_rewards(self, ok: torch.Tensor, problem: str | None) -> int:
        """Counts the groups with an unusable score (in total and in a row, across steps); too many in a row stop the run."""
        bad_groups = ~ok.view(-1, self.group_size).all(1)
        for bad in bad_groups.tolist():
            self.bad_group_streak = self.bad_group_streak + 1 if bad else 0
        self.bad_groups_total += int(bad_groups.sum())
        if self.bad_group_streak > self.reward_tolerance:
            raise RewardFailed(f"stopped at step {self.global_step}: {self.bad_group_streak} reward groups in a row were unusable "
                               f"(module.reward_tolerance={self.reward_tolerance}); last problem: {problem}. Fix the reward "
                               f"({type(self.reward).__name__}) so it returns one score in [0, 1] per image.")
        return int(bad_groups.sum())

    def training_step(self, batch: PromptBatch, batch_idx: int):
        started = time.perf_counter()
        model, g = self.model, self.group_size
        prompts = [m["prompt"] for m in batch.prompts for _ in range(g)]
        metadata = [m for m in batch.prompts for _ in range(g)]
        inputs = model.mllm.processor([m["prompt"] for m in batch.prompts]).to(model.device)  # once per prompt, not per image
        size = model.default_size()
        # 1. rollout (the current weights, no gradients)
        roll = rollout(model, inputs, self._generators(len(prompts), NOISE), self.steps, self.guidance_scale, self.noise_level, size, size)
        # 2. reward, checked
        scores = self.reward(roll.images, prompts, metadata)
        rewards, ok, problem = check_scores(scores, len(prompts), f"reward {type(self.reward).__name__}")
        bad = self._check_rewards(ok, problem)
        if problem is not None:
            print(f"[mingexp] step {self.global_step}: {problem}; {bad} group(s) skipped", flush=True)
        # 3. advantages within each group
        adv, kept, zero_groups = self._advantages(rewards, ok)
        adv, kept = adv.to(model.device), kept.to(model.device)
        # 4. the denoising steps trained on this rollout
        T = roll.log_probs.shape[1]
        J = max(1, round(self.timestep_fraction * T))
        order = torch.randperm(T, generator=self._generators(1, TIMESTEPS)[0])[:J].sort().values.tolist()
        latents, old = roll.latents.to(model.device), roll.log_probs.to(model.device)
        sig = roll.sigmas
        # 4a. the reference policy's means (no gradients)
        ref_means = {}
        if self.reference is not None:
            with self.reference.swapped(model), torch.no_grad():
                tokens_ref, null_ref = condition(model, inputs, self.guidance_scale, repeat=g)
                for j in order:
                    ref_means[j] = policy_step(model, latents[:, j], tokens_ref, null_ref, sig[j], sig[j + 1], roll.sigma_max,
                                               self.guidance_scale, self.noise_level, sample=latents[:, j + 1]).mean
        # 4b. the clipped objective with gradients
        tokens, null = condition(model, inputs, self.guidance_scale, repeat=g)
        w = kept.float() / kept.float().sum().clamp_min(1)
        policy_terms, kl_terms, clipped, ratios = [], [], [], []
        for j in order:
            step = policy_step(model, latents[:, j], tokens, null, sig[j], sig[j + 1], roll.sigma_max, self.guidance_scale,
                               self.noise_level, sample=latents[:, j + 1])
            ratio = torch.exp(step.log_prob - old[:, j])
            unclipped = -adv * ratio
            clip = -adv * ratio.clamp(1 - self.clip_range, 1 + self.clip_range)
            policy_terms.append((torch.maximum(unclipped, clip) * w).sum())
            if self.reference is not None:
                kl_terms.append((step_kl(step.mean, ref_means[j], step.std) * w).sum())
            clipped.append(((ratio - 1).abs() > self.clip_range).float()[kept].mean() if bool(kept.any()) else ratio.new_zeros(()))
            ratios.append(ratio.detach()[kept].mean() if bool(kept.any()) else ratio.new_ones(()))
        policy_loss = torch.stack(policy_terms).mean()
        kl = torch.stack(kl_terms).mean() if kl_terms else policy_loss.new_zeros(())
        loss = policy_loss + self.beta * kl
        # 5. logs: reward (mean, spread, components), KL, zero-advantage groups, skipped groups, ratio, throughput
        n, groups = len(prompts), len(batch)
        log = {"train/reward": rewards[ok].mean() if bool(ok.any()) else torch.tensor(float("nan")),
               "train/reward_std": rewards[ok].std(unbiased=False) if bool(ok.any()) else torch.tensor(float("nan")),
               "train/reward_group_std": rewards.view(-1, g).std(1, unbiased=False).mean(),
               "grpo/kl": kl.detach(), "grpo/policy_loss": policy_loss.detach(),
               "grpo/zero_advantage_groups": torch.tensor(zero_groups / groups), "grpo/skipped_groups": torch.tensor(float(self.bad_groups_total)),
               "grpo/clip_fraction": torch.stack(clipped).mean(), "grpo/ratio": torch.stack(ratios).mean(),
               "grpo/images_per_s": torch.tensor(n / max(time.perf_counter() - started, 1e-9))}
        if isinstance(getattr(scores, "components", None), dict):
            for name, value in scores.components.items():
                value = torch.as_tensor(value).float().flatten()
                if value.numel() == n:
                    log[f"reward/{name}"] = value[ok].mean() if bool(ok.any()) else torch.tensor(float("nan"))
        for key, value in log.items():
            self.log(key, value.float(), on_step=True, on_epoch=False, prog_bar=key in ("train/reward", "grpo/kl"), batch_size=groups)
        self.log("train/reward_epoch", log["train/reward"].float(), on_step=False, on_epoch=True, batch_size=groups)
        self._grad_norm = float("nan")
        if not torch.isfinite(loss) or not bool(kept.any()):
            # nothing to learn from (every group skipped) or a non-finite loss: no update, counted as the NaN guard does
            if not torch.isfinite(loss):
                self.nonfinite_total += 1
                self.nonfinite_streak += 1
                if self.nonfinite_streak > self.nan_tolerance:
                    raise TrainingDiverged(f"stopped at step {self.global_step}: {self.nonfinite_streak} non-finite GRPO losses in a row.")
            return None
        self.nonfinite_streak = 0
        self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False, batch_size=groups)
        self.loss_mean.update(loss.detach(), groups)
        self.log("train/loss_epoch", self.loss_mean, on_step=False, on_epoch=True)
        return loss

    # ----------------------------------------------------------------- checkpoint
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["mingexp"].update({"grpo_bad_groups_total": self.bad_groups_total})

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self.bad_groups_total = int(checkpoint.get("mingexp", {}).get("grpo_bad_groups_total", 0))
