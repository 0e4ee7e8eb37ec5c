"""The released folder's parts (:func:`release_part`, :func:`vision_config`) and its ``mlp/model.safetensors``: every
key, where it lands, and the strict load.

Upstream loads this file non-strictly, piece by piece (``MingUniInference.load_from_huggingface`` and
``sana_loss.SanaModel_withMLP``), so a missing or misnamed key goes unnoticed. Here every key has one place
in the :class:`~mingexp.models.unified.UnifiedModel` (:func:`key_map`), a key the model needs but the file
lacks is named, and a shape that differs names both. Two kinds of other keys:

* ``sana.*``: upstream's non-strict load into ``SanaModel_withMLP`` (whose ``.sana`` is the transformer) would
  put them over the transformer's weights from ``transformer/``. They do the same here, each checked to name a
  transformer tensor of the same shape, and the number that replaced the folder's is printed;
* anything else: refused by name (upstream would ignore it; here nothing in the file goes unused unsaid).

The known keys::

    linear_proj.{0,2}.*           [3584, 8192], [3584, 3584]  mllm …visual.projector.{0,2}.*   (vision projector, GELU between)
    proj_in.*                     [896, 3584]                 connector.proj_in.*
    proj_out.*                    [3584, 896]                 connector.proj_out.*              (one Linear, then L2 norm)
    query_tokens_dict.{s}x{s}     [s², 3584], s = 4, 8, 16    queries.queries.{k}               (k: the scale's index)
    mlp.{fc1,layer_norm1,fc2,layer_norm2}.*  3584 → 2048 → 2304  dit.mlp.*                       (into SANA's caption projection)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
from mingexp.errors import ConfigError
from mingexp.io.tensors import read_tensors
from mingexp.models.unified import UnifiedModel, build_model

MLP_FILE = "mlp/model.safetensors"
# The released folder's parts and what each holds (named when one is missing).
PARTS = {
    "qwen2_5_vit": "the Qwen2.5 vision transformer",
    "qwen2_5_llm": "the tokenizer and the Qwen2 language model",
    "connector": "the connector's Qwen2 stack",
    "mlp": "mlp/model.safetensors (projector, queries, connector projections, the MLP into SANA)",
    "transformer": "the SANA transformer",
    "vae": "the DC-AE",
}
DOWNLOAD = "huggingface-cli download inclusionAI/Ming-Lite-Uni --local-dir <folder>"
VISION_PROJECTOR = "mllm.model.model.visual.projector"  # FrozenMLLM → Qwen2.5-VL model → its vision tower (release/mllm.py)
HEAD_LAYERS = ("fc1", "layer_norm1", "fc2", "layer_norm2")
TRANSFORMER_GROUP = "sana."  # upstream's SanaModel_withMLP.sana: these keys override the transformer's weights
TRANSFORMER = "dit.transformer."


def release_part(path: str | Path, part: str, key: str = "model.path") -> Path:
    """``<path>/<part>`` of a released folder, or an error naming the sub-folder it needs."""
    folder = Path(str(path)).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"{key}={path}: no such folder. Download the release: {DOWNLOAD}.")
    target = folder / (MLP_FILE if part == "mlp" else part)
    if not target.exists():
        raise ConfigError(f"{key}={path} has no {target.relative_to(folder)} ({PARTS[part]}): it is not the released "
                          f"Ming-Lite-Uni folder, or the download is incomplete ({DOWNLOAD}).")
    return target


def key_map(scales: Sequence[int]) -> dict[str, str]:
    """Every key of ``mlp/model.safetensors`` → the model's parameter it fills (module docstring)."""
    keys = {f"linear_proj.{i}.{p}": f"{VISION_PROJECTOR}.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")}
    keys |= {f"{proj}.{p}": f"connector.{proj}.{p}" for proj in ("proj_in", "proj_out") for p in ("weight", "bias")}
    keys |= {f"query_tokens_dict.{s}x{s}": f"queries.queries.{k}" for k, s in enumerate(scales)}
    keys |= {f"mlp.{layer}.{p}": f"dit.mlp.{layer}.{p}" for layer in HEAD_LAYERS for p in ("weight", "bias")}
    return keys


