"""The reward seam: what every reward computes and how a bad answer is caught.

A reward is called on one rollout's images, their prompts and the prompts' metadata (GenEval's schema for generated
prompts, or whatever the prompt source carries) and returns :class:`Scores`: one score in [0, 1] per image and its
named components (logged as ``reward/<name>``). A reward that needs the model being trained (the judge that is the
model's own frozen MLLM) implements ``bind(model)``, called once before the first rollout.

:func:`check_scores` is the one gate between a reward and the advantages: NaN, a value outside [0, 1] or the wrong
count marks the rows bad; the GRPO module skips their groups and counts them (``mingexp.lit.grpo``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Protocol, Sequence, runtime_checkable

import torch
from PIL import Image


@dataclass
class Scores:
    """``total`` (N,) float scores in [0, 1]; ``components`` {name: (N,)} the parts it was made of."""

    total: torch.Tensor
    components: dict[str, torch.Tensor] = field(default_factory=dict)


@runtime_checkable
class Reward(Protocol):
    def __call__(self, images: Sequence[Image.Image], prompts: Sequence[str], metadata: Sequence[Mapping]) -> Scores: ...


def check_scores(scores: object, n: int, name: str) -> tuple[torch.Tensor, torch.Tensor, str | None]:
    """``(total (n,), ok (n,) bool, problem)``: rows whose score is not a finite value in [0, 1] are not ok; a result
    that is not :class:`Scores` or has the wrong count makes every row bad and says why."""
    if not isinstance(scores, Scores) or not torch.is_tensor(scores.total):
        return torch.zeros(n), torch.zeros(n, dtype=torch.bool), f"{name} returned {type(scores).__name__}, not Scores"
    total = scores.total.detach().float().flatten().cpu()
    if total.numel() != n:
        return torch.zeros(n), torch.zeros(n, dtype=torch.bool), f"{name} returned {total.numel()} scores for {n} images"
    ok = torch.isfinite(total) & (total >= 0) & (total <= 1)
    problem = None if bool(ok.all()) else f"{name}: {int((~ok).sum())} of {n} scores NaN or outside [0, 1]"
    return torch.where(ok, total, torch.zeros_like(total)), ok, problem


class WeightedSum:
    """Σ_k w_k·r_k / Σ_k w_k over named rewards (``rewards: {name: reward}``, ``weights: {name: w}``, 1 when unset),
    so it stays in [0, 1]; each reward's total is a component ``<name>``, and its components ``<name>/<component>``."""

    def __init__(self, rewards: Mapping[str, Reward], weights: Mapping[str, float] | None = None) -> None:
        from mingexp.errors import ConfigError

        self.rewards = dict(rewards)
        if not self.rewards:
            raise ConfigError("grpo.reward.rewards is empty: name at least one reward.")
        self.weights = {k: float((weights or {}).get(k, 1.0)) for k in self.rewards}
        unknown = sorted(set(weights or {}) - set(self.rewards))
        if unknown or any(w < 0 for w in self.weights.values()) or sum(self.weights.values()) <= 0:
            raise ConfigError(f"grpo.reward.weights={dict(weights or {})}: weights must be ≥ 0, not all 0, and name only the rewards "
                              f"{sorted(self.rewards)} (unknown: {unknown}).")

    def bind(self, model) -> None:
        for reward in self.rewards.values():
            if hasattr(reward, "bind"):
                reward.bind(model)

    def __call__(self, images, prompts, metadata) -> Scores:
        total, components = torch.zeros(len(images)), {}
        for name, reward in self.rewards.items():
            part = reward(images, prompts, metadata)
            value, ok, problem = check_scores(part, len(images), f"reward {name}")
            if problem is not None:  # the sum is bad where a part is: NaN marks those rows for the gate
                value = torch.where(ok, value, torch.full_like(value, float("nan")))
            total = total + self.weights[name] * value
            components[name] = value
            components.update({f"{name}/{k}": v.detach().float().cpu() for k, v in part.components.items()} if isinstance(part, Scores) else {})
        return Scores(total / sum(self.weights.values()), components)
