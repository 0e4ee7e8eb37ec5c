"""What FSDP wraps, read from the chosen parts rather than restated in the trainer config.

``conf/trainer/fsdp.yaml`` passes ``${model.dit._target_}``: the denoiser adapter names its block classes
(:attr:`~mingexp.models.denoisers.base.Denoiser.fsdp_blocks`), so swapping the decoder family needs no edit
here; the Qwen2 decoder layers (connector, and the MLLM's language model) are wrapped too.
"""

from __future__ import annotations

from typing import Sequence

from hydra.utils import get_class

from mingexp.models.denoisers.base import denoiser_class

QWEN2_LAYERS = ("transformers.models.qwen2.modeling_qwen2.Qwen2DecoderLayer",)


def wrap_policy(denoiser: str, extra: Sequence[str] = QWEN2_LAYERS):
    """A ``ModuleWrapPolicy`` over the denoiser family's blocks (``denoiser``: its ``_target_``) and ``extra`` classes."""
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    classes = [*denoiser_class(denoiser).fsdp_blocks, *extra]
    return ModuleWrapPolicy({get_class(path) for path in classes})
