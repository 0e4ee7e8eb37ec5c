"""Model configs read from folders someone else wrote are data, never code.

An export's ``mingexp_pipeline.json`` and a run's ``<run>/.hydra/config.yaml`` describe the model with Hydra
``_target_`` s. Instantiated as they stand, they would call whatever they name: ``torch.load`` of a pickle
shipped in the folder (the interpolation ``${dit.path}`` points into it), ``builtins.open(..., "w")``,
``numpy.load(allow_pickle=True)``. :func:`trusted_model_config` turns such a config into one that builds
mingexp's own model parts and nothing else, or refuses it with one error naming the key:

1. every ``_target_`` must be one of mingexp's builders *at its place* in the model tree
   (:data:`ALLOWED_TARGETS`: a fixed set, or for the denoiser and the alignment every adapter class of their
   package); ``_partial_: true`` only where the model builder completes a part (:data:`PARTIAL_PLACES`); any
   other Hydra key (``_args_``, ``_recursive_``) is refused;
2. interpolations: none in an export (mingexp writes resolved values); in a run config only references to
   ``paths.*``, ``seed`` and ``model.*`` (which the caller resolves against *this* machine's paths), never a
   resolver (``oc.env``, ``oc.decode``, ...); after resolution no ``${`` may remain;
3. loader flags (:data:`LOADER_FLAGS`: ``trust_remote_code``, ``attn_implementation``, which decide what
   loading may execute or fetch) come from the caller, i.e. the user's command line, never from the folder:
   the folder's values are replaced, and a folder asking for ``trust_remote_code: true`` the caller did not
   give is refused.

Weights are never a concern here: every part loads safetensors (or ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import copy
import importlib
import inspect
import pkgutil
import re
from typing import Any, Callable, Mapping

from mingexp.errors import UnsafeConfigError


def adapter_targets(package: str, base: str, entry: str = "") -> frozenset[str]:
    """The ``_target_`` of every subclass of ``base`` defined in ``package``'s modules (``entry``: a classmethod
    that builds it, e.g. ``build``). A new adapter file in the package is allowed without editing this module."""
    module_name, _, class_name = base.rpartition(".")
    root = getattr(importlib.import_module(module_name), class_name)
    found = set()
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        module = importlib.import_module(f"{package}.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, root) and cls is not root and cls.__module__ == module.__name__:
                found.add(f"{cls.__module__}.{cls.__qualname__}" + (f".{entry}" if entry else ""))
    return frozenset(found)


# Where in the model tree each builder may appear ("" is the root): a fixed set, or a function listing a
# package's adapters (a new decoder or alignment reading is a new file there, nothing to add here).
# tests/unit/test_untrusted.py checks every shipped preset against this table.
ALLOWED_TARGETS: dict[str, frozenset[str] | Callable[[], frozenset[str]]] = {
    "": frozenset({"mingexp.models.unified.build_model", "mingexp.io.release.build_released"}),
    "mllm": frozenset({"mingexp.models.mllm.FrozenMLLM.from_pretrained", "mingexp.models.release.mllm.load_released_mllm"}),
    "mllm.processor": frozenset({"mingexp.models.processor.MLLMProcessor.from_pretrained",
                                 "mingexp.models.release.processor.ReleasedProcessor.from_pretrained"}),
    "queries": frozenset({"mingexp.models.queries.MultiScaleQueries"}),
    "queries.boundary": frozenset({"mingexp.models.queries.PerScaleBoundary", "mingexp.models.queries.SharedBoundary"}),
    "queries.grid_encoding": frozenset({"mingexp.models.queries.SinCosGridEncoding", "mingexp.models.queries.NoGridEncoding"}),
    "queries.positions": frozenset({"mingexp.models.queries.GridPositions", "mingexp.models.queries.RowPositions"}),
    "connector": frozenset({"mingexp.models.connector.Connector.build"}),
    "connector.in_norm": frozenset({"mingexp.models.connector.NoInputNorm", "mingexp.models.connector.RunningStandardize"}),
    "connector.stack": frozenset({"mingexp.models.connector.JointStack", "mingexp.models.connector.PerScaleStack"}),
    "connector.tokens": frozenset({"mingexp.models.connector.AllScales", "mingexp.models.connector.FinestScale",
                                   "mingexp.models.connector.OneScale"}),
    "connector.proj_out": frozenset({"mingexp.models.connector.MLPProjection", "mingexp.models.connector.LinearProjection"}),
    "connector.out_norm": frozenset({"mingexp.models.connector.RMSOut", "mingexp.models.connector.L2Norm",
                                     "mingexp.models.connector.NoOutputNorm"}),
    "dit": lambda: adapter_targets("mingexp.models.denoisers", "mingexp.models.denoisers.base.Denoiser", "build"),
    "align": lambda: adapter_targets("mingexp.models.align", "mingexp.models.align.base.Alignment", "build"),
    "vae": frozenset({"mingexp.models.vae.DCAE.from_pretrained", "mingexp.models.vae.KLVAE.from_pretrained", "mingexp.models.vae.PixelSpace"}),
    "flow": frozenset({"mingexp.diffusion.flow.FlowMatching"}),
    "sampler": frozenset({"mingexp.diffusion.sampler.FlowSampler"}),
    "cond_dropout": frozenset({"mingexp.diffusion.flow.ConditionDropout"}),
    "cond_dropout.null_condition": frozenset({"mingexp.diffusion.flow.EmptyPromptNull", "mingexp.diffusion.flow.ZerosNull"}),
    "cond_cache": frozenset({"mingexp.models.cond_cache.PromptStateCache"}),
    # a part's own folder (mingexp.io.part_folder): a saved alignment head names its reading's class
    "align.saved": lambda: adapter_targets("mingexp.models.align", "mingexp.models.align.base.Alignment"),
    "lora": frozenset({"mingexp.models.lora.LoRA"}),
}
# Hydra keys a folder may carry besides _target_ (_convert_ only changes how arguments are passed).
ALLOWED_HYDRA_KEYS = frozenset({"_target_", "_convert_"})
# Parts the model builder completes with the loaded widths: Hydra hands them over as partials.
PARTIAL_PLACES = frozenset({"queries", "connector", "align", "mllm.processor", "connector.in_norm", "connector.proj_out",
                            "connector.out_norm"})


def _allowed(place: str) -> frozenset[str]:
    allowed = ALLOWED_TARGETS.get(place, frozenset())
    return allowed() if callable(allowed) else allowed
# Flags that decide what loading may execute or download, per section, with their safe defaults. The caller
# passes them (command line: trust_remote_code=true, model.mllm.attn_implementation=...); the folder cannot.
LOADER_FLAGS: dict[str, dict[str, Any]] = {
    "mllm": {"trust_remote_code": False, "attn_implementation": "sdpa"},
    "connector": {"attn_implementation": "sdpa"},
}
# The interpolations a run's saved config may hold: plain references to this machine's paths, the seed, or
# another model key. Anything else (resolvers, nested or escaped interpolations) is refused.
RUN_INTERPOLATION = re.compile(r"\$\{(?:paths\.\w+|seed|model(?:\.\w+)+)\}")


def _walk(node: Any, where: str):
    """Yield (key path, value) for every dict entry and list item below ``node``."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            path = f"{where}.{key}" if where else str(key)
            yield path, key, value
            yield from _walk(value, path)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            path = f"{where}[{i}]"
            yield path, None, value
            yield from _walk(value, path)


