"""The released MLLM as one transformers ``Qwen2_5_VLForConditionalGeneration``, built from its three pieces.

Upstream runs its own copies of the Qwen2.5 ViT and of a Qwen2 LM patched for 3-D M-RoPE
(``qwen2_5_vit.py``, ``modeling_qwen2_native.py``). Both are transformers' Qwen2.5-VL parts with other names,
so the release loads into the library's classes and runs through the same :class:`~mingexp.models.mllm.FrozenMLLM`
as a stock Qwen2.5-VL (prefix cache, hidden-state layer, ``generate`` for chat)::

    pixels ──Qwen2.5 ViT (qwen2_5_vit/, merger out 8192)──► (N, 8192)
           ──projector: Linear 8192→3584, GELU, Linear 3584→3584 (mlp/model.safetensors linear_proj.*)──► (N, 3584)
           ──L2 normalise (upstream norm_query_embeds=True)──► into the <imagePatch> slots of the Qwen2 LM
    Qwen2 LM (qwen2_5_llm/: Qwen2ForCausalLM weights) ──as Qwen2.5-VL's text model with M-RoPE (t, h, w)

The composite's config takes the token ids of the release's protocol (``<imagePatch>`` is the image token,
``<image>`` / ``</image>`` the vision start / end), so Qwen2.5-VL's own ``get_rope_index`` lays out the
positions upstream's copy computes (tested against it in tests/unit/test_release.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from mingexp.errors import ConfigError
from mingexp.io.pretrained import load_pretrained
from mingexp.io.tensors import load_exact
from mingexp.models.mllm import FrozenMLLM
from mingexp.models.processor import MLLMProcessor
from mingexp.models.release.processor import ReleasedProcessor
from mingexp.io.release import read_group, release_part, vision_config
from mingexp.utils import resolve_dtype

RELEASED_MROPE_SECTION = (16, 24, 24)  # hard-coded upstream (Qwen2ForCausalLM.__init__ with use_llm_3drope)
UPSTREAM_LM_KEYS = ("use_llm_3drope", "audio_vocab_size", "audio_id_shift", "spatial_merge_size", "tokens_per_second")


class ProjectedVision(nn.Module):
    """Qwen2.5 ViT → projector → L2 norm, with the vision tower's interface (``Qwen2_5_VLModel.visual``).

    Shapes: pixel patches (P, C·T·p·p) and grids (I, 3) → ``pooler_output`` (N, D_llm), N = P / merge².
    """

    def __init__(self, vit: nn.Module, projector: nn.Sequential) -> None:
        super().__init__()
        self.vit, self.projector = vit, projector
        self.spatial_merge_size = vit.spatial_merge_size

    @property
    def dtype(self) -> torch.dtype:
        return self.vit.dtype

    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor, **kwargs):
        out = self.vit(pixel_values, grid_thw=grid_thw, **kwargs)
        projected = self.projector(out.pooler_output.to(self.projector[0].weight.dtype))
        # upstream: image_embeds.float() → linear_proj → F.normalize(dim=-1); normalised in fp32 here
        out.pooler_output = nn.functional.normalize(projected.float(), dim=-1).to(projected.dtype)
        return out


def lm_config(path: str | Path):
    """``qwen2_5_llm/config.json`` as upstream's own ``Qwen2ForCausalLM`` writes and reads it, into transformers'
    ``Qwen2Config``.

    Upstream's constructor reads ``use_llm_3drope``, ``audio_vocab_size`` and ``audio_id_shift`` from the config and,
    with 3-D RoPE on (``MingUniInference`` switches it on), sets ``rope_scaling={"type": "mrope", "mrope_section":
    [16, 24, 24]}``; its rotary embedding then reads that type as ``default`` (``modeling_qwen2_native.py`` 86–92,
    1013–1022). Stock transformers has no ``mrope`` rope type, so the file is read as data here: ``mrope`` becomes
    ``default`` with its ``mrope_section`` kept (:func:`text_config` reads it), and the upstream-only keys (3-D RoPE
    switch, audio vocabulary, which the image model never uses) are set aside. A config without them (a stock
    Qwen2 one) is read as it is."""
    from transformers import Qwen2Config

    file = release_part(path, "qwen2_5_llm") / "config.json"
    try:
        raw = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{file}: not readable JSON ({type(e).__name__}: {e}); download the release again.") from None
    if not isinstance(raw, dict) or raw.get("model_type", "qwen2") != "qwen2":
        raise ConfigError(f"{file}: model_type {raw.get('model_type') if isinstance(raw, dict) else raw!r}, expected qwen2 (the released LM).")
    for key in UPSTREAM_LM_KEYS:
        raw.pop(key, None)
    scaling, parameters = raw.pop("rope_scaling", None), raw.pop("rope_parameters", None)
    rope = scaling or parameters or {}
    if not isinstance(rope, dict):
        raise ConfigError(f"{file}: rope_scaling must be a mapping, not {rope!r}.")
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind not in ("mrope", "default"):
        raise ConfigError(f"{file}: rope type {kind!r}; the released LM uses M-RoPE (type mrope) or the default rope.")
    theta = raw.pop("rope_theta", None)
    rope_parameters = {"rope_type": "default", "rope_theta": float(rope.get("rope_theta", theta if theta is not None else 1_000_000.0))}
    if rope.get("mrope_section"):
        rope_parameters["mrope_section"] = list(rope["mrope_section"])
    return Qwen2Config(**raw, rope_parameters=rope_parameters)


def text_config(lm_config):
    """The Qwen2 LM's config as Qwen2.5-VL's text config, with the M-RoPE split (t, h, w) of ``head_dim / 2``: the
    config's own when it names one, else upstream's hard-coded (16, 24, 24)."""
    from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLTextConfig

    head_dim = lm_config.hidden_size // lm_config.num_attention_heads
    rope = dict(getattr(lm_config, "rope_parameters", None) or {"rope_type": "default", "rope_theta": getattr(lm_config, "rope_theta", 1e6)})
    section = list(rope.get("mrope_section") or RELEASED_MROPE_SECTION)
    if sum(section) != head_dim // 2:
        raise ConfigError(f"qwen2_5_llm/config.json: the M-RoPE split {section} sums to {sum(section)} but the LM's head_dim / 2 is "
                          f"{head_dim // 2}: name the split in its rope_parameters (mrope_section).")
    rope.update(rope_type="default", mrope_section=section)
    fields = set(Qwen2_5_VLTextConfig().to_dict()) - {"rope_parameters", "model_type", "architectures", "transformers_version", "dtype"}
    return Qwen2_5_VLTextConfig(**{k: v for k, v in lm_config.to_dict().items() if k in fields}, rope_parameters=rope)


def load_released_mllm(
    path: str | Path,
    dtype: str = "float32",
    layer: int = -1,
    prefix_cache: bool = True,
    attn_implementation: str = "sdpa",
    trust_remote_code: bool = False,
    processor: Callable[..., MLLMProcessor] = ReleasedProcessor.from_pretrained,
) -> FrozenMLLM:
    """The released MLLM (module docstring) from the released folder (``model.path``), frozen.

    ``trust_remote_code`` is accepted for the loader flags' sake and must stay off: nothing here runs the
    folder's code.
    """
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2ForCausalLM
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel, Qwen2_5_VLTextModel

    if trust_remote_code:
        raise ConfigError("model.mllm.trust_remote_code=true: the released MLLM is built from transformers' own classes; leave it off.")
    torch_dtype = resolve_dtype(dtype, "model.mllm.dtype")
    proc = processor(Path(str(path)))
    ids = {t: proc.tokenizer.convert_tokens_to_ids(t) for t in (proc.image_pad, proc.image_start, proc.image_end, "<video>", "<|im_end|>")}
    # 1. the three pieces, each with its library loader (safetensors only)
    vit = load_pretrained(Qwen2_5_VisionTransformerPretrainedModel.from_pretrained, release_part(path, "qwen2_5_vit"),
                          "the released ViT (qwen2_5_vit/)", config=vision_config(path), dtype=torch_dtype,
                          attn_implementation=attn_implementation)
    causal = load_pretrained(Qwen2ForCausalLM.from_pretrained, release_part(path, "qwen2_5_llm"), "the released LM (qwen2_5_llm/)",
                             config=lm_config(path), dtype=torch_dtype, attn_implementation=attn_implementation)
    width = causal.config.hidden_size
    projector = nn.Sequential(nn.Linear(vit.config.out_hidden_size, width), nn.GELU(), nn.Linear(width, width))
    load_exact(projector, read_group(path, "linear_proj."), str(release_part(path, "mlp")), lambda k: f"linear_proj.{k}",
               fix="It is not the released Ming-Lite-Uni mlp file, or the download is incomplete.")
    projector.to(torch_dtype)
    if len(proc.tokenizer) > causal.config.vocab_size:
        raise ConfigError(f"{path}: the tokenizer with the release's tokens has {len(proc.tokenizer)} ids but the LM's vocabulary "
                          f"{causal.config.vocab_size}: qwen2_5_llm/ is not the released language model.")
    # 2. the composite's config: the LM as Qwen2.5-VL's text model, the protocol's token ids
    config = Qwen2_5_VLConfig(
        text_config=text_config(causal.config).to_dict(), vision_config=vit.config.to_dict(),
        image_token_id=ids[proc.image_pad], video_token_id=ids["<video>"],
        vision_start_token_id=ids[proc.image_start], vision_end_token_id=ids[proc.image_end],
    )
    # 3. the shell on the meta device (no memory), its parts replaced by the loaded ones
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(config)
        language = Qwen2_5_VLTextModel(config.text_config)
    language.load_state_dict(causal.model.state_dict(), strict=True, assign=True)  # the loaded tensors themselves, no copy
    # the rotary table is a non-persistent buffer (not in the state dict): built for real, and kept in fp32 as a
    # loaded model keeps it (no .to(dtype) on this module)
    language.rotary_emb = type(language.rotary_emb)(config=config.text_config)
    model.model.language_model = language
    model.model.visual = ProjectedVision(vit, projector)
    model.lm_head = causal.lm_head
    model.config.dtype = torch_dtype
    # 4. chat stops at the end of the assistant's turn (upstream's chat path reads an undefined eos_token_id)
    model.generation_config.eos_token_id = [ids["<|im_end|>"], proc.tokenizer.eos_token_id]
    model.generation_config.pad_token_id = proc.pad_id
    return FrozenMLLM(model, proc, layer=layer, prefix_cache=prefix_cache)
