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

Every variant is a small class chosen by ``_target_`` (a config group under ``conf/model/connector/``), never a
string switch inside :class:`Connector`:

* ``in_norm`` (``model/connector/in_norm=none|standardize``): :class:`NoInputNorm` (released) feeds the MLLM
  states as they are; :class:`RunningStandardize` first maps each query position's each feature to zero mean and
  unit variance over the prompts seen in training (running statistics, updated without gradient, saved with the
  weights)::

    H̃_q = (H_q − μ) / sqrt(σ² + ε)        μ, σ²: (N, d_mllm), running means over training batches

A frozen MLLM's query states share a large prompt-independent part, and the part that names the prompt is a
small direction inside it (toy: 0.15–0.35 of the norm); standardised, every direction the prompts vary along
starts at unit scale, so the DiT's cross-attention learns from it at the rate it learns from a clean input
(experiments/toy_conditioning, fifth round).

* ``stack`` (``model/connector/stack=joint|per_scale``): :class:`JointStack` runs all scales as one sequence
  (tokens of different scales attend to each other); :class:`PerScaleStack` runs each scale on its own (released);
* ``tokens`` (``model/connector/tokens=all|finest|one``): :class:`AllScales` feeds every scale's tokens to the DiT
  (Σ s² tokens, one diffusion pass); :class:`FinestScale` only the largest scale's (what the released code keeps
  after running one pass per scale); :class:`OneScale` one given scale's (``model.connector.tokens.scale=8``);
* ``proj_out`` (``model/connector/proj_out=mlp|linear``): :class:`MLPProjection` (Linear-GELU-Linear) or
  :class:`LinearProjection` (released);
* ``out_norm`` (``model/connector/out_norm=rms|l2|none``): :class:`RMSOut`, :class:`L2Norm` (released) or
  :class:`NoOutputNorm`.

The ones that hold weights (``in_norm``, ``proj_out``, ``out_norm``) arrive as partials completed with the widths the
loaded parts dictate; their tensors keep the names they had as switches (``proj_out.0.weight``, ``out_norm.weight``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from mingexp.errors import ConfigError, checkpoint_dir
from mingexp.io.pretrained import load_pretrained
from mingexp.models.queries import QueryLayout

# --------------------------------------------------------------------- input normalisation (in_norm)
class NoInputNorm(nn.Module):
    """The MLLM states as they are (the released connector)."""

    def __init__(self, positions: int | None = None, width: int | None = None) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor, update: bool = True) -> torch.Tensor:
        return x


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
            raise ConfigError(f"model.connector.in_norm.momentum={momentum}: must be in (0, 1].")
        self.momentum, self.eps = float(momentum), float(eps)
        self.options = {"momentum": self.momentum, "eps": self.eps}
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


# ------------------------------------------------------------------------------ how the stack runs (stack)
class JointStack:
    """All scales as one sequence: tokens of different scales attend to each other."""

    def run(self, stack, x: torch.Tensor, layout: QueryLayout) -> list[torch.Tensor]:
        return layout.split(stack(x))


class PerScaleStack:
    """Each scale on its own (the released code)."""

    def run(self, stack, x: torch.Tensor, layout: QueryLayout) -> list[torch.Tensor]:
        return [stack(c) for c in layout.split(x)]


# ------------------------------------------------------------------ which scales reach the DiT (tokens)
class AllScales:
    """Every scale's tokens condition the DiT (Σ s² tokens, one diffusion pass)."""

    def scales(self, layout: QueryLayout) -> tuple[int, ...]:
        return tuple(layout.scales)


class FinestScale:
    """Only the largest scale's tokens (what the released code keeps after one pass per scale)."""

    def scales(self, layout: QueryLayout) -> tuple[int, ...]:
        return (max(layout.scales),)


class OneScale:
    """One given scale's tokens (``model.connector.tokens.scale``)."""

    def __init__(self, scale: int) -> None:
        self.scale = int(scale)
        self.options = {"scale": self.scale}

    def scales(self, layout: QueryLayout) -> tuple[int, ...]:
        if self.scale not in layout.scales:
            raise ConfigError(f"model.connector.tokens.scale={self.scale}: not one of the query scales {list(layout.scales)}.")
        return (self.scale,)


# ------------------------------------------------------------------------ output projection (proj_out)
class MLPProjection(nn.Sequential):
    """Linear → GELU (tanh) → Linear, (B, N, H_c) → (B, N, C_cap)."""

    def __init__(self, hidden: int, out_width: int) -> None:
        super().__init__(nn.Linear(hidden, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, out_width))


class LinearProjection(nn.Linear):
    """One Linear (the released ``proj_out``, H_c → 3584)."""

    def __init__(self, hidden: int, out_width: int) -> None:
        super().__init__(hidden, out_width)


# ------------------------------------------------------------------------ output normalisation (out_norm)
class RMSOut(nn.RMSNorm):
    def __init__(self, width: int, eps: float = 1e-6) -> None:
        super().__init__(width, eps=eps)
        self.options = {"eps": float(eps)}