def _check_structure(config: Any, source: str, interpolation: re.Pattern | None, root: str = "") -> None:
    """Rules 1 and 2 on ``config`` (the ``model`` section, or a part's config at place ``root``); raises
    :class:`UnsafeConfigError`."""
    if not isinstance(config, Mapping):
        raise UnsafeConfigError(f"{source}: the model config must be a mapping, got {type(config).__name__}.")
    entries = [("", None, config), *_walk(config, "")]
    if root:
        entries = [(f"{root}.{path}".strip("."), key, value) for path, key, value in entries]
    for path, key, value in entries:
        if key == "_partial_" and path.rpartition("._partial_")[0] in PARTIAL_PLACES and value is True:
            continue
        if isinstance(key, str) and key.startswith("_") and key.endswith("_") and key not in ALLOWED_HYDRA_KEYS:
            raise UnsafeConfigError(f"{source}: model.{path} is refused: a saved model config may not use Hydra's {key} "
                                    f"(allowed: {sorted(ALLOWED_HYDRA_KEYS)}). Re-export the checkpoint with mingexp.")
        if key == "_target_":
            place = path.rpartition("._target_")[0] if "." in path else ""
            place = root if root and path == f"{root}._target_" else place
            allowed = _allowed(place)
            if value not in allowed:
                where = f"model.{place}" if place else "model"
                hint = f"allowed there: {sorted(allowed)}" if allowed else "no builder may appear there"
                raise UnsafeConfigError(f"{source}: {where}._target_={value!r} is refused: a saved model config may only build "
                                        f"mingexp's own parts ({hint}). Re-export the checkpoint with mingexp, or fix the key.")
        if isinstance(value, str) and "${" in value:
            if interpolation is None or interpolation.sub("", value).count("${") or "\\${" in value:
                allowed = "none (an export holds resolved values)" if interpolation is None else "${paths.<key>}, ${seed}, ${model.<key>}"
                raise UnsafeConfigError(f"{source}: model.{path}={value!r} is refused: interpolations allowed in a saved model "
                                        f"config: {allowed}. Write the value itself.")


