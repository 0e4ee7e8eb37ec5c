"""The public checkpoints' configs shipped with mingexp (``mingexp/public_configs/``), and random-weight checkpoints
built from them, at their real widths, with every block stack cut to a chosen depth.

The real presets (``model=ming_lite_uni``, its SD3.5 variant) load Qwen2.5-VL-7B-Instruct, Qwen2.5-0.5B,
SANA-1.6B-512px with its DC-AE, or SD3.5-medium with its VAE, by path. Where those folders are not on the machine,
:func:`write_random` writes a stand-in in the same library format (``save_pretrained``, safetensors, bf16 as the
public files are) from the published config: the same widths, vocabularies and geometry, random weights, stacks
cut to ``depth`` blocks. ``python -m mingexp.doctor`` builds and steps the preset from them;
``benchmarks/finetune_memory.py`` counts the same configs on the meta device. Each file's provenance is in
``public_configs/SOURCES.md``.

The MLLM stand-in carries a small tokenizer (``models.tiny``'s, with Qwen's special tokens and chat template) whose
special-token ids replace the published ones in its config (the vocabulary size stays 152 064): the token ids
are data, the widths are what is being checked.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mingexp.errors import ConfigError

DONE = ".mingexp-public-complete"  # written last: a folder without it is rewritten


@dataclass(frozen=True)
class PublicPart:
    """One public checkpoint folder: its config file here and its kind (the library class that reads it)."""

    file: str
    kind: str  # qwen2_5_vl | qwen2 | sana | dcae | sd3 | kl


# A part's folder, as the presets name it (paths.checkpoints_dir/<folder>[/<subfolder>]) → its config
PUBLIC: dict[str, PublicPart] = {
    "Qwen2.5-VL-7B-Instruct": PublicPart("Qwen2.5-VL-7B-Instruct.config.json", "qwen2_5_vl"),
    "Qwen2.5-0.5B": PublicPart("Qwen2.5-0.5B.config.json", "qwen2"),
    "Sana_1600M_512px_diffusers/transformer": PublicPart("Sana_1600M_512px.transformer.config.json", "sana"),
    "Sana_1600M_512px_diffusers/vae": PublicPart("Sana_1600M_512px.vae.config.json", "dcae"),
    "stable-diffusion-3.5-medium/transformer": PublicPart("stable-diffusion-3.5-medium.transformer.config.json", "sd3"),
    "stable-diffusion-3.5-medium/vae": PublicPart("stable-diffusion-3.5-medium.vae.config.json", "kl"),
}
CUT = {"qwen2_5_vl": True, "qwen2": True, "sana": True, "sd3": True, "dcae": False, "kl": False}  # autoencoders stay whole


def key(path: str | Path, subfolder: str | None = None) -> str:
    """The :data:`PUBLIC` key of a part's folder (``<name>`` or ``<name>/<subfolder>``)."""
    return f"{Path(str(path)).name}/{subfolder}" if subfolder else Path(str(path)).name


def public_config(name: str) -> dict[str, Any]:
    """The published config of :data:`PUBLIC` ``[name]``, as a dict."""
    if name not in PUBLIC:
        raise ConfigError(f"{name}: no public config shipped with mingexp; known: {sorted(PUBLIC)}.")
    text = resources.files("mingexp").joinpath("public_configs", PUBLIC[name].file).read_text()
    return json.loads(text)


def full_depth(name: str) -> int:
    """Blocks in the part's main stack at its published depth (0 for an autoencoder)."""
    cfg, kind = public_config(name), PUBLIC[name].kind
    if kind in ("qwen2_5_vl", "qwen2"):
        return int(cfg["num_hidden_layers"])
    return int(cfg["num_layers"]) if kind in ("sana", "sd3") else 0


