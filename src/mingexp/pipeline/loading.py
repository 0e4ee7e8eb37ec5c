"""A model for inference from what a user has: an export folder, or a run's checkpoint.

``generate``, ``chat`` and the demo take either (``model=<folder or .ckpt>``): an export folder is read by
:meth:`MingUniPipeline.from_pretrained`; a ``.ckpt`` is rebuilt from its run's config beside it and its trained
(EMA when present) weights, exactly as ``python -m mingexp.export`` does before it writes a folder.
"""

from __future__ import annotations

from pathlib import Path


def load_pipeline(model: str, device: str = "cpu", dtype: str | None = None, mllm_path: str | None = None,
                  trust_remote_code: bool = False, attn_implementation: str = "sdpa"):
    """An export folder, or a run checkpoint (``.ckpt``), as a :class:`~mingexp.pipeline.MingUniPipeline`. Anything else
    is an :class:`~mingexp.pipeline.InputError` naming the path and what to pass."""
    from mingexp.pipeline import InputError, MingUniPipeline

    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".ckpt":
        from mingexp.io.run import load_checkpoint

        model, config = load_checkpoint(path, {"mllm.trust_remote_code": trust_remote_code, "mllm.attn_implementation": attn_implementation,
                                               "mllm.path": mllm_path})
        return MingUniPipeline(model, config).to(device, dtype)
    if not path.is_dir():
        raise InputError(f"model={model}: no such folder or .ckpt file. Pass an export (python -m mingexp.export ...) or a run's "
                         "checkpoints/last.ckpt.")
    return MingUniPipeline.from_pretrained(path, device=device, dtype=dtype, mllm_path=mllm_path, trust_remote_code=trust_remote_code,
                                           attn_implementation=attn_implementation)
