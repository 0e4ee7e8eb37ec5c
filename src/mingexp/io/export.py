"""The export folder: the one place that writes and reads it (``MingUniPipeline.save_pretrained`` / ``from_pretrained``,
``python -m mingexp.export``, ``generate``, ``chat``, the demo all come here).

Layout (format version 3), the sum of the parts' own folders plus one small JSON::

    mingexp_pipeline.json   format, version, the MLLM reference, the non-weight parts' configs (flow, sampler,
                            condition dropout), and which folder holds each trained part
    queries/                queries.json + model.safetensors          (MultiScaleQueries.save_pretrained)
    connector/              config.json (the Qwen2 stack's) + connector.json + model.safetensors   (Connector)
    align/                  align.json + model.safetensors, when the model has a head (unused at inference)
    transformer/            the denoiser's library folder (+ adapter.safetensors, + lora/ for a separate LoRA export)
    vae/                    the codec's library folder (absent for a pixel-space toy model)
    scheduler/              the sampler's FlowMatchEulerDiscreteScheduler config (what it samples with)
    mllm/                   the frozen MLLM, only when copied (default: referenced by absolute path)

No pickle anywhere. Reading treats every file as data from a stranger (:mod:`mingexp.untrusted`: the index's and each
part's ``_target_``s must be mingexp's builders at their place, no interpolation, the loader flags such as
``trust_remote_code`` from the caller only), and every tensor loads exactly. The model is assembled by the same
``build_model`` as training, from the parts built here. A folder of another format version is refused, naming the fix.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import shutil
from pathlib import Path
from typing import Any

from mingexp.errors import InputError

FORMAT = "mingexp-pipeline"
FORMAT_VERSION = 3  # 2: the denoiser behind its adapter, parts as Hydra partials in the index, the processor node;
#                     3: each trained part in its own folder (save_pretrained / from_pretrained), variants as classes,
#                        the sampler from scheduler/
INDEX = "mingexp_pipeline.json"
PART_FOLDERS = {"queries": "queries", "connector": "connector", "align": "align"}
NEEDED = ["queries/queries.json", "queries/model.safetensors", "connector/config.json", "connector/connector.json",
          "connector/model.safetensors", "transformer/config.json", "scheduler/scheduler_config.json"]


def index_model_config(config: dict[str, Any]) -> dict[str, Any]:
    """The index's model section from a training config: ``build_model``'s non-weight arguments (the root builder is
    always ``build_model``: a released folder's glue weights live in the parts' folders now)."""
    from mingexp.models.unified import build_model

    params = inspect.signature(build_model).parameters
    kept = {k: copy.deepcopy(v) for k, v in config.items() if (k in params or k == "_convert_") and k not in PART_FOLDERS}
    return {"_target_": f"{build_model.__module__}.{build_model.__qualname__}", **kept}


def _atomic_json(path: Path, value: Any) -> None:
    from mingexp.io.records import temp_beside

    fd, tmp = temp_beside(path)
    with os.fdopen(fd, "w") as f:
        json.dump(value, f, indent=1)
    os.replace(tmp, path)


def write(model, config: dict[str, Any], out: str | Path, copy_mllm: bool = False, lora: str = "merged", progress: bool = False) -> Path:
    """Write ``model`` (built from ``config``) as an export folder at ``out``.

    ``lora``: a LoRA-tuned DiT is written ``merged`` (the updates folded in: a plain model) or ``separate`` (its base
    weights plus peft's adapter in ``transformer/lora/``, re-attached at load); LoRA on the connector is always folded in.
    """
    from tqdm import tqdm

    from mingexp.models.lora import has_lora, without_lora

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=5 + bool(copy_mllm), desc=f"export → {out.name}", unit=" part", disable=not progress)

    def done(part: str) -> None:
        bar.set_postfix_str(part)
        bar.update(1)

    cfg = index_model_config(config)
    # 1. the trained parts, each in its own folder (a LoRA connector folded in)
    model.queries.save_pretrained(out / "queries")
    connector = without_lora(model.connector) if has_lora(model.connector) else model.connector
    connector.save_pretrained(out / "connector")
    if model.align is not None:
        from mingexp.models.align.base import save_alignment

        save_alignment(model.align, out / "align")
    cfg.update(queries=PART_FOLDERS["queries"], connector=PART_FOLDERS["connector"],
               align=PART_FOLDERS["align"] if model.align is not None else None)
    done("queries, connector, align")
    # 2. the denoiser and the codec in their libraries' formats, the sampler's scheduler
    model.dit.save_pretrained(out / "transformer", lora=lora)
    cfg["dit"] = model.dit.export_config("transformer")
    done("transformer")
    model.vae.save_pretrained(out / "vae")
    cfg["vae"] = model.vae.export_config("vae")
    done("vae")
    model.sampler.scheduler().save_pretrained(str(out / "scheduler"))
    cfg["sampler"] = {**cfg["sampler"], "scheduler": "scheduler", "shift": None, "num_train_timesteps": None}
    done("scheduler")
    if isinstance(cfg.get("lora"), dict):
        cfg["lora"] = None if lora == "merged" or not has_lora(model.dit.transformer) else {**cfg["lora"], "connector": None}
    # 3. the frozen MLLM: referenced by absolute path (the folder works from any working directory) or copied
    mllm_source = str(cfg["mllm"]["path"])
    if Path(mllm_source).expanduser().is_dir():
        mllm_source = str(Path(mllm_source).expanduser().resolve())
        cfg["mllm"]["path"] = mllm_source
    if copy_mllm:
        target = out / "mllm"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(mllm_source, target)
        cfg["mllm"]["path"] = "mllm"
        done("mllm")
    index = {"format": FORMAT, "version": FORMAT_VERSION, "mllm_source": mllm_source, "mllm_copied": bool(copy_mllm), "model": cfg}
    _atomic_json(out / INDEX, index)  # the index last: a folder without it is visibly incomplete
    done(INDEX)
    bar.close()
    return out


def read_index(folder: str | Path) -> dict:
    """The folder's index, checked for format, version and completeness (an error names what is wrong and the fix)."""
    folder = Path(folder)
    path = folder / INDEX
    if not path.is_file():
        raise InputError(f"{folder}: no {INDEX}; not a mingexp pipeline folder (or an interrupted export: run `python -m mingexp.export` again).")
    try:
        index = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise InputError(f"{path}: not valid JSON ({e}); re-export the checkpoint.") from None
    if not isinstance(index, dict) or not isinstance(index.get("model"), dict):
        raise InputError(f"{path}: no 'model' mapping; not a mingexp pipeline index (re-export the checkpoint).")
    if index.get("format") != FORMAT:
        raise InputError(f"{path}: format {index.get('format')!r}, expected {FORMAT!r}.")
    if index.get("version") != FORMAT_VERSION:
        raise InputError(f"{path}: format version {index.get('version')} but this mingexp reads version {FORMAT_VERSION}; re-export the "
                         "run's checkpoint with this version (python -m mingexp.export ckpt_path=<run>/checkpoints/last.ckpt out=...).")
    model = index["model"]
    for section in ("mllm", "dit", "vae", "sampler"):
        if not isinstance(model.get(section), dict):
            raise InputError(f"{path}: model.{section} is missing or not a mapping; re-export the checkpoint.")
    needed = list(NEEDED)
    if model.get("align"):
        needed += ["align/align.json", "align/model.safetensors"]
    if "path" in model["vae"]:
        needed.append("vae/config.json")
    missing = [n for n in needed if not (folder / n).is_file()]
    if missing:
        raise InputError(f"{folder}: incomplete pipeline folder, missing {missing}; re-export it.")
    return index


def load(folder: str | Path, mllm_path: str | None = None, trust_remote_code: bool = False, attn_implementation: str = "sdpa"):
    """``(model, config)`` from an export folder: the index and each part's config checked as data, the parts built from
    their folders, the model assembled by ``build_model``, every tensor loaded exactly."""
    from hydra.utils import instantiate

    from mingexp.io.tensors import read_tensors
    from mingexp.models.align.base import load_alignment
    from mingexp.models.connector import Connector
    from mingexp.models.denoisers.base import LORA_FOLDER
    from mingexp.models.lora import has_lora, load_adapter_state_dict
    from mingexp.models.queries import MultiScaleQueries
    from mingexp.models.unified import build_model
    from mingexp.untrusted import trusted_model_config

    folder = Path(folder).resolve()
    index = read_index(folder)
    flags = {"mllm": {"trust_remote_code": bool(trust_remote_code), "attn_implementation": attn_implementation},
             "connector": {"attn_implementation": attn_implementation}}
    cfg = trusted_model_config(index["model"], str(folder / INDEX), flags)
    resolved = copy.deepcopy(cfg)
    # the weights of the trained parts are this folder's, whatever paths the JSON names
    resolved["dit"]["path"] = str(folder)
    if "path" in resolved["vae"]:
        resolved["vae"]["path"] = str(folder)
    resolved["sampler"]["scheduler"] = str(folder / "scheduler")
    mllm = mllm_path or resolved["mllm"]["path"]
    resolved["mllm"]["path"] = str(folder / mllm) if index.get("mllm_copied") and not mllm_path else mllm
    if not Path(resolved["mllm"]["path"]).is_dir():
        raise InputError(f"{folder}: the MLLM it references ({resolved['mllm']['path']}) is not on this machine; pass mllm_path=... "
                         "(or export with copy_mllm=true).")
    parts = {k: instantiate(v) for k, v in resolved.items() if isinstance(v, dict) and "_target_" in v}
    model = build_model(**parts, queries=MultiScaleQueries.from_pretrained(folder / PART_FOLDERS["queries"]),
                        connector=Connector.from_pretrained(folder / PART_FOLDERS["connector"], attn_implementation=attn_implementation),
                        align=load_alignment(folder / PART_FOLDERS["align"]) if resolved.get("align") else None,
                        seed=int(resolved.get("seed", 0)))
    if has_lora(model.dit.transformer):  # a separate LoRA export: its adapter back on the base (never a fresh one)
        adapter = folder / "transformer" / LORA_FOLDER / "adapter_model.safetensors"
        if not adapter.is_file():
            raise InputError(f"{folder}: the model config has LoRA on the DiT but {adapter} is missing; re-export it.")
        load_adapter_state_dict(model.dit.transformer, read_tensors(adapter), str(adapter))
    if index["model"]["mllm"]["path"] != resolved["mllm"]["path"] and not index.get("mllm_copied"):
        cfg["mllm"]["path"] = resolved["mllm"]["path"]
    return model, cfg
