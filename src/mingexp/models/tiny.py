"""Tiny but real checkpoints in the standard formats, written in seconds.

The tests and the toy world load these through exactly the code that loads the 7B recipe:

* ``mllm/``: a ``Qwen2_5_VLForConditionalGeneration`` (``save_pretrained``, safetensors) with a working
  byte-level BPE tokenizer (Qwen's special tokens, ids matching the model config), a Qwen-VL chat
  template and a ``Qwen2VLImageProcessor`` config;
* ``connector/``: a ``Qwen2ForCausalLM`` (the format of Qwen2.5-0.5B);
* ``sana/transformer``: a diffusers ``SanaTransformer2DModel``; ``sana/vae``: a diffusers ``AutoencoderDC``;
* ``sd3/transformer``: a diffusers ``SD3Transformer2DModel`` (MMDiT); ``sd3/vae``: a diffusers ``AutoencoderKL``;
* ``release/``: the released Ming-Lite-Uni's folder layout at tiny widths (:func:`write_tiny_release`);
* ``clip/``: a ``CLIPModel`` with its tokenizer and image processor (:func:`write_tiny_clip`); ``dino/``: a DINO-style
  ``ViTModel`` without pooler (:func:`write_tiny_dino`): the encoders of the MagicBrush metrics, random weights
  (plumbing only: their similarities mean nothing).

Usage: ``python -m mingexp.models.tiny OUT_DIR`` (or the functions below).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import torch

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# The standard Qwen2-VL chat template (system default, image items as vision-start/pad/end).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Words the tokenizer learns merges for (any other text still encodes, byte by byte).
_CORPUS = [
    "You are a helpful assistant.",
    "a photo of a red circle",
    "a photo of an orange square and a yellow triangle",
    "a photo of a green diamond left of a blue star",
    "a photo of a purple cross right of a pink circle",
    "a photo of a brown square above a black triangle",
    "a photo of a white star below a red diamond",
    "a photo of two circles",
    "a photo of three stars",
    "a photo of four squares",
    "add a blue circle. remove the red star. make the square green. move the triangle to the left.",
    "what colour is the circle? how many shapes are there? is the star left of the square?",
    "describe the image. yes no one two three four five",
    "render it as an outline. invert the colours. make it grayscale. pixelate it.",
]


def write_tiny_tokenizer(out: Path, corpus: Iterable[str] = (), vocab_size: int = 512):
    """A byte-level BPE tokenizer with Qwen's special tokens and chat template; returns it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(_CORPUS) + list(corpus), trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
    )
    hf.chat_template = CHAT_TEMPLATE
    hf.save_pretrained(str(out))
    return hf


