"""Exponential moving average of the trainable weights (used for evaluation, sampling and export).

    θ_ema ← decay · θ_ema + (1 − decay) · θ        after every optimizer step from ``start_step`` on

Only the trainable parameters are averaged (the frozen MLLM and VAE never change). The shadow weights
are fp32, live on the parameters' device, and are saved in the checkpoint (``state_dict``).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


@contextmanager
def swapped_weights(params: list[nn.Parameter], values: list[torch.Tensor]) -> Iterator[None]:
    """Temporarily load ``values`` into ``params`` (copied in, each in its parameter's dtype), the originals back after:
    the EMA's weights for sampling, the GRPO reference policy's for its KL."""
    backup = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, v in zip(params, values):
            p.copy_(v.to(p.dtype))
    try:
        yield
    finally:
        with torch.no_grad():
            for p, b in zip(params, backup):
                p.copy_(b)


class EMA:
    """EMA of a fixed list of named parameters."""

    def __init__(self, named_params: list[tuple[str, nn.Parameter]], decay: float = 0.999, start_step: int = 0) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"module.ema.decay={decay}: must be in (0, 1)")
        self.names = [n for n, _ in named_params]
        self.params = [p for _, p in named_params]
        self.decay, self.start_step = float(decay), int(start_step)
        # Shadow copies, detached: they are never part of the autograd graph.
        self.shadow = [p.detach().float().clone() for p in self.params]

    @torch.no_grad()
    def update(self, step: int) -> None:
        if step < self.start_step:
            for s, p in zip(self.shadow, self.params):
                s.copy_(p.detach())
            return
        current = [p.detach().float() for p in self.params]
        torch._foreach_lerp_(self.shadow, current, 1.0 - self.decay)

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """Temporarily load the EMA weights into the model (for sampling / evaluation)."""
        with swapped_weights(self.params, self.shadow):
            yield

    @torch.no_grad()
    def copy_to_model(self) -> None:
        """Load the EMA weights into the model for good (evaluation / export of a finished run)."""
        for p, s in zip(self.params, self.shadow):
            p.copy_(s.to(p.dtype))

    def to(self, device: torch.device) -> "EMA":
        self.shadow = [s.to(device) for s in self.shadow]
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: s for n, s in zip(self.names, self.shadow)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = [n for n in self.names if n not in state]
        if missing:
            raise KeyError(f"EMA state lacks {missing[:3]}{'…' if len(missing) > 3 else ''}: was the checkpoint made with another model config?")
        self.shadow = [state[n].to(s.device, torch.float32).clone() for n, s in zip(self.names, self.shadow)]
