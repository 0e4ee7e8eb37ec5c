"""Saved model configs are data: mingexp's builders only, no interpolation, loader flags from the caller."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mingexp.errors import UnsafeConfigError
from mingexp.untrusted import _allowed, trusted_model_config

CONF = Path(__file__).resolve().parents[2] / "conf"

# a saved export's model section, as save_pretrained writes it (trimmed to what the checks look at)
EXPORT = {
    "_target_": "mingexp.models.unified.build_model",
    "_convert_": "all",
    "seed": 0,
    "mllm": {"_target_": "mingexp.models.mllm.FrozenMLLM.from_pretrained", "path": "/m", "attn_implementation": "sdpa", "trust_remote_code": False},
    "queries": {"_target_": "mingexp.models.queries.MultiScaleQueries", "_partial_": True, "scales": [2, 4]},
    "connector": {"_target_": "mingexp.models.connector.Connector.build", "_partial_": True, "config": {"hidden_size": 32},
                  "stack": {"_target_": "mingexp.models.connector.JointStack"},
                  "in_norm": {"_target_": "mingexp.models.connector.RunningStandardize", "_partial_": True, "momentum": 0.01}},
    "dit": {"_target_": "mingexp.models.denoisers.sana.SanaDenoiser.build", "path": ".", "subfolder": "transformer"},
    "align": {"_target_": "mingexp.models.align.semantic.SemanticAlignment.build", "_partial_": True, "weight": 1.0},
    "vae": {"_target_": "mingexp.models.vae.PixelSpace"},
    "flow": {"_target_": "mingexp.diffusion.flow.FlowMatching", "shift": 1.0},
    "sampler": {"_target_": "mingexp.diffusion.sampler.FlowSampler", "steps": 3},
    "cond_dropout": {"_target_": "mingexp.diffusion.flow.ConditionDropout", "p": 0.1,
                     "null_condition": {"_target_": "mingexp.diffusion.flow.ZerosNull"}},
}


def edited(path: str, value):
    """EXPORT with ``value`` set at the dotted ``path``."""
    cfg = copy.deepcopy(EXPORT)
    *parents, last = path.split(".")
    node = cfg
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return cfg


def test_a_saved_config_of_mingexp_builders_passes_unchanged():
    assert trusted_model_config(EXPORT, "x.json") == EXPORT


@pytest.mark.parametrize("path,value,refused", [
    ("dit", {"_target_": "torch.load", "f": "/x/payload.pt", "weights_only": False}, r"model.dit._target_='torch.load' is refused"),
    ("flow", {"_target_": "os.system", "command": "touch /tmp/x"}, r"model.flow._target_='os.system'"),
    ("sampler.hook", {"_target_": "builtins.open", "file": "/tmp/x", "mode": "w"}, r"model.sampler.hook._target_=.*no builder may appear there"),
    ("vae", {"_target_": "numpy.load", "file": "/x/a.npy", "allow_pickle": True}, r"model.vae._target_='numpy.load'.*allowed there"),
    ("queries.scales", [{"_target_": "shutil.copyfile", "src": "/a", "dst": "/b"}], r"model.queries.scales\[0\]._target_"),
    # a mingexp builder in the wrong place is refused too (a DiT loader as the sampler)
    ("sampler", {"_target_": "mingexp.models.denoisers.sana.SanaDenoiser.build", "path": "/x"}, r"model.sampler._target_='mingexp.models.denoisers.sana"),
    # the denoiser place takes adapters only, not any class of the package
    ("dit", {"_target_": "mingexp.models.denoisers.base.ADAPTER_WEIGHTS"}, r"model.dit._target_=.*allowed there: \['mingexp.models.denoisers.sana"),
    ("align", {"_target_": "mingexp.models.align.base.pool_to_grid", "_partial_": True}, r"model.align._target_="),
    ("connector._partial_", False, r"model.connector._partial_ is refused"),
    ("_args_", ["/etc/passwd"], r"model._args_ is refused"),
    ("dit._partial_", True, r"model.dit._partial_ is refused"),
])
def test_any_other_callable_or_hydra_key_is_refused(path, value, refused):
    with pytest.raises(UnsafeConfigError, match=refused):
        trusted_model_config(edited(path, value), "x.json")


@pytest.mark.parametrize("value", ["${oc.env:HOME}/m", "${dit.path}/payload.pt", "\\${paths.toy_dir}", "${paths.toy_dir}"])
def test_an_export_may_hold_no_interpolation(value):
    with pytest.raises(UnsafeConfigError, match=r"model.mllm.path=.*interpolations allowed.*none"):
        trusted_model_config(edited("mllm.path", value), "x.json")


def resolve_here(model: dict) -> dict:
    here = OmegaConf.create({"model": model, "paths": {"toy_dir": "/here/toy"}, "seed": 3})
    return OmegaConf.to_container(here.model, resolve=True)


def test_a_run_config_resolves_only_paths_seed_and_model_keys():
    run = edited("mllm.path", "${paths.toy_dir}/mllm")
    run["seed"] = "${seed}"
    run["sampler"]["steps"] = "${model.queries.scales.1}"
    out = trusted_model_config(run, "config.yaml", resolve=resolve_here)
    assert out["mllm"]["path"] == "/here/toy/mllm" and out["seed"] == 3 and out["sampler"]["steps"] == 4
    for bad in ("${oc.env:HOME}", "${oc.decode:'1'}", "${hydra:runtime.cwd}", "${oc.env:X,${paths.toy_dir}}", "${now:%H}"):
        with pytest.raises(UnsafeConfigError, match=r"model.mllm.path=.*refused"):
            trusted_model_config(edited("mllm.path", bad), "config.yaml", resolve=resolve_here)
    # a reference may copy a node, but the copy is checked where it lands: a loader node as the sampler is refused
    with pytest.raises(UnsafeConfigError, match=r"model.sampler._target_='mingexp.models.denoisers.sana.SanaDenoiser.build'"):
        trusted_model_config(edited("sampler", "${model.dit}"), "config.yaml", resolve=resolve_here)


def test_loader_flags_come_from_the_caller():
    # the folder asks for remote code: refused unless the caller gives it
    asks = edited("mllm.trust_remote_code", True)
    with pytest.raises(UnsafeConfigError, match=r"model.mllm.trust_remote_code=true is refused.*trust_remote_code=true"):
        trusted_model_config(asks, "x.json")
    assert trusted_model_config(asks, "x.json", {"mllm": {"trust_remote_code": True}})["mllm"]["trust_remote_code"] is True
    # the folder's attention implementation (which can name a hub kernel to download) is replaced by the caller's
    hub = edited("mllm.attn_implementation", "kernels-community/flash-attn")
    assert trusted_model_config(hub, "x.json")["mllm"]["attn_implementation"] == "sdpa"
    assert trusted_model_config(hub, "x.json", {"mllm": {"attn_implementation": "eager"}})["mllm"]["attn_implementation"] == "eager"
    connector = edited("connector.attn_implementation", "kernels-community/x")
    assert trusted_model_config(connector, "x.json")["connector"]["attn_implementation"] == "sdpa"


def test_every_builder_of_the_shipped_model_presets_is_allowed():
    """A new builder in conf/model/ must be allowed (ALLOWED_TARGETS, or an adapter file in its package), or
    its exports would not load."""
    files = [CONF / "model_common.yaml", *sorted((CONF / "model").rglob("*.yaml"))]
    seen = set()
    for f in files:
        node = OmegaConf.to_container(OmegaConf.load(f), resolve=False)
        parts = f.relative_to(CONF / "model").parts[:-1] if f.parent != CONF and f.parent != CONF / "model" else ()
        # a part's file (dit/, vae/, align/) or a part's variant (queries/boundary/, connector/in_norm/, ...): its place
        place = ".".join(p for p in parts if p != "toy")
        for key, value in ([(place, node)] + [(f"{place}.{k}".strip("."), v) for k, v in node.items() if isinstance(v, dict)]):
            if isinstance(value, dict) and "_target_" in value:
                assert value["_target_"] in _allowed(key), (f, key, value["_target_"])
                seen.add(value["_target_"])
    assert {"mingexp.models.unified.build_model", "mingexp.models.vae.DCAE.from_pretrained", "mingexp.models.vae.KLVAE.from_pretrained",
            "mingexp.models.vae.PixelSpace", "mingexp.models.denoisers.sana.SanaDenoiser.build", "mingexp.models.denoisers.sd3.SD3Denoiser.build",
            "mingexp.models.align.semantic.SemanticAlignment.build", "mingexp.models.align.latent.LatentAlignment.build",
            "mingexp.models.queries.MultiScaleQueries", "mingexp.models.connector.Connector.build", "mingexp.models.connector.RunningStandardize",
            "mingexp.models.queries.RowPositions", "mingexp.diffusion.flow.ZerosNull"} <= seen