def write_tiny_mllm(
    out: str | Path,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    vision_depth: int = 2,
    vision_hidden: int = 32,
    patch_size: int = 8,
    merge_size: int = 2,
    min_pixels: int = 16 * 16,
    max_pixels: int = 64 * 64,
    corpus: Iterable[str] = (),
    seed: int = 0,
    family: str = "qwen2_5_vl",
) -> Path:
    """A tiny Qwen2.5-VL (or, ``family="qwen2_vl"``, Qwen2-VL) checkpoint at ``out``: model, tokenizer,
    chat template, image processor."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessorPil,
    )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = write_tiny_tokenizer(out, corpus)
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    head_dim = hidden_size // num_heads
    # M-RoPE splits head_dim/2 frequency pairs over (t, h, w), as [16, 24, 24] does for head_dim 128.
    half = head_dim // 2
    t_sec = half // 4
    mrope = [t_sec, (half - t_sec) // 2, half - t_sec - (half - t_sec) // 2]
    if family == "qwen2_5_vl":
        config_cls, model_cls = Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
        vision = dict(
            depth=vision_depth,
            hidden_size=vision_hidden,
            intermediate_size=vision_hidden * 2,
            num_heads=2,
            patch_size=patch_size,
            spatial_merge_size=merge_size,
            temporal_patch_size=2,
            window_size=patch_size * merge_size * 2,
            fullatt_block_indexes=[vision_depth - 1],
            out_hidden_size=hidden_size,
        )
    elif family == "qwen2_vl":
        config_cls, model_cls = Qwen2VLConfig, Qwen2VLForConditionalGeneration
        vision = dict(
            depth=vision_depth,
            embed_dim=vision_hidden,
            hidden_size=hidden_size,
            mlp_ratio=2,
            num_heads=2,
            patch_size=patch_size,
            spatial_merge_size=merge_size,
            temporal_patch_size=2,
        )
    else:
        raise ValueError(f"family={family!r}: use qwen2_5_vl or qwen2_vl")
    config = config_cls(
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=hidden_size,
            intermediate_size=hidden_size * 2,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=num_kv_heads,
            max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": mrope},
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(str(out), safe_serialization=True)
    Qwen2VLImageProcessorPil(
        patch_size=patch_size, merge_size=merge_size, temporal_patch_size=2, min_pixels=min_pixels, max_pixels=max_pixels
    ).save_pretrained(str(out))
    return out


def write_tiny_qwen2(out: str | Path, hidden_size: int = 32, num_layers: int = 2, num_heads: int = 4, num_kv_heads: int = 2, seed: int = 0) -> Path:
    """A tiny ``Qwen2ForCausalLM`` (the connector's source format, like Qwen2.5-0.5B) at ``out``."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out = Path(out)
    cfg = Qwen2Config(
        vocab_size=128,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        Qwen2ForCausalLM(cfg).save_pretrained(str(out), safe_serialization=True)
    return out


TINY_SANA = dict(
    in_channels=8,
    out_channels=8,
    num_attention_heads=2,
    attention_head_dim=16,
    num_layers=2,
    num_cross_attention_heads=2,
    cross_attention_head_dim=16,
    cross_attention_dim=32,
    caption_channels=48,
    mlp_ratio=2.5,
    sample_size=8,
    patch_size=1,
)

TINY_DCAE = dict(
    in_channels=3,
    latent_channels=8,
    attention_head_dim=8,
    encoder_block_types=("ResBlock", "ResBlock"),
    decoder_block_types=("ResBlock", "ResBlock"),
    encoder_block_out_channels=(16, 32),
    decoder_block_out_channels=(16, 32),
    encoder_layers_per_block=(1, 1),
    decoder_layers_per_block=(1, 1),
    encoder_qkv_multiscales=((), ()),
    decoder_qkv_multiscales=((), ()),
    decoder_norm_types="rms_norm",
    decoder_act_fns="silu",
    scaling_factor=0.5,
)


# DC-AE's geometry at tiny widths: six stages, factor 32 (the release's f32c32), so SANA's resolution bins (which
# assume factor 32) hold as they do at real size: a sample_size-16 SANA denoises at 512 px
TINY_DCAE_F32 = dict(
    in_channels=3,
    latent_channels=8,
    attention_head_dim=8,
    encoder_block_types=("ResBlock",) * 5 + ("EfficientViTBlock",),
    decoder_block_types=("ResBlock",) * 5 + ("EfficientViTBlock",),
    encoder_block_out_channels=(4, 8, 8, 16, 16, 32),
    decoder_block_out_channels=(4, 8, 8, 16, 16, 32),
    encoder_layers_per_block=(1,) * 6,
    decoder_layers_per_block=(1,) * 6,
    encoder_qkv_multiscales=((),) * 5 + ((5,),),
    decoder_qkv_multiscales=((),) * 5 + ((5,),),
    decoder_norm_types="rms_norm",
    decoder_act_fns="silu",
    scaling_factor=0.41407,  # DC-AE f32c32's
)
RELEASED_SCHEDULER_SHIFT = 3.0  # not the class default (1.0): a loader that ignores scheduler/ samples visibly otherwise


def upstream_lm_config(config) -> dict:
    """A transformers Qwen2 config as upstream's ``qwen2_5_llm/config.json`` holds it: written by transformers 4.46 from
    upstream's ``Qwen2ForCausalLM`` (``modeling_qwen2_native.py``), whose constructor reads ``use_llm_3drope``,
    ``audio_vocab_size`` and ``audio_id_shift`` and, with 3-D RoPE on, writes ``rope_scaling={"type": "mrope", ...}``."""
    raw = config.to_dict()
    rope = raw.pop("rope_parameters", None) or {}
    raw.pop("dtype", None)
    raw.update(rope_theta=float(rope.get("rope_theta", 1_000_000.0)), rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]},
               use_llm_3drope=True, audio_vocab_size=4099, audio_id_shift=151699, torch_dtype="float32", transformers_version="4.46.3",
               architectures=["Qwen2ForCausalLM"], model_type="qwen2")
    return raw


def _write_decoder(out: str | Path, transformer: str, transformer_kwargs: dict, vae: str, vae_kwargs: dict, seed: int) -> Path:
    """A diffusers pipeline folder's ``transformer/`` and ``vae/`` (the hub layout), from library class names."""
    import diffusers

    out = Path(out)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        getattr(diffusers, transformer)(**transformer_kwargs).save_pretrained(str(out / "transformer"))
        getattr(diffusers, vae)(**vae_kwargs).save_pretrained(str(out / "vae"))
    return out


def write_tiny_sana(out: str | Path, seed: int = 0, **overrides) -> Path:
    """A diffusers-format SANA folder at ``out``: ``transformer/`` and ``vae/`` (DC-AE), as the hub layout."""
    return _write_decoder(out, "SanaTransformer2DModel", {**TINY_SANA, **overrides}, "AutoencoderDC", TINY_DCAE, seed)