def _apply_loader_flags(config: dict, source: str, flags: Mapping[str, Mapping[str, Any]]) -> dict:
    """Rule 3: the caller's loader flags replace the folder's."""
    out = copy.deepcopy(config)
    for section, defaults in LOADER_FLAGS.items():
        node = out.get(section)
        if not isinstance(node, dict):
            continue
        given = {**defaults, **dict(flags.get(section, {}))}
        for flag in defaults:
            if flag == "trust_remote_code" and node.get(flag) and not given[flag]:
                raise UnsafeConfigError(
                    f"{source}: model.{section}.{flag}=true is refused: a folder cannot turn on remote code. If you trust "
                    f"{node.get('path')!r}, pass it yourself: trust_remote_code=true (generate / chat / MingUniPipeline.from_pretrained) "
                    f"or model.{section}.{flag}=true (evaluate / export)."
                )
            if flag in node or flag in flags.get(section, {}):
                node[flag] = given[flag]
    return out


def trusted_model_config(
    config: Mapping[str, Any],
    source: str,
    flags: Mapping[str, Mapping[str, Any]] | None = None,
    resolve: Callable[[Mapping[str, Any]], dict] | None = None,
) -> dict:
    """A model config from a folder, checked (module docstring) and with the caller's loader flags.

    Args:
        config: the saved ``model`` section, unresolved (plain containers).
        source: the file it came from, named in every error.
        flags: the caller's loader flags, ``{section: {flag: value}}``; missing ones take the safe defaults.
        resolve: for run configs, a function resolving the (checked) interpolations against this machine's
            config; None for exports, whose configs may hold no interpolation at all.

    Raises:
        UnsafeConfigError: naming the refused key and what is allowed.
    """
    _check_structure(config, source, RUN_INTERPOLATION if resolve is not None else None)
    resolved = resolve(config) if resolve is not None else copy.deepcopy(dict(config))
    # Resolution may copy nodes (``${model.dit}``) or bring in values with ``${``: check the result as data again.
    _check_structure(resolved, source, None)
    return _apply_loader_flags(resolved, source, flags or {})


def check_part_config(config: Any, source: str, place: str) -> dict:
    """A part's own saved config (``queries.json``, ``connector.json``, ``align.json``: :mod:`mingexp.io.part_folder`),
    checked as data at its place in the model tree: its variants' ``_target_``s must be mingexp's classes there, no
    other Hydra key, no interpolation."""
    _check_structure(config, source, None, root=place)
    return copy.deepcopy(dict(config))
