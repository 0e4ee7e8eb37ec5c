"""A run's folder as a model: the config beside a checkpoint, read as data, and the weights in it.

A run written by ``python -m mingexp.train`` keeps its composed config in ``<run>/.hydra/config.yaml`` and its
checkpoints in ``<run>/checkpoints/``. Evaluation, export, inference (``generate`` / ``chat`` / the demo on a
``.ckpt``) and the studies' probes rebuild the model from that config and load the checkpoint's model state (EMA
when present) through here; none of them reads either file itself.

A run folder may come from anyone, so its config is read as data (:mod:`mingexp.untrusted`): only mingexp's
builders, interpolations only to ``paths`` / ``seed`` / ``model`` keys, resolved against this machine's ``paths``,
and the loader flags (``trust_remote_code``, ``attn_implementation``) from the caller only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from mingexp.errors import ConfigError
from mingexp.io import checkpoint as io_checkpoint


def config_path(ckpt_path: str | Path) -> Path:
    """Where the run that wrote ``ckpt_path`` keeps its Hydra config: ``<run>/.hydra/config.yaml``."""
    return Path(ckpt_path).resolve().parent.parent / ".hydra" / "config.yaml"


def loader_flags(model: Mapping | None) -> dict[str, dict[str, Any]]:
    """The loader flags of the caller's own ``model`` config (command line): the only ones a saved config may use."""
    model = model or {}
    mllm, connector = model.get("mllm") or {}, model.get("connector") or {}
    return {
        "mllm": {"trust_remote_code": bool(mllm.get("trust_remote_code", False)), "attn_implementation": mllm.get("attn_implementation", "sdpa")},
        "connector": {"attn_implementation": connector.get("attn_implementation", "sdpa")},
    }


# --------------------------------------------------------------------- run configs from before the variant classes
Q, C, F = "mingexp.models.queries.", "mingexp.models.connector.", "mingexp.diffusion.flow."
OLD_OPTIONS = {  # the string switches of run configs written before commit cf5ca91, as the variant nodes they became
    ("queries", "grid_encoding"): {"sincos": {"_target_": Q + "SinCosGridEncoding"}, "none": {"_target_": Q + "NoGridEncoding"}},
    ("queries", "position_layout"): {"grid": {"_target_": Q + "GridPositions"}, "row": {"_target_": Q + "RowPositions"}},
    ("connector", "mode"): {"joint": {"_target_": C + "JointStack"}, "per_scale": {"_target_": C + "PerScaleStack"}},
    ("connector", "proj_out"): {"mlp": {"_target_": C + "MLPProjection", "_partial_": True},
                                "linear": {"_target_": C + "LinearProjection", "_partial_": True}},
    ("connector", "out_norm"): {"rms": {"_target_": C + "RMSOut", "_partial_": True, "eps": 1e-6},
                                "l2": {"_target_": C + "L2Norm", "_partial_": True},
                                "none": {"_target_": C + "NoOutputNorm", "_partial_": True}},
    ("cond_dropout", "null_condition"): {"empty_prompt": {"_target_": F + "EmptyPromptNull"}, "zeros": {"_target_": F + "ZerosNull"}},
}
NEW_KEYS = {("queries", "position_layout"): "positions", ("connector", "mode"): "stack"}


def upgrade_model_config(model: dict) -> tuple[dict, list[str]]:
    """A run's saved ``model`` section from before the variants were classes (commit cf5ca91: ``mode: joint``,
    ``dit_tokens: finest``, ``boundary: shared`` ...) as today's nodes, and what was changed; a current one unchanged.
    Pinned by tests/unit/test_io_run.py on a config the older code wrote; to be removed with run-config format 1.0."""
    import copy

    model, changed = copy.deepcopy(model), []
    for (part, key), choices in OLD_OPTIONS.items():
        node = model.get(part)
        if isinstance(node, dict) and isinstance(node.get(key), str) and node[key] in choices:
            new = dict(choices[node.pop(key)])
            if key == "grid_encoding":
                new["scale"] = node.pop("grid_encoding_scale", 1.0)
            node[NEW_KEYS.get((part, key), key)] = new
            changed.append(f"{part}.{key}")
    queries, connector, align = model.get("queries"), model.get("connector"), model.get("align")
    if isinstance(queries, dict) and isinstance(queries.get("boundary"), str):
        kind = {"per_scale": "PerScaleBoundary", "shared": "SharedBoundary"}[queries.pop("boundary")]
        queries["boundary"] = {"_target_": Q + kind, "trainable": queries.pop("boundary_trainable", True)}
        changed.append("queries.boundary")
    if isinstance(connector, dict):
        if isinstance(connector.get("in_norm"), str):
            momentum = connector.pop("in_norm_momentum", 0.01)
            connector["in_norm"] = ({"_target_": C + "RunningStandardize", "_partial_": True, "momentum": momentum}
                                    if connector["in_norm"] == "standardize" else {"_target_": C + "NoInputNorm", "_partial_": True})
            changed.append("connector.in_norm")
        if "dit_tokens" in connector:
            tokens = connector.pop("dit_tokens")
            connector["tokens"] = ({"_target_": C + "AllScales"} if tokens == "all" else {"_target_": C + "FinestScale"} if tokens == "finest"
                                   else {"_target_": C + "OneScale", "scale": int(tokens)})
            changed.append("connector.dit_tokens")
    if isinstance(align, dict) and str(align.get("_target_", "")).startswith("mingexp.models.align.") and \
            str(align["_target_"]).endswith("Alignment"):
        align["_target_"] += ".build"  # the reading's builder (weight 0: no head)
        changed.append("align._target_")
    return model, changed


