"""What FSDP wraps, read from the chosen parts rather than restated in the trainer config.

``conf/trainer/fsdp.yaml`` passes ``${model.dit._target_}``: the denoiser adapter names its block classes
(:attr:`~mingexp.models.denoisers.base.Denoiser.fsdp_blocks`), so swapping the decoder family needs no edit
here; the Qwen2 decoder layers (connector, and the MLLM's language model) are wrapped too.
"""

from __future__ import annotations

from typing import Sequence

from hydra.utils import get_class

from mingexp.models.denoisers.base import denoiser_class

# The connector's Qwen2 layers, and the MLLM's: Qwen2.5-VL / Qwen2-VL name their text layers (and vision blocks)
# with classes of their own, which a Qwen2DecoderLayer-only policy would leave unwrapped (python -m mingexp.doctor
# counts what each class matches)
QWEN2_LAYERS = (
    "transformers.models.qwen2.modeling_qwen2.Qwen2DecoderLayer",
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl.Qwen2_5_VLDecoderLayer",
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl.Qwen2_5_VLVisionBlock",
    "transformers.models.qwen2_vl.modeling_qwen2_vl.Qwen2VLDecoderLayer",
    "transformers.models.qwen2_vl.modeling_qwen2_vl.Qwen2VLVisionBlock",
)


def wrap_policy(denoiser: str, extra: Sequence[str] = QWEN2_LAYERS):
    """A ``ModuleWrapPolicy`` over the denoiser family's blocks (``denoiser``: its ``_target_``) and ``extra`` classes."""
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    classes = [*denoiser_class(denoiser).fsdp_blocks, *extra]
    return ModuleWrapPolicy({get_class(path) for path in classes})
