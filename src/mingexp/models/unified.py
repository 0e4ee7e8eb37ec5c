"""The unified model: frozen MLLM → multi-scale queries → connector → DiT (Ming-Lite-Uni, Fig. 2; SANA there).

Data flow with tensor shapes (B images, prompt of L_p tokens, scales S = [4, 8, 16], real sizes in brackets):

    prompt text + images ──MLLMProcessor──► input_ids (B, L_p), pixel_values, image_grid_thw
    MultiScaleQueries ─────────────────────► Z_input (B, L_q, d)        L_q = Σ(s²+2) = 342, d = 3584
    FrozenMLLM(prompt ⊕ Z_input) ──────────► H (B, L_q, d) → queries only (B, Σs², d) = (B, 336, 3584)
    Connector (bidirectional Qwen2) ───────► {s: (B, s², C_cap)}         C_cap = 2304 (SANA caption ch.)
    caption tokens c ──────────────────────► (B, T, C_cap)               T = 336 (all) or 256 (finest)
    image (B, 3, H, W) ─VAE (frozen)───────► x_0 (B, C_lat, H/f, W/f)    (B, 32, 16, 16) at 512 px, f = 32
    x_t = (1−σ)x_0 + σε ─Denoiser(x_t, σ, c)──► v̂ (B, C_lat, H/f, W/f)    (SANA | SD3 MMDiT: models/denoisers)
    L = ‖v̂ − (ε − x_0)‖² + λ·Σ_s L_align^s       (DiT block `layer` → pooled s×s → head ≈ target_s: models/align)

Sampling runs the same condition path once, then one Euler flow pass with guidance batched in one DiT
forward per step, then the VAE decoder. ``chat`` answers questions with the frozen MLLM alone.

Trainable: queries (+ boundary tokens), connector, DiT, alignment head. Frozen: MLLM, VAE. The module is
single-device PyTorch; precision, compilation, checkpointing and sharding are applied by the trainer.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from mingexp.diffusion.flow import ConditionDropout, FlowMatching
from mingexp.diffusion.sampler import FlowSampler
from mingexp.errors import ConfigError
from mingexp.models.align.base import Alignment, AlignmentWidths
from mingexp.models.cond_cache import PromptStateCache
from mingexp.models.connector import Connector
from mingexp.models.denoisers.base import BlockTap, Denoiser
from mingexp.models.lora import LoRA
from mingexp.models.mllm import FrozenMLLM
from mingexp.models.processor import MLLMInputs
from mingexp.models.spec import ModelSpec
from mingexp.models.queries import MultiScaleQueries


@dataclass
class Condition:
    """What the condition path produces for a batch.

    Attributes:
        tokens: (B, T, C_cap) the DiT's condition tokens.
        per_scale: {s: (B, s², C_cap)} connector outputs of every scale.
        mllm: {s: (B, s², d)} MLLM hidden states of every scale's queries.
    """

    tokens: torch.Tensor
    per_scale: dict[int, torch.Tensor]
    mllm: dict[int, torch.Tensor]


@dataclass
class ModelOutput:
    """Loss of one training step and its terms (``flow``, ``align/s{s}``, ``align``), plus the dropped rows."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    dropped: torch.Tensor | None = None


def _randn(shape, generator: torch.Generator | None, device, dtype) -> torch.Tensor:
    # Noise from an explicit CPU generator when given (reproducible on any device), else on the device.
    if generator is not None:
        return torch.randn(shape, generator=generator).to(device=device, dtype=dtype)
    return torch.randn(shape, device=device, dtype=dtype)


