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

    return trusted_model_config(OmegaConf.to_container(saved.model, resolve=False), str(path), loader_flags(model), resolve)


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
