"""Connector: the MLLM's query hidden states → the DiT's caption tokens.

A bidirectional (non-causal) transformer of the Qwen2 architecture between two projections, as in the
released Ming-Lite-Uni code and MetaQueries::

    H_q (B, N, d_mllm) --proj_in--> (B, N, H_c) --Qwen2 stack, no causal mask--> (B, N, H_c)
        --proj_out (Linear-GELU-Linear, or one Linear as released)--> (B, N, C_cap) --out_norm--> caption tokens

``C_cap`` is the denoiser's condition width (SANA's ``caption_channels``, SD3's ``joint_attention_dim``; read
from the loaded denoiser, never restated). The stack is built from
a Qwen2 config (``model.connector.config``) or initialised from a Qwen2 checkpoint (``model.connector.path``,
e.g. Qwen2.5-0.5B, whose causal-LM weights are then used bidirectionally; its token embedding table is
dropped because the connector is fed embeddings, never token ids).

``in_norm``: ``none`` (released) feeds the MLLM states as they are; ``standardize`` first maps each query
position's each feature to zero mean and unit variance over the prompts seen in training (running
statistics, updated without gradient, saved with the weights)::

    H̃_q = (H_q − μ) / sqrt(σ² + ε)        μ, σ²: (N, d_mllm), running means over training batches

A frozen MLLM's query states share a large prompt-independent part, and the part that names the prompt is a
small direction inside it (toy: 0.15–0.35 of the norm); standardised, every direction the prompts vary along
starts at unit scale, so the DiT's cross-attention learns from it at the rate it learns from a clean input
(experiments/toy_conditioning, fifth round).

``mode``: ``joint`` runs all scales as one sequence (tokens of different scales attend to each other);
``per_scale`` runs each scale on its own (the released code). ``dit_tokens``: ``all`` feeds every scale's
tokens to the DiT (Σ s² tokens, one diffusion pass); ``finest`` only the largest scale's (what the
released code keeps after running one pass per scale); a scale (e.g. ``8``) only that scale's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from mingexp.errors import ConfigError, checkpoint_dir
from mingexp.io.pretrained import load_pretrained
from mingexp.models.queries import QueryLayout

CONNECTOR_MODES = ("joint", "per_scale")
IN_NORMS = ("none", "standardize")
DIT_TOKENS = ("all", "finest")  # or one of the scales
OUT_NORMS = ("rms", "l2", "none")
PROJ_OUTS = ("mlp", "linear")


class NoInputNorm(nn.Module):
    """``in_norm: none``: the MLLM states as they are (the released connector)."""

    def forward(self, x: torch.Tensor, update: bool = True) -> torch.Tensor:
        return x


class L2Norm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(x, dim=-1)


class RunningStandardize(nn.Module):
    """(B, N, D) ↦ (x − μ) / sqrt(σ² + ε) per position and feature, μ / σ² running averages of training inputs.

    Unlike batch norm, training and sampling normalise with the same running statistics (a batch's own
    statistics would make a row's condition depend on the other rows); the first training batch sets them,
    later ones move them by ``momentum``. Buffers, not parameters: nothing here is trained. Only the batch's own
    conditions update them (``update``): the null condition a training step encodes for its dropped rows is
    one constant row, whose zero variance would pull σ² towards 0 at every step.
    """

    def __init__(self, positions: int, width: int, momentum: float = 0.01, eps: float = 1e-4) -> None:
        super().__init__()
        if not 0 < momentum <= 1:
            raise ConfigError(f"model.connector.in_norm_momentum={momentum}: must be in (0, 1].")
        self.momentum, self.eps = float(momentum), float(eps)
        self.register_buffer("mean", torch.zeros(positions, width))
        self.register_buffer("var", torch.ones(positions, width))
        self.register_buffer("batches", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor, update: bool = True) -> torch.Tensor:
        if self.training and update:
            with torch.no_grad():  # statistics of the (frozen) inputs: no gradient flows into them
                mean, var = x.float().mean(0), x.float().var(0, unbiased=False)
                rate = 1.0 if int(self.batches) == 0 else self.momentum
                self.mean.lerp_(mean, rate)
                self.var.lerp_(var, rate)
                self.batches += 1
        return ((x.float() - self.mean) * torch.rsqrt(self.var + self.eps)).to(x.dtype)


def _bidirectional(model: nn.Module) -> nn.Module:
    """Switch a Qwen2 stack to full (non-causal) attention.

    ``config.is_causal = False`` makes transformers build a bidirectional mask; each attention module's
    ``is_causal`` flag must be cleared too, or SDPA / flash-attention fall back to their causal kernels
    whenever the mask is elided (no padding).
    """
    model.config.is_causal = False
    for module in model.modules():
        if hasattr(module, "is_causal"):
            module.is_causal = False
    return model


class Connector(nn.Module):
    """Bidirectional Qwen2 connector with input/output projections.

    Args:
        in_width: MLLM hidden size d_mllm.
        out_width: DiT caption channels C_cap.
        transformer: a ``transformers.Qwen2Model`` (made bidirectional here).
        layout: the query layout (needed by ``per_scale`` mode and ``dit_tokens=finest``).
        mode / dit_tokens / out_norm: see module docstring.
    """

    def __init__(
        self,
        in_width: int,
        out_width: int,
        transformer: nn.Module,
        layout: QueryLayout,
        mode: str = "joint",
        dit_tokens: str = "all",
        out_norm: str = "rms",
        in_norm: str = "none",
        in_norm_momentum: float = 0.01,
        proj_out: str = "mlp",
    ) -> None:
        super().__init__()
        for key, value, allowed in (("mode", mode, CONNECTOR_MODES), ("dit_tokens", dit_tokens, DIT_TOKENS + layout.scales),
                                    ("out_norm", out_norm, OUT_NORMS), ("in_norm", in_norm, IN_NORMS), ("proj_out", proj_out, PROJ_OUTS)):
            if value not in allowed:
                raise ConfigError(f"model.connector.{key}={value!r}: use one of {allowed}.")
        self.mode, self.dit_tokens, self.layout = mode, dit_tokens, layout
        hidden = int(transformer.config.hidden_size)
        positions = sum(s * s for s in layout.scales)
        self.in_norm = RunningStandardize(positions, in_width, in_norm_momentum) if in_norm == "standardize" else NoInputNorm()
        self.proj_in = nn.Linear(in_width, hidden)
        self.transformer = _bidirectional(transformer)
        if proj_out == "mlp":
            self.proj_out = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, out_width))
        else:  # the released Linear(H_c → 3584)
            self.proj_out = nn.Linear(hidden, out_width)
        self.out_norm = {"rms": lambda: nn.RMSNorm(out_width, eps=1e-6), "l2": L2Norm, "none": nn.Identity}[out_norm]()
        self.in_width, self.out_width = int(in_width), int(out_width)

    # ----------------------------------------------------------------- building
    @classmethod
    def build(
        cls,
        in_width: int,
        out_width: int,
        layout: QueryLayout,
        path: str | Path | None = None,
        config: Mapping[str, Any] | None = None,
        mode: str = "joint",
        dit_tokens: str = "all",
        out_norm: str = "rms",
        in_norm: str = "none",
        in_norm_momentum: float = 0.01,
        proj_out: str = "mlp",
        gradient_checkpointing: bool = False,
        attn_implementation: str = "sdpa",
    ) -> "Connector":
        """Build from ``model.connector.config`` or load from ``model.connector.path`` (exactly one); the widths
        (``in_width``, ``out_width``) and ``layout`` are injected by ``build_model`` from the loaded parts."""
        from transformers import Qwen2Config, Qwen2Model

        if (path is None) == (config is None):
            raise ConfigError("give exactly one of model.connector.path (a Qwen2 checkpoint) or model.connector.config (a Qwen2 config dict).")
        if path is not None:
            folder = checkpoint_dir(path, "model.connector.path", "a Qwen2 checkpoint")
            # trainable: fp32 master weights whatever the checkpoint stores (a bf16 Qwen2.5-0.5B too); every tensor checked,
            # a causal LM's head left unused (mingexp.io.pretrained)
            transformer = load_pretrained(Qwen2Model.from_pretrained, folder, "model.connector", ignore=(r"^lm_head\.",),
                                          attn_implementation=attn_implementation, dtype=torch.float32)
        else:
            cfg = dict(config)
            cfg.setdefault("vocab_size", 1)  # the connector is fed embeddings; the table is dropped below
            transformer = Qwen2Model(Qwen2Config(**cfg, attn_implementation=attn_implementation))
        # Unused (inputs are embeddings): free it (136 M parameters for Qwen2.5-0.5B).
        transformer.embed_tokens = None
        if gradient_checkpointing:
            # transformers' current name (5.x renamed it; the old one warns and goes in v6)
            enable = getattr(transformer, "activation_checkpointing_enable", None)
            if enable is not None:
                enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                transformer.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return cls(in_width, out_width, transformer, layout, mode=mode, dit_tokens=dit_tokens, out_norm=out_norm, in_norm=in_norm,
                   in_norm_momentum=in_norm_momentum, proj_out=proj_out)

    @property
    def hidden_size(self) -> int:
        return int(self.transformer.config.hidden_size)

    @property
    def scales_out(self) -> tuple[int, ...]:
        """Scales whose tokens reach the DiT."""
        if self.dit_tokens == "all":
            return self.layout.scales
        return (max(self.layout.scales),) if self.dit_tokens == "finest" else (int(self.dit_tokens),)

    # ------------------------------------------------------------------ forward
    def _stack(self, x: torch.Tensor) -> torch.Tensor:
        return self.transformer(inputs_embeds=x, use_cache=False).last_hidden_state

    def forward(self, queries: torch.Tensor, update_statistics: bool = True) -> dict[int, torch.Tensor]:
        """Map query hidden states to caption tokens.

        Args:
            queries: (B, Σ s², d_mllm) MLLM hidden states of the query tokens (boundary tokens removed).
            update_statistics: in training, whether these rows move ``in_norm``'s running statistics (False for
                the null condition).

        Returns:
            per scale s, (B, s², C_cap) caption tokens (every scale, also those the DiT does not see:
            the alignment loss may use them).
        """
        # 1. (optionally standardise, then) project into the connector width
        x = self.proj_in(self.in_norm(queries, update=update_statistics))
        # 2. bidirectional transformer, jointly or scale by scale
        if self.mode == "joint":
            x = self._stack(x)
            chunks = self.layout.split(x)
        else:
            chunks = [self._stack(c) for c in self.layout.split(x)]
        # 3. project to the DiT's caption channels and normalise
        return {s: self.out_norm(self.proj_out(c)) for s, c in zip(self.layout.scales, chunks)}

    def dit_condition(self, per_scale: Mapping[int, torch.Tensor]) -> torch.Tensor:
        """The DiT's cross-attention tokens: (B, T, C_cap) with T = Σ s² (``all``) or s_max² (``finest``)."""
        return torch.cat([per_scale[s] for s in self.scales_out], dim=1)