def read_prefixed(file: str | Path, prefix: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file whose keys start with ``prefix`` (kept), reading only those; errors name
    the file."""
    return read_tensors(file, prefix, fix=f"Download the release again ({DOWNLOAD}).")


def read_group(path: str | Path, prefix: str) -> dict[str, torch.Tensor]:
    """The tensors of ``mlp/model.safetensors`` under ``prefix`` (stripped), e.g. ``linear_proj.`` for the MLLM."""
    return {k.removeprefix(prefix): v for k, v in read_prefixed(release_part(path, "mlp"), prefix).items()}


def vision_config(path: str | Path):
    """``qwen2_5_vit/config.json`` (upstream's ``qwen2_5_vit`` model type; a ``vision_config`` nesting accepted) as
    transformers' Qwen2.5-VL vision config: read by the MLLM (the tower) and the processor (patch geometry)."""
    from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig

    raw = json.loads((release_part(path, "qwen2_5_vit") / "config.json").read_text())
    raw = raw.get("vision_config", raw)
    fields = set(Qwen2_5_VLVisionConfig().to_dict()) - {"model_type", "architectures", "transformers_version"}
    return Qwen2_5_VLVisionConfig(**{k: v for k, v in raw.items() if k in fields})


def released_state(path: str | Path, model: torch.nn.Module, scales: Sequence[int]) -> dict[str, torch.Tensor]:
    """``mlp/model.safetensors`` renamed to ``model``'s keys, after checking names and shapes both ways."""
    file = release_part(path, "mlp")
    released = read_tensors(file, fix=f"Download the release again ({DOWNLOAD}).")
    table = key_map(scales)
    overrides = {k: TRANSFORMER + k.removeprefix(TRANSFORMER_GROUP) for k in released if k.startswith(TRANSFORMER_GROUP)}
    unknown = sorted(set(released) - set(table) - set(overrides))
    missing = sorted(set(table) - set(released))
    if unknown or missing:
        raise ConfigError(f"{file}: " + "; ".join(filter(None, [
            f"unknown key(s) {unknown} (no part of the model takes them; upstream's non-strict load would drop them unsaid)" if unknown else "",
            f"missing key(s) {missing}" if missing else "",
        ])) + f". The released file holds exactly {sorted(table)} for model.queries.scales={list(scales)} (and optionally "
              f"{TRANSFORMER_GROUP}* transformer tensors).")
    own = model.state_dict()
    places = {**table, **overrides}
    absent = sorted(f"{k} → {v}" for k, v in places.items() if v not in own)
    if absent:
        raise ConfigError(f"{file}: the model has no place for {absent[:6]}; build it with the release preset (model=ming_lite_uni_release).")
    wrong = [f"{k} is {list(released[k].shape)} but {v} is {list(own[v].shape)}" for k, v in places.items() if released[k].shape != own[v].shape]
    if wrong:
        raise ConfigError(f"{file}: shapes differ: {'; '.join(wrong[:6])}. Point model.path and the parts at one release.")
    if overrides:
        print(f"[mingexp] {file}: {len(overrides)} {TRANSFORMER_GROUP}* tensor(s) replace the transformer's from transformer/ "
              "(as upstream's non-strict load of this file does).", flush=True)
    return {v: released[k] for k, v in places.items()}


def build_released(path: str, **parts: Any) -> UnifiedModel:
    """``build_model`` on the released parts, then every key of ``mlp/model.safetensors`` loaded into its place.

    ``path``: the released folder (``model.path``); the parts' configs point into it. The MLLM's projector and
    the denoiser's head already read their keys when they were built (each part stands alone, e.g. in an export
    that references this MLLM); loading them again here is what checks that the whole file is consumed.
    """
    model = build_model(**parts)
    model.load_state_dict(released_state(path, model, model.queries.scales), strict=False)  # names and shapes checked there
    return model