def model_config(ckpt_path: str | Path | None, model: DictConfig, paths: DictConfig, seed: int = 0) -> dict:
    """The model config of ``ckpt_path``'s run when its config is beside it, else ``model`` (the caller's own).

    Args:
        ckpt_path: a run's checkpoint, or None (the caller's ``model`` as it stands).
        model: the caller's composed ``model`` node: the fallback, and the source of the loader flags.
        paths: this machine's ``paths`` node, against which the run's interpolations resolve.
        seed: the caller's seed, for ``${seed}`` in the run's config.
    """
    path = config_path(ckpt_path) if ckpt_path else None
    if path is None or not path.is_file():
        return OmegaConf.to_container(model, resolve=True)
    from mingexp.untrusted import trusted_model_config

    saved = OmegaConf.load(path)
    if not isinstance(saved, DictConfig) or not isinstance(saved.get("model"), DictConfig):
        raise ConfigError(f"{path}: no model section; pass model=... or remove the file.")

    def resolve(section: dict) -> dict:
        # only the checked model section, beside this machine's paths and seed: nothing else of the file is read
        here = OmegaConf.create({"model": section, "paths": OmegaConf.to_container(paths, resolve=False), "seed": seed})
        return OmegaConf.to_container(here.model, resolve=True)

    section, changed = upgrade_model_config(OmegaConf.to_container(saved.model, resolve=False))
    if changed:
        print(f"[mingexp] {path}: written before the variant classes; read {', '.join(changed)} as today's nodes.", flush=True)
    return trusted_model_config(section, str(path), loader_flags(model), resolve)


def load(config: Mapping, ckpt_path: str | Path | None = None):
    """The model built from ``config`` (``_target_`` s), with ``ckpt_path``'s model state (EMA weights when the
    checkpoint has them; any mismatch is an error naming it, :mod:`mingexp.io.checkpoint`), in eval mode."""
    from hydra.utils import instantiate

    if ckpt_path and not Path(str(ckpt_path)).is_file():
        raise ConfigError(f"ckpt_path={ckpt_path}: no such checkpoint file.")
    model = instantiate(dict(config))
    if ckpt_path:
        io_checkpoint.load_into(model, ckpt_path)
    return model.eval()


def load_checkpoint(ckpt_path: str | Path, model_overrides: Mapping[str, Any] | None = None):
    """``(model, config)`` of a run checkpoint, for a caller without a Hydra config of its own (``generate``, ``chat``,
    the demo): this machine's ``paths`` come from the package's configs, the loader flags from ``model_overrides``
    (``{"mllm.trust_remote_code": False, "mllm.path": ...}``: dotted keys under ``model``)."""
    from hydra import compose, initialize_config_module

    overrides = [f"model.{k}={v}" if not isinstance(v, bool) else f"model.{k}={str(v).lower()}"
                 for k, v in (model_overrides or {}).items() if v is not None]
    with initialize_config_module(config_module="mingexp.conf", version_base="1.3"):
        cfg = compose("export", overrides=[f"ckpt_path={Path(ckpt_path).resolve()}", "out=unused", *overrides])
    config = model_config(cfg.ckpt_path, cfg.model, cfg.paths, int(cfg.seed))
    mllm_path = (model_overrides or {}).get("mllm.path")
    if mllm_path:
        config["mllm"]["path"] = str(mllm_path)  # the user's own MLLM folder wins over the run's
    return load(config, cfg.ckpt_path), config