TINY_SD3 = dict(
    in_channels=4,
    out_channels=4,
    num_attention_heads=2,
    attention_head_dim=16,
    num_layers=2,
    joint_attention_dim=48,
    caption_projection_dim=32,
    pooled_projection_dim=16,
    sample_size=8,
    patch_size=2,
    pos_embed_max_size=8,
)

TINY_KL = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
    up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    block_out_channels=(16, 32),
    layers_per_block=1,
    norm_num_groups=8,
    scaling_factor=1.5305,  # SD3.5's
    shift_factor=0.0609,
)


def write_tiny_sd3(out: str | Path, seed: int = 0, **overrides) -> Path:
    """A diffusers-format SD3 folder at ``out``: ``transformer/`` (MMDiT) and ``vae/`` (AutoencoderKL), as the hub layout."""
    return _write_decoder(out, "SD3Transformer2DModel", {**TINY_SD3, **overrides}, "AutoencoderKL", TINY_KL, seed)


def write_tiny_clip(out: str | Path, seed: int = 0) -> Path:
    """A tiny random CLIP (model + tokenizer + image processor) in the layout of openai/clip-vit-large-patch14."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    out = Path(out)
    tok = write_tiny_tokenizer(out, corpus=["a photo of a red orange yellow green blue purple pink brown black white colored object"])
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         max_position_embeddings=64, eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8),
        projection_dim=16,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        CLIPModel(config).save_pretrained(str(out))
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(str(out))
    return out


def write_tiny_dino(out: str | Path, seed: int = 0) -> Path:
    """A tiny random ``ViTModel`` in the layout of facebook/dino-vits16 converted to transformers: 224-px input,
    16-px patches, no pooling layer (DINO's feature is the CLS token after the final layer norm,
    ``last_hidden_state[:, 0]``), safetensors."""
    from transformers import ViTConfig, ViTModel

    out = Path(out)
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=224, patch_size=16,
                       qkv_bias=True, layer_norm_eps=1e-6)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ViTModel(config, add_pooling_layer=False).save_pretrained(str(out), safe_serialization=True)
    return out


def write_tiny_mask2former(out: str | Path, num_labels: int = 80, seed: int = 0) -> Path:
    """A tiny random Mask2Former instance-segmentation model (Swin backbone) + its image processor."""
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessor, SwinConfig

    out = Path(out)
    backbone = SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=4,
                          out_features=["stage1", "stage2", "stage3", "stage4"])
    config = Mask2FormerConfig(backbone_config=backbone, feature_size=32, mask_feature_size=32, hidden_dim=32, encoder_feedforward_dim=64,
                               dim_feedforward=64, encoder_layers=1, decoder_layers=2, num_attention_heads=2, num_queries=12,
                               num_labels=num_labels, use_pretrained_backbone=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        Mask2FormerForUniversalSegmentation(config).save_pretrained(str(out))
    Mask2FormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 64}, size_divisor=32).save_pretrained(str(out))
    return out


def write_tiny_release(out: str | Path, hidden_size: int = 128, vision_out: int = 256, connector_hidden: int = 32, head_hidden: int = 64,
                       scales: tuple[int, ...] = (4, 8, 16), seed: int = 0) -> Path:
    """A tiny checkpoint in the released Ming-Lite-Uni layout (``mingexp.models.release``): same folder, file and key
    names, the same token protocol, tiny widths.

    The LM keeps the release's head_dim of 128 (one head of width 128), so upstream's hard-coded M-RoPE split
    (16, 24, 24) applies as it is; the vision merger outputs ``vision_out`` (the release: 8192, wider than the
    LM) and the projector maps it down; the query tokens and the caption MLP have the released shapes at these
    widths. What upstream's own code writes and reads, not mingexp's reading of it:

    * ``qwen2_5_llm/config.json`` as upstream's ``Qwen2ForCausalLM`` leaves it (:func:`upstream_lm_config`: the 3-D
      RoPE switch, the audio keys, ``rope_scaling`` of type ``mrope``), which stock transformers cannot read as is;
    * ``scheduler/`` a ``FlowMatchEulerDiscreteScheduler`` config with a non-default shift (3), which upstream's
      ``from_pretrained`` of that class honours;
    * SANA with ``sample_size`` 16 over a factor-32 DC-AE: 512-px native, so any other requested size goes through
      the resolution bins and a resize, as in upstream's pipeline.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler
    from safetensors.torch import save_file
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

    out = Path(out)
    g = torch.Generator().manual_seed(seed)
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=8, spatial_merge_size=2, temporal_patch_size=2,
                  window_size=32, fullatt_block_indexes=[1], out_hidden_size=vision_out, in_channels=3, hidden_act="silu", tokens_per_second=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # qwen2_5_vit/: the weights under the library's names, the config as upstream's class writes it
        Qwen2_5_VisionTransformerPretrainedModel(Qwen2_5_VLVisionConfig(**vision)).save_pretrained(str(out / "qwen2_5_vit"))
        (out / "qwen2_5_vit" / "config.json").write_text(json.dumps({**vision, "model_type": "qwen2_5_vit",
                                                                      "architectures": ["Qwen2_5_VisionTransformer"]}, indent=1))
        # qwen2_5_llm/: the base tokenizer (the release's tokens are added at load time) + a Qwen2 causal LM
        tok = write_tiny_tokenizer(out / "qwen2_5_llm")
        vocab = len(tok) + 64  # room for the 34 protocol tokens, as Qwen2.5's 152064 rows leave room
        lm_config = Qwen2Config(vocab_size=vocab, hidden_size=hidden_size, intermediate_size=hidden_size * 2, num_hidden_layers=2,
                                num_attention_heads=1, num_key_value_heads=1, tie_word_embeddings=False, rope_theta=1_000_000.0,
                                bos_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        Qwen2ForCausalLM(lm_config).save_pretrained(str(out / "qwen2_5_llm"))
        (out / "qwen2_5_llm" / "config.json").write_text(json.dumps(upstream_lm_config(lm_config), indent=1))
        write_tiny_qwen2(out / "connector", hidden_size=connector_hidden, seed=seed)
        # SANA's 16×16 latent grid over a factor-32 DC-AE: 512 px, as the release's
        _write_decoder(out, "SanaTransformer2DModel", {**TINY_SANA, "sample_size": 16}, "AutoencoderDC", TINY_DCAE_F32, seed)
    FlowMatchEulerDiscreteScheduler(shift=RELEASED_SCHEDULER_SHIFT).save_pretrained(str(out / "scheduler"))

    # mlp/model.safetensors: the glue, under the released key names (mingexp.io.release)
    def linear(name: str, n_in: int, n_out: int) -> dict[str, torch.Tensor]:
        return {f"{name}.weight": torch.randn(n_out, n_in, generator=g) / n_in**0.5, f"{name}.bias": torch.randn(n_out, generator=g) * 0.02}

    def unit_rows(n: int) -> torch.Tensor:
        x = torch.randn(n, hidden_size, generator=g)
        return x / x.norm(dim=-1, keepdim=True)

    caption = TINY_SANA["caption_channels"]
    glue = {**linear("linear_proj.0", vision_out, hidden_size), **linear("linear_proj.2", hidden_size, hidden_size),
            **linear("proj_in", hidden_size, connector_hidden), **linear("proj_out", connector_hidden, hidden_size),
            **{f"query_tokens_dict.{s}x{s}": unit_rows(s * s) for s in scales},
            **linear("mlp.fc1", hidden_size, head_hidden), **linear("mlp.fc2", head_hidden, caption)}
    for name, width in (("mlp.layer_norm1", head_hidden), ("mlp.layer_norm2", caption)):
        glue |= {f"{name}.weight": 1 + 0.1 * torch.randn(width, generator=g), f"{name}.bias": 0.1 * torch.randn(width, generator=g)}
    (out / "mlp").mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in glue.items()}, str(out / "mlp" / "model.safetensors"))
    return out


def write_all(out: str | Path) -> dict[str, Path]:
    """Every tiny checkpoint under ``out``: ``mllm/``, ``connector/``, ``sana/{transformer,vae}``, ``sd3/{transformer,vae}``,
    ``release/`` (the released Ming-Lite-Uni's layout), ``clip/`` and ``dino/`` (the MagicBrush metrics' encoders)."""
    out = Path(out)
    return {
        "mllm": write_tiny_mllm(out / "mllm"),
        "connector": write_tiny_qwen2(out / "connector"),
        "sana": write_tiny_sana(out / "sana"),
        "sd3": write_tiny_sd3(out / "sd3"),
        "release": write_tiny_release(out / "release"),
        "clip": write_tiny_clip(out / "clip"),
        "dino": write_tiny_dino(out / "dino"),
    }


def main(argv: list[str] | None = None) -> None:
    import sys

    from mingexp.cli_args import REQUIRED, Opt, parse

    spec = {"out": Opt(Path, REQUIRED, "the folder to write mllm/, connector/, sana/, sd3/, release/, clip/ and dino/ into", positional=True)}
    args = parse(sys.argv[1:] if argv is None else argv, spec, "models.tiny", __doc__.splitlines()[0])
    for name, path in write_all(args["out"]).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
