"""LoRA fine-tuning through peft (Hu et al. 2021): a frozen weight W plus a trained low-rank update,

    W' = W + (α / r) · B · A,      A ∈ R^{r×in} (Kaiming init), B ∈ R^{out×r} (zeros: W' = W at step 0)

``model.lora`` (a :class:`LoRA`; null = full fine-tuning) injects peft's LoRA layers into the denoiser's
library module (``dit``) and, optionally, the connector's Qwen2 stack (``connector``), and freezes everything
else in those two parts, the denoiser adapter's own weights and the connector's projections included: only
the LoRA matrices train there. The query block and the alignment head keep their own settings
(``model.queries.trainable``, ``model.align.weight``). Lora applies to any family: its targets are module
names (peft matches them as suffixes; SANA's and SD3's attention projections are both ``to_q`` ...).

Exports (``mingexp.pipeline``): :func:`without_lora` folds the update into W (a plain model, the same outputs
up to float rounding) or keeps the base alone; :func:`adapter_state_dict` is the adapter in peft's format, for
an export that keeps the base and the adapter apart.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mingexp.errors import ConfigError
from mingexp.extras import MissingExtra, require

ADAPTER = "mingexp"  # the adapter's name inside peft
FEATURE = "LoRA (model.lora)"
DIT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # attention projections of SANA's and SD3's blocks
QWEN2_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


class LoRA:
    """Which parts get LoRA and how large. Needs peft (``pip install 'mingexp[lora]'``): checked when built, i.e.
    when the config is instantiated, before any model loads.

    Args:
        rank: r. alpha: α (None = r, i.e. scale 1). dropout: on the LoRA branch's input.
        dit: module names in the denoiser's library module; None or empty = no LoRA there (the denoiser frozen).
        connector: module names in the connector's Qwen2 stack; None = no LoRA there (the connector frozen).
    """

    def __init__(self, rank: int = 16, alpha: float | None = None, dropout: float = 0.0, dit: Sequence[str] | None = DIT_TARGETS,
                 connector: Sequence[str] | None = None) -> None:
        _peft()
        if rank < 1:
            raise ConfigError(f"model.lora.rank={rank}: must be ≥ 1.")
        self.rank, self.alpha, self.dropout = int(rank), float(alpha if alpha is not None else rank), float(dropout)
        self.dit, self.connector = tuple(dit or ()), tuple(connector or ())

    def config(self, targets: Sequence[str]):
        return _peft().LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=list(targets))

    def inject(self, part: nn.Module, library: nn.Module, targets: Sequence[str], key: str) -> None:
        """Freeze ``part``, then add adapters to ``library`` (its library module) at ``targets``, which alone train."""
        inject_adapter_in_model = _peft().inject_adapter_in_model
        part.requires_grad_(False)
        if not targets:
            return
        try:
            inject_adapter_in_model(self.config(targets), library, adapter_name=ADAPTER)
        except ValueError as e:  # peft: "Target modules {...} not found in the base model"
            raise ConfigError(f"model.lora.{key}={list(targets)}: {e}") from None
        for name, p in library.named_parameters():
            p.requires_grad = "lora_" in name  # the adapters alone train in this part

    def apply(self, model: nn.Module) -> nn.Module:
        """Inject the adapters into ``model`` (a ``UnifiedModel``) and freeze the rest of those parts."""
        self.inject(model.dit, model.dit.transformer, self.dit, "dit")
        self.inject(model.connector, model.connector.transformer, self.connector, "connector")
        return model


def _peft(module: str = "peft"):
    """``peft`` (or one of its modules), or :class:`~mingexp.extras.MissingExtra` naming ``mingexp[lora]``."""
    return require(module, "lora", FEATURE, instead="model.lora=null (full fine-tuning)")


def has_lora(module: nn.Module) -> bool:
    """Whether ``module`` holds LoRA layers; False without peft (no module can hold one then), so that exports of
    models without LoRA never need it."""
    try:
        LoraLayer = _peft("peft.tuners.lora").LoraLayer
    except MissingExtra:
        return False
    return any(isinstance(m, LoraLayer) for m in module.modules())


def without_lora(module: nn.Module, merge: bool = True) -> nn.Module:
    """A copy of ``module`` with every LoRA layer replaced by its base layer: the update folded into W
    (``merge``, a plain model with the fine-tuned outputs up to float rounding) or dropped (the base alone)."""
    import copy
    from collections import OrderedDict

    LoraLayer = _peft("peft.tuners.lora").LoraLayer
    # forward hooks (the alignment tap, which holds the whole denoiser) are not copied
    plain = copy.deepcopy(module, {id(m._forward_hooks): OrderedDict() for m in module.modules()})
    layers = [(name, m) for name, m in plain.named_modules() if isinstance(m, LoraLayer)]
    for name, layer in layers:
        if merge and ADAPTER in layer.lora_A:
            layer.merge(adapter_names=[ADAPTER])
        parent_name, _, child = name.rpartition(".")
        setattr(plain.get_submodule(parent_name) if parent_name else plain, child, layer.get_base_layer())
    return plain


def adapter_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA matrices alone, in peft's format (what ``peft`` / diffusers' ``load_lora_adapter`` read)."""
    return dict(_peft("peft.utils").get_peft_model_state_dict(module, adapter_name=ADAPTER))


def load_adapter_state_dict(module: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    result = _peft("peft.utils").set_peft_model_state_dict(module, state, adapter_name=ADAPTER)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise ConfigError(f"{where}: LoRA keys that match no adapter layer: {unexpected[:4]}; was it exported with the same model.lora?")
