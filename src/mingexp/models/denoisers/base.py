"""The ``Denoiser`` seam: what the unified model needs from a diffusion transformer, and nothing more.

A denoiser predicts from the noisy latents x_t (B, C_lat, h, w), the noise level σ ∈ [0, 1] and the
connector's condition tokens c (B, T, C_cond)::

    prediction = D(x_t, σ, c)          (B, C_lat, h, w): a velocity or x̂_0 (``model.flow.prediction``)

Everything family-specific sits in one adapter (a subclass) around the library's own module, kept as
``self.transformer`` and loaded with its own ``from_pretrained``:

* the timestep convention: :meth:`timestep` (diffusers' flow pipelines: σ · the scheduler's
  ``num_train_timesteps`` · the transformer config's ``timestep_scale`` where it has one);
* the size it samples at for a requested size: :meth:`sampling_size` (as asked, or SANA's aspect-ratio bins);
* the geometry the rest of the model reads: latent channels, patch size, native sample size, condition
  width (:attr:`condition_width`), hidden width;
* where the alignment tap sits: :attr:`blocks` (the block stack), :meth:`tap_tokens` (a block's output →
  its image tokens, (B, N, C) in raster order), :attr:`default_tap` (the middle block);
* what FSDP wraps (:attr:`fsdp_blocks`, read by ``mingexp.lit.sharding``);
* how it is exported (:meth:`save_pretrained` / :meth:`export_config`: the library's folder, plus the
  adapter's own weights when it has any).

:class:`BlockTap` records one block's image tokens through a forward hook, so the library's code is never
edited.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Iterator, Mapping

import torch
from torch import nn

from mingexp.errors import ConfigError, checkpoint_subdir
from mingexp.io.pretrained import load_pretrained
from mingexp.io.tensors import read_tensors, save_tensors
from mingexp.models.lora import ADAPTER as LORA_ADAPTER

ADAPTER_WEIGHTS = "adapter.safetensors"  # the adapter's own parameters, beside the library's folder
LORA_FOLDER = "lora"  # a separate LoRA export's adapter (peft's format), inside the library's folder
LORA_MODES = ("merged", "separate")


class Denoiser(nn.Module):
    """Base of every family's adapter. Subclasses set the class attributes and :meth:`forward`.

    Class attributes:
        family: the config name (``conf/model/dit/<family>.yaml``).
        library_class: the diffusers class, by name (loaded with ``from_pretrained`` / built from kwargs).
        fsdp_blocks: import paths of the module classes FSDP wraps one by one.
    """

    family: ClassVar[str] = ""
    library_class: ClassVar[str] = ""
    fsdp_blocks: ClassVar[tuple[str, ...]] = ()
    # the scheduler's timestep range: σ ↔ t = σ · this. The sampler's scheduler config owns the value;
    # build_model hands it over (mingexp.models.unified), 1000 otherwise (diffusers' flow schedulers' default)
    num_train_timesteps: int = 1000

    def __init__(self, transformer: nn.Module) -> None:
        super().__init__()
        self.transformer = transformer

    # ------------------------------------------------------------------ build
    @classmethod
    def build(
        cls,
        path: str | Path | None = None,
        subfolder: str | None = None,
        config: Mapping[str, Any] | None = None,
        gradient_checkpointing: bool = False,
    ) -> "Denoiser":
        """From ``model.dit.path`` (+ ``subfolder``: a diffusers folder) or ``model.dit.config`` (the library
        class's kwargs), exactly one. A folder written by :meth:`save_pretrained` also restores the adapter's
        own weights."""
        transformer, folder = cls.load_library(path, subfolder, config, gradient_checkpointing)
        denoiser = cls(transformer)
        if folder is not None and (folder / ADAPTER_WEIGHTS).is_file():
            denoiser.load_adapter_state(read_tensors(folder / ADAPTER_WEIGHTS), str(folder / ADAPTER_WEIGHTS))
        return denoiser

    @classmethod
    def load_library(cls, path: str | Path | None, subfolder: str | None, config: Mapping[str, Any] | None,
                     gradient_checkpointing: bool) -> tuple[nn.Module, Path | None]:
        """The library model (from its folder, or built from kwargs) and the folder it came from (None when built)."""
        import diffusers

        library = getattr(diffusers, cls.library_class)
        if (path is None) == (config is None):
            raise ConfigError(f"give exactly one of model.dit.path (a diffusers {cls.library_class} folder) or model.dit.config "
                              f"({cls.library_class} kwargs).")
        folder = None
        if path is not None:
            folder = checkpoint_subdir(path, subfolder, "model.dit", f"a diffusers {cls.library_class}")
            # trainable: fp32 master weights whatever the checkpoint stores; every tensor checked (mingexp.io.pretrained)
            transformer = load_pretrained(library.from_pretrained, folder, "model.dit", target="diffusion_pytorch_model.safetensors",
                                          torch_dtype=torch.float32)
        else:
            transformer = library(**dict(config))
        if gradient_checkpointing:
            transformer.enable_gradient_checkpointing()
        return transformer, folder

    # --------------------------------------------------------------- geometry
    @property
    def config(self):
        """The library model's config (diffusers ``FrozenDict``)."""
        return self.transformer.config

    @property
    def in_channels(self) -> int:
        return int(self.config.in_channels)

    @property
    def out_channels(self) -> int:
        return int(self.config.out_channels or self.config.in_channels)

    @property
    def patch_size(self) -> int:
        return int(self.config.patch_size)

    @property
    def sample_size(self) -> int:
        """The native latent size per side (the pixel size is this × the VAE factor)."""
        return int(self.config.sample_size)

    @property
    def grid(self) -> int:
        """Tokens per side at the native size."""
        return self.sample_size // self.patch_size

    @property
    def condition_width(self) -> int:
        """C_cond: the width of the condition tokens the connector must produce."""
        raise NotImplementedError

    @property
    def width(self) -> int:
        """The hidden width of the blocks (what the alignment tap reads)."""
        return int(self.config.num_attention_heads * self.config.attention_head_dim)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.transformer.transformer_blocks

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def default_tap(self) -> int:
        """The block the alignment reads when ``model.align.layer`` is null: the middle one."""
        return self.num_blocks // 2

    # ---------------------------------------------------------------- forward
    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """The family's timestep input for noise levels σ (B,): the scheduler's timestep σ·``num_train_timesteps``,
        times the transformer config's ``timestep_scale`` where it has one (``SanaPipeline`` multiplies by it; SD3's
        config has none)."""
        return sigma * (self.num_train_timesteps * float(self.config.get("timestep_scale", 1.0) or 1.0))

    def sampling_size(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) in pixels to denoise at for a requested size; the image is then resized to the request
        (:meth:`~mingexp.models.unified.UnifiedModel.sample`). As asked, by default."""
        return int(height), int(width)

    def forward(self, latents: torch.Tensor, sigma: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """(B, C_lat, h, w) prediction for x_t (B, C_lat, h, w), σ (B,) and condition tokens (B, T, C_cond)."""
        raise NotImplementedError

    def tap_tokens(self, output: Any) -> torch.Tensor:
        """A block's forward output → its image tokens (B, N, C), N = (h/p)·(w/p) in raster order."""
        return output[0] if isinstance(output, tuple) else output

    # ----------------------------------------------------------------- export
    def adapter_state(self) -> dict[str, torch.Tensor]:
        """The adapter's own parameters (not the library model's), e.g. a pooled-vector projection."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("transformer.")}

    def load_adapter_state(self, state: Mapping[str, torch.Tensor], where: str = ADAPTER_WEIGHTS) -> None:
        """The adapter's own weights from ``where`` (a file): every key placed, none unknown, shapes equal."""
        own = self.adapter_state()
        missing, unknown = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        wrong = [f"{k} is {list(state[k].shape)}, the model's {list(own[k].shape)}" for k in sorted(set(own) & set(state))
                 if tuple(state[k].shape) != tuple(own[k].shape)]
        if missing or unknown or wrong:
            raise ConfigError(f"{where}: the {self.family} adapter's weights do not match: "
                              + "; ".join(filter(None, [f"missing {missing}" if missing else "", f"unknown {unknown}" if unknown else "",
                                                        f"shapes differ: {'; '.join(wrong)}" if wrong else ""])) + ".")
        self.load_state_dict(dict(state), strict=False)

    def save_pretrained(self, folder: str | Path, lora: str = "merged") -> None:
        """The library's own folder, plus :data:`ADAPTER_WEIGHTS` when the adapter has weights.

        With LoRA layers (``model.lora``) the folder holds a plain library model: the update folded in
        (``lora="merged"``), or the base weights with the LoRA matrices in ``<folder>/lora/`` (``"separate"``,
        peft's ``adapter_model.safetensors`` + ``adapter_config.json``).
        """
        from mingexp.models.lora import adapter_state_dict, has_lora, without_lora

        if lora not in LORA_MODES:
            raise ConfigError(f"lora={lora!r}: use one of {LORA_MODES}.")
        library = self.transformer
        if has_lora(library):
            library = without_lora(self.transformer, merge=lora == "merged")
            if lora == "separate":
                (Path(folder) / LORA_FOLDER).mkdir(parents=True, exist_ok=True)
                save_tensors(adapter_state_dict(self.transformer), Path(folder) / LORA_FOLDER / "adapter_model.safetensors")
                self.transformer.peft_config[LORA_ADAPTER].save_pretrained(str(Path(folder) / LORA_FOLDER))
        library.save_pretrained(str(folder))
        own = self.adapter_state()
        if own:
            save_tensors(own, Path(folder) / ADAPTER_WEIGHTS)

    @classmethod
    def builder(cls) -> str:
        """The ``_target_`` that builds this family (what configs and exports name)."""
        return f"{cls.__module__}.{cls.__qualname__}.build"

    def export_config(self, subfolder: str) -> dict[str, Any]:
        """The model-config section that rebuilds this denoiser from an export folder."""
        return {"_target_": self.builder(), "path": ".", "subfolder": subfolder}


def denoiser_class(target: str) -> type[Denoiser]:
    """The adapter class a ``_target_`` such as ``mingexp.models.denoisers.sana.SanaDenoiser.build`` names."""
    from hydra.utils import get_method

    built = get_method(target)
    cls = getattr(built, "__self__", None)
    if not (isinstance(cls, type) and issubclass(cls, Denoiser)):
        raise ConfigError(f"model.dit._target_={target!r} is not a Denoiser adapter's build (see mingexp.models.denoisers).")
    return cls


class BlockTap:
    """Capture the image tokens (B, N, C) of one denoiser block while a ``with tap.capture():`` is open.

    With gradient checkpointing the hook also fires on the recomputation in backward; the tap is closed by
    then, so the recorded forward tensor is kept.
    """

    def __init__(self, denoiser: Denoiser, layer: int) -> None:
        n = denoiser.num_blocks
        if not 0 <= layer < n:
            raise ConfigError(f"model.align.layer={layer} is outside the DiT, which has {n} blocks (valid: 0..{n - 1}).")
        self.denoiser, self.layer = denoiser, layer
        self.value: torch.Tensor | None = None
        self._open = False
        denoiser.blocks[layer].register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: tuple, output: Any) -> None:
        if self._open:
            self.value = self.denoiser.tap_tokens(output)

    @contextmanager
    def capture(self) -> Iterator["BlockTap"]:
        self.value, self._open = None, True
        try:
            yield self
        finally:
            self._open = False