def cut_config(name: str, depth: int | None) -> dict[str, Any]:
    """The published config with every block stack cut to ``depth`` (None: as published)."""
    cfg, kind = copy.deepcopy(public_config(name)), PUBLIC[name].kind
    if depth is None or not CUT[kind]:
        return cfg
    depth = int(depth)
    if kind == "qwen2_5_vl":
        cfg["num_hidden_layers"] = depth
        vision = cfg["vision_config"]
        vision["depth"] = min(depth, vision["depth"])
        vision["fullatt_block_indexes"] = [i for i in vision.get("fullatt_block_indexes", []) if i < vision["depth"]] or [vision["depth"] - 1]
        cfg["max_window_layers"] = min(cfg.get("max_window_layers", depth), depth)
    elif kind == "qwen2":
        cfg["num_hidden_layers"] = depth
        cfg["max_window_layers"] = min(cfg.get("max_window_layers", depth), depth)
    elif kind in ("sana", "sd3"):
        cfg["num_layers"] = depth
        if kind == "sd3" and cfg.get("dual_attention_layers"):
            cfg["dual_attention_layers"] = [i for i in cfg["dual_attention_layers"] if i < depth]
    return cfg


def _library_model(kind: str, cfg: dict[str, Any]) -> nn.Module:
    import diffusers
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2Config, Qwen2ForCausalLM

    if kind == "qwen2_5_vl":
        return Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**cfg))
    if kind == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**cfg))
    cls = {"sana": "SanaTransformer2DModel", "dcae": "AutoencoderDC", "sd3": "SD3Transformer2DModel", "kl": "AutoencoderKL"}[kind]
    return getattr(diffusers, cls).from_config({k: v for k, v in cfg.items() if not k.startswith("_")})


def parameter_count(name: str, depth: int | None = None, exclude: tuple[str, ...] = ()) -> int:
    """Parameters of the part at ``depth`` (None: as published), counted on the meta device (no memory); those whose
    name holds one of ``exclude`` left out (e.g. a causal LM's ``embed_tokens`` / ``lm_head`` for a connector fed
    embeddings)."""
    with torch.device("meta"):
        model = _library_model(PUBLIC[name].kind, cut_config(name, depth))
    return sum(p.numel() for n, p in model.named_parameters() if not any(e in n for e in exclude))


def _digest(cfg: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]


def write_random(name: str, out: str | Path, depth: int | None, dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> Path:
    """A random-weight checkpoint of ``name`` at ``out`` in its library's format, stacks cut to ``depth``; reused
    when ``out`` already holds the same one (its config's digest in :data:`DONE`)."""
    from mingexp.models.tiny import write_tiny_tokenizer

    out = Path(out)
    kind, cfg = PUBLIC[name].kind, cut_config(name, depth)
    digest = _digest({**cfg, "_dtype": str(dtype), "_seed": seed})
    if (out / DONE).is_file() and (out / DONE).read_text() == digest:
        return out
    out.mkdir(parents=True, exist_ok=True)
    if kind == "qwen2_5_vl":
        from transformers import Qwen2VLImageProcessorPil

        tok = write_tiny_tokenizer(out)
        ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>",
                                                          "<|endoftext|>", "<|im_end|>")}
        cfg.update(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                   vision_end_token_id=ids["<|vision_end|>"], bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"])
        cfg.pop("vision_token_id", None)
        vision = cfg["vision_config"]
        # the published preprocessor_config.json's geometry (Qwen2.5-VL: 14-px patches, 2×2 merge, CLIP mean / std)
        Qwen2VLImageProcessorPil(patch_size=vision["patch_size"], merge_size=vision["spatial_merge_size"],
                                 temporal_patch_size=vision["temporal_patch_size"], min_pixels=3136, max_pixels=12845056).save_pretrained(str(out))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _library_model(kind, cfg).to(dtype)
    if kind == "qwen2_5_vl":
        model.generation_config.eos_token_id = cfg["eos_token_id"]
        model.generation_config.pad_token_id = cfg["bos_token_id"]
    model.save_pretrained(str(out))
    (out / DONE).write_text(digest)
    return out