class L2Norm(nn.Module):
    """Unit-norm caption tokens (released)."""

    def __init__(self, width: int | None = None) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(x, dim=-1)


class NoOutputNorm(nn.Identity):
    def __init__(self, width: int | None = None) -> None:
        super().__init__()


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
        layout: the query layout (the stack and the token selection read it).
        stack / tokens: instances (:class:`JointStack` | :class:`PerScaleStack`; :class:`AllScales` | :class:`FinestScale`
            | :class:`OneScale`).
        in_norm / proj_out / out_norm: callables completed with widths (module docstring).
    """

    def __init__(
        self,
        in_width: int,
        out_width: int,
        transformer: nn.Module,
        layout: QueryLayout,
        stack: JointStack | PerScaleStack | None = None,
        tokens: AllScales | FinestScale | OneScale | None = None,
        in_norm: Callable[..., nn.Module] = NoInputNorm,
        proj_out: Callable[..., nn.Module] = MLPProjection,
        out_norm: Callable[..., nn.Module] = RMSOut,
    ) -> None:
        super().__init__()
        self.stack, self.tokens, self.layout = stack or JointStack(), tokens or AllScales(), layout
        self.scales_out = self.tokens.scales(layout)  # checked against the layout now, not at the first step
        hidden = int(transformer.config.hidden_size)
        self.in_norm = in_norm(positions=sum(s * s for s in layout.scales), width=in_width)
        self.proj_in = nn.Linear(in_width, hidden)
        self.transformer = _bidirectional(transformer)
        self.proj_out = proj_out(hidden, out_width)
        self.out_norm = out_norm(width=out_width)
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
        stack: JointStack | PerScaleStack | None = None,
        tokens: AllScales | FinestScale | OneScale | None = None,
        in_norm: Callable[..., nn.Module] = NoInputNorm,
        proj_out: Callable[..., nn.Module] = MLPProjection,
        out_norm: Callable[..., nn.Module] = RMSOut,
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
        return cls(in_width, out_width, transformer, layout, stack=stack, tokens=tokens, in_norm=in_norm, proj_out=proj_out,
                   out_norm=out_norm)

    # --------------------------------------------------------------- its folder
    NAME = "connector"

    def config(self) -> dict:
        """What rebuilds this connector besides its tensors and the stack's own Qwen2 config (``config.json``)."""
        from mingexp.io.part_folder import describe

        return {"in_width": self.in_width, "out_width": self.out_width, "scales": list(self.layout.scales),
                "stack": describe(self.stack), "tokens": describe(self.tokens), "in_norm": describe(self.in_norm, partial=True),
                "proj_out": describe(self.proj_out, partial=True), "out_norm": describe(self.out_norm, partial=True)}

    def save_pretrained(self, folder) -> None:
        """``<folder>/config.json`` (the Qwen2 stack's, transformers' format), ``connector.json`` and ``model.safetensors``."""
        from pathlib import Path

        from mingexp.io import part_folder

        Path(folder).mkdir(parents=True, exist_ok=True)
        self.transformer.config.save_pretrained(str(folder))
        part_folder.write(folder, self.NAME, self.config(), self)

    @classmethod
    def from_pretrained(cls, folder, attn_implementation: str = "sdpa") -> "Connector":
        """The connector :meth:`save_pretrained` wrote: the stack rebuilt from its config, every tensor loaded exactly."""
        from transformers import Qwen2Config, Qwen2Model

        from mingexp.io import part_folder
        from mingexp.models.queries import build_layout

        cfg = part_folder.read_config(folder, cls.NAME, "connector")
        stack_config = Qwen2Config.from_pretrained(str(folder), attn_implementation=attn_implementation)
        transformer = Qwen2Model(stack_config)
        transformer.embed_tokens = None
        connector = cls(int(cfg["in_width"]), int(cfg["out_width"]), transformer, build_layout(cfg["scales"]),
                        stack=part_folder.build_variant(cfg["stack"]), tokens=part_folder.build_variant(cfg["tokens"]),
                        in_norm=part_folder.build_variant(cfg["in_norm"]), proj_out=part_folder.build_variant(cfg["proj_out"]),
                        out_norm=part_folder.build_variant(cfg["out_norm"]))
        part_folder.load_weights(connector, folder)
        return connector

    @property
    def hidden_size(self) -> int:
        return int(self.transformer.config.hidden_size)

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
        # 2. bidirectional transformer, jointly or scale by scale (the stack variant)
        chunks = self.stack.run(self._stack, x, self.layout)
        # 3. project to the DiT's caption channels and normalise
        return {s: self.out_norm(self.proj_out(c)) for s, c in zip(self.layout.scales, chunks)}

    def dit_condition(self, per_scale: Mapping[int, torch.Tensor]) -> torch.Tensor:
        """The DiT's cross-attention tokens: (B, T, C_cap), T = Σ s² over the scales the token selection keeps."""
        return torch.cat([per_scale[s] for s in self.scales_out], dim=1)