class UnifiedModel(nn.Module):
    """Frozen MLLM + learnable multi-scale queries + connector + denoiser (+ alignment head).

    Build it with :func:`build_model` (what ``model=toy`` / ``model=ming_lite_uni`` instantiate), which
    derives every width from the loaded parts.
    """

    def __init__(
        self,
        mllm: FrozenMLLM,
        queries: MultiScaleQueries,
        connector: Connector,
        dit: Denoiser,
        vae: nn.Module,
        flow: FlowMatching,
        sampler: FlowSampler,
        cond_dropout: ConditionDropout,
        align: Alignment | None = None,
        cond_cache: PromptStateCache | None = None,
    ) -> None:
        super().__init__()
        self.mllm, self.queries, self.connector, self.dit, self.vae = mllm, queries, connector, dit, vae
        # Not a module and not saved: text-only prompts' MLLM states, valid while the query block is frozen.
        self.cond_cache = cond_cache
        self.flow, self.sampler, self.cond_dropout = flow, sampler, cond_dropout
        self.align = align
        # The tap is a forward hook on one DiT block; it exists only when alignment is on.
        self._tap = BlockTap(dit, dit.default_tap if align.layer is None else int(align.layer)) if align is not None else None

    # ------------------------------------------------------------------ groups
    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by component (separate learning rates live in the optimizer config)."""
        groups = {
            "queries": [p for p in self.queries.parameters() if p.requires_grad],
            "connector": [p for p in self.connector.parameters() if p.requires_grad],
            "dit": [p for p in self.dit.parameters() if p.requires_grad],
        }
        if self.align is not None:
            groups["align"] = [p for p in self.align.parameters() if p.requires_grad]
        return groups

    @property
    def device(self) -> torch.device:
        return next(self.queries.parameters()).device

    def spec(self) -> ModelSpec:
        """Native size in pixels (the DiT's sample size × the VAE factor) and the multiple every size must be
        (VAE factor × DiT patch)."""
        f = self.vae.spatial_factor
        return ModelSpec(self.dit.sample_size * f, f * self.dit.patch_size, self.vae_digest, self.vae.latent_channels, f)

    @functools.cached_property
    def vae_digest(self) -> str:
        """The frozen VAE's identity (computed once: the VAE never changes), what stored latents must carry."""
        from mingexp.data.latents import vae_digest

        return vae_digest(self.vae)

    def latents(self, images: torch.Tensor, stored: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
        """Clean latents x₀ (B, C_lat, h, w) of the targets: the rows' ``stored`` latents (read from the shards,
        :mod:`mingexp.data.latents`) where given, the frozen VAE's encoding of ``images`` (B, 3, H, W) elsewhere."""
        if stored is None:
            return self.vae.encode(images)
        missing = [i for i, x in enumerate(stored) if x is None]
        shape = next(x for x in stored if x is not None).shape
        out = torch.empty((len(stored), *shape), dtype=images.dtype, device=images.device)  # encode returns the input's dtype
        for i, x in enumerate(stored):
            if x is not None:
                out[i] = x.to(device=images.device, dtype=images.dtype)
        if missing:
            out[missing] = self.vae.encode(images[missing])
        return out

    def default_size(self) -> int:
        """The DiT's native resolution in pixels."""
        return self.spec().resolution

    # -------------------------------------------------------------- condition
    def encode(self, inputs: MLLMInputs, update_statistics: bool = True) -> Condition:
        """The condition path: prompt + query block → MLLM → connector (``update_statistics``: see
        :meth:`Connector.forward`)."""
        layout = self.queries.layout
        # 1. the learnable query block Z_input (eqs. 1–3): (B, L_q, d)
        block = self.queries(inputs.batch_size)
        # 2. frozen MLLM over prompt ⊕ block, hidden states at the block: (B, L_q, d) (text-only prompts read
        #    back from the cache when the block is frozen, mingexp.models.cond_cache)
        if self.cond_cache is not None:
            h = self.cond_cache(self.mllm, inputs, block, layout.positions)
        else:
            h = self.mllm(inputs, block, layout.positions)
        # 3. keep the queries, drop the boundary tokens: (B, Σs², d)
        hq = h[:, layout.query_index.to(h.device)]
        # 4. connector → condition tokens per scale {s: (B, s², C_cap)}, and the DiT's token set (B, T, C_cap)
        per_scale = self.connector(hq, update_statistics)
        return Condition(self.connector.dit_condition(per_scale), per_scale, dict(zip(layout.scales, layout.split(hq))))

    def null_tokens(self, like: torch.Tensor) -> torch.Tensor:
        """The null condition, (1, T, C_cap): what the condition dropout's ``null`` says (the MLLM on "", or zeros)."""
        return self.cond_dropout.null_condition.tokens(self, like)

    # ---------------------------------------------------------------- training
    def denoise(self, x_t: torch.Tensor, cond: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Velocity v̂(x_t, σ, c): (B, C_lat, h, w), from the denoiser's output (a velocity or x̂_0, ``model.flow.prediction``)."""
        return self.flow.velocity(self.dit(x_t, sigma, cond), x_t, sigma)

    def forward(self, inputs: MLLMInputs, images: torch.Tensor, generator: torch.Generator | None = None,
                latents: Sequence[torch.Tensor | None] | None = None) -> ModelOutput:
        """One training step's loss.

        Args:
            inputs: tokenised prompts (the text, plus the source image for editing / style / recon).
            images: (B, 3, H, W) target images in [-1, 1].
            generator: optional CPU generator for dropout, σ and noise (reproducible steps).
            latents: per row, the target's latents read from the shards (None: encoded here), :meth:`latents`.
        """
        B, device = images.shape[0], images.device
        # 1. condition, with classifier-free-guidance dropout of whole rows
        cond = self.encode(inputs)
        dropped = self.cond_dropout.sample(B, generator).to(device)
        tokens = cond.tokens
        if dropped.any():
            tokens = torch.where(dropped.view(-1, 1, 1), self.null_tokens(tokens).expand_as(tokens), tokens)
        # 2. clean latents from the frozen VAE (or read from the shards): (B, C_lat, h, w)
        x0 = self.latents(images, latents)
        # 3. noise level, noise, interpolant and velocity target
        sigma = self.flow.sample_sigmas(B, generator, device)
        noise = _randn(x0.shape, generator, device, x0.dtype)
        x_t = self.flow.interpolate(x0, noise, sigma)
        target = self.flow.target(x0, noise)
        # 4. denoiser prediction (tapping the alignment block when alignment is on)
        if self._tap is None:
            pred = self.denoise(x_t, tokens, sigma)
        else:
            with self._tap.capture() as tap:
                pred = self.denoise(x_t, tokens, sigma)
        # 5. losses
        terms = {"flow": self.flow.loss(pred, target)}
        loss = terms["flow"]
        if self.align is not None:
            p = self.dit.patch_size
            grid = (x0.shape[-2] // p, x0.shape[-1] // p)
            per_scale = self.align(tap.value, grid, cond, target, keep=(~dropped).float())
            for s, value in per_scale.items():
                terms[f"align/s{s}"] = value
            terms["align"] = torch.stack(list(per_scale.values())).sum()
            loss = loss + self.align.weight * terms["align"]
        return ModelOutput(loss, terms, dropped)

    # ---------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(
        self,
        inputs: MLLMInputs,
        height: int,
        width: int,
        steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        image_inputs: MLLMInputs | None = None,
        image_guidance_scale: float | None = None,
        null: torch.Tensor | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Images (B, 3, height, width) in [0, 1] for tokenised prompts: one diffusion pass per image.

        ``image_inputs`` (the same images with an empty instruction) + ``image_guidance_scale`` turn on
        three-branch guidance for editing (see :class:`~mingexp.diffusion.sampler.FlowSampler`). ``null``:
        precomputed null tokens (1, T, C_cap) (an inference pipeline computes them once, not per call). ``progress``:
        ``progress(step, steps)`` after each sampler step.
        Prompts to images with seeds: :func:`mingexp.models.generation.generate`.
        """
        f, m = self.vae.spatial_factor, self.spec().multiple
        # the size the denoiser samples at: as asked, or its native bin (SANA's resolution binning), resized back below
        size = self.dit.sampling_size(height, width)
        if size[0] % m or size[1] % m:
            raise ValueError(f"height and width must be multiples of {m} (VAE factor {f} × DiT patch {self.dit.patch_size}); "
                             f"got {size[0]}×{size[1]}.")
        cond = self.encode(inputs).tokens
        w = self.sampler.guidance_scale if guidance_scale is None else guidance_scale
        if null is None and w != 1.0:
            null = self.null_tokens(cond)
        shape = (cond.shape[0], self.dit.in_channels, size[0] // f, size[1] // f)
        image_cond = self.encode(image_inputs).tokens if image_inputs is not None and image_guidance_scale is not None else None
        if image_cond is not None and null is None:
            null = self.null_tokens(cond)
        latents = self.sampler(self.denoise, cond, null, shape, generator=generator, steps=steps, guidance_scale=w,
                               image_cond=image_cond, image_guidance_scale=image_guidance_scale, progress=progress)
        decoded = self.vae.decode(latents).float()
        if tuple(size) != (height, width):  # diffusers' SanaPipeline: resized and centre-cropped in [-1, 1], before the clamp
            from diffusers.image_processor import PixArtImageProcessor

            decoded = PixArtImageProcessor.resize_and_crop_tensor(decoded, int(width), int(height))
        return ((decoded + 1) / 2).clamp(0, 1)

    # ----------------------------------------------------------- understanding
    def chat(self, images, text: str, max_new_tokens: int = 64, **kwargs) -> str:
        """Answer a question about images with the frozen MLLM (understanding is untouched by training)."""
        return self.mllm.chat(images, text, max_new_tokens=max_new_tokens, **kwargs)


def to_pil(image: torch.Tensor) -> Image.Image:
    """(3, H, W) in [0, 1] → PIL RGB, quantised to uint8."""
    array = (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(array)


# --------------------------------------------------------------------- builder
def _call(part: Callable[..., Any], key: str, resolved: dict[str, Any] | None = None, **derived) -> Any:
    """Call a config partial with the values only the loaded parts know (``derived``) and config values read
    against them (``resolved``, e.g. a named scale layout at the DiT grid).

    A derived value restated in the config must agree (both numbers are named when it does not); an unknown
    config key is named with the valid ones. A part that arrives built (an export's, from its own folder) is used as
    it is (``build_model`` checks its widths).
    """
    if isinstance(part, nn.Module):
        return part
    given = dict(part.keywords) if isinstance(part, functools.partial) else {}
    fn = part.func if isinstance(part, functools.partial) else part
    for name, value in derived.items():
        if name in given and given[name] != value:
            raise ConfigError(f"{key}.{name}={given[name]} but the loaded checkpoints give {value}: remove {key}.{name} "
                              "(it is read from them) or point the parts at matching checkpoints.")
    try:
        return fn(**{**given, **(resolved or {}), **derived})
    except TypeError as e:
        if "unexpected keyword argument" not in str(e):
            raise
        # the message names the valid keys: the callable's (and, for a builder passing **kwargs on, its class's)
        params = dict(inspect.signature(fn).parameters)
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()) and isinstance(getattr(fn, "__self__", None), type):
            params.update(inspect.signature(fn.__self__.__init__).parameters)
        unknown = sorted(set(given) - set(params))
        valid = sorted(k for k, p in params.items() if k not in derived and k not in ("self", "cls") and p.kind is not inspect.Parameter.VAR_KEYWORD)
        raise ConfigError(f"{key}: unknown key(s) {unknown or str(e)}; valid keys: {valid}.") from None


def build_model(
    mllm: FrozenMLLM,
    dit: Denoiser,
    vae: nn.Module,
    flow: FlowMatching,
    sampler: FlowSampler,
    cond_dropout: ConditionDropout,
    queries: Callable[..., MultiScaleQueries],
    connector: Callable[..., Connector],
    align: Callable[..., Alignment] | None = None,
    cond_cache: PromptStateCache | None = None,
    lora: LoRA | None = None,
    seed: int = 0,
) -> UnifiedModel:
    """Assemble a :class:`UnifiedModel` from Hydra's parts, injecting what only the loaded parts know.

    Every argument arrives instantiated by Hydra (``conf/model/``); ``queries``, ``connector`` and ``align`` as
    partials, completed here with the widths of the loaded MLLM and denoiser and the query layout. Fails
    before any step on incompatible widths, naming both numbers. ``lora`` (``model.lora``): LoRA fine-tuning of
    the denoiser (and optionally the connector) instead of training them in full (:mod:`mingexp.models.lora`).
    """
    # 1. widths the checkpoints dictate
    if not isinstance(dit, Denoiser):
        raise ConfigError(f"model.dit built a {type(dit).__name__}; it must be a Denoiser adapter (mingexp.models.denoisers).")
    for name in ("in_channels", "out_channels"):
        got = getattr(dit, name)
        if got != vae.latent_channels:
            raise ConfigError(
                f"model.dit {name}={got} but the VAE (model.vae) has {vae.latent_channels} latent channels: "
                "point model.dit and model.vae at matching checkpoints (or fix model.dit.config)."
            )
    d_mllm = mllm.hidden_size
    # the denoiser's timestep is σ · the sampler's scheduler range (its config owns the value)
    dit.num_train_timesteps = sampler.num_train_timesteps
    # The parts built here get their own seeded RNG, so their init does not depend on what was built before
    # and the caller's RNG is left untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # 2. queries at the MLLM width, boundary tokens from the MLLM's own image-boundary embeddings; a named
        #    layout (finest | pyramid) at the DiT's patch grid, `init_norm: embedding` at the MLLM's embedding norm
        q = _call(queries, "model.queries", width=d_mllm, boundary_init=mllm.boundary_embeddings(), grid=dit.grid,
                  embedding_norm=mllm.mean_embedding_norm(), seed=seed)
        # 3. connector: MLLM width → the denoiser's condition width
        conn = _call(connector, "model.connector", in_width=d_mllm, out_width=dit.condition_width, layout=q.layout)
        for name, got, want in (("model.queries width", q.width, d_mllm), ("model.connector input width", conn.in_width, d_mllm),
                                ("model.connector output width", conn.out_width, dit.condition_width)):
            if got != want:  # a part that arrived built: its widths must be the loaded parts'
                raise ConfigError(f"{name} is {got} but the loaded parts need {want}: the part's folder belongs to another model.")
        # 4. alignment head (None when its weight is 0: no head, no hook, no cost)
        widths = AlignmentWidths(dit=dit.width, connector=dit.condition_width, mllm=d_mllm, latent=vae.latent_channels, patch_size=dit.patch_size)
        head = _call(align, "model.align", widths=widths, scales=q.scales) if align is not None else None
        model = UnifiedModel(mllm, q, conn, dit, vae, flow, sampler, cond_dropout, align=head, cond_cache=cond_cache)
        # 5. LoRA adapters (seeded with the rest), the parts they sit in frozen
        if lora is not None:
            lora.apply(model)
    # 6. what trains holds fp32 master weights, whatever its checkpoint stores (the optimizer updates these; bf16
    #    compute is the trainer's precision setting, applied from outside)
    low = {part: sorted({str(p.dtype) for p in params if p.dtype != torch.float32}) for part, params in model.param_groups().items()}
    low = {part: dtypes for part, dtypes in low.items() if dtypes}
    if low:
        raise ConfigError(f"trainable parts must hold float32 weights, but {low} do; load them with dtype=float32 "
                          "(mixed precision is trainer.precision's).")
    return model
