"""``python -m mingexp.doctor model=<preset> [depth=N] [device=cpu|cuda] [dtype=bf16|fp32] [steps=K] [json=<file>]``

The pre-flight check a user runs before spending GPU hours, and mingexp's acceptance check at real size:

1. builds the preset at its real widths: each part from its checkpoint when it is on the machine, otherwise from
   the public checkpoint's config shipped with mingexp (:mod:`mingexp.models.public`: random weights, every block
   stack cut to ``depth``; default 1 on a CPU, full depth on a GPU). The first line says which parts are random;
2. reports each part's parameters at full depth (meta device), the memory estimate of :mod:`mingexp.lit.memory`
   (as built, and at full depth), every part's dtypes, and what FSDP would wrap;
3. runs ``steps`` training steps of the real LightningModule through Lightning (finite loss, every trainable part
   receives a gradient and holds fp32 weights, the frozen MLLM and VAE bit-identical afterwards) and one guided
   sampling step;
4. on a GPU also: step time, samples/s, peak memory against the estimate, and model FLOPs utilisation from a FLOP
   count of one training step (``torch.utils.flop_counter``).

``json=<file>`` writes the report (``parameters_full_depth``, ``loss``, ``grad_parts``, ``estimate_gib``,
``peak_memory_gib``, ``samples_per_s``, ``mfu``, ...; null where not measured). Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, open_dict

from mingexp.errors import ConfigError
from mingexp.lit.quiet import quiet_fit
from mingexp.models import public

PARTS = ("mllm", "connector", "dit", "vae")
SMALL_WORLD = {"t2i": 16, "edit": 8, "edit_chains": 2, "style": 4, "vqa": 4, "textqa": 4, "heldout": 2}
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}  # dense bf16, by the GPU's name


@dataclass
class Part:
    """Where one part of the preset comes from."""

    name: str                 # mllm | connector | dit | vae
    path: str | None          # its folder (None: built from a config in the preset, e.g. the toy's)
    subfolder: str | None
    public: str | None        # its public-config key, when mingexp ships one
    present: bool             # the checkpoint is on this machine


def _node(cfg: DictConfig, name: str) -> DictConfig | None:
    node = cfg.model.get(name)
    return node if isinstance(node, DictConfig) else None


def find_parts(cfg: DictConfig) -> list[Part]:
    """Each loadable part of ``cfg.model``: its folder, whether it is here, and its public config if any."""
    parts = []
    for name in PARTS:
        node = _node(cfg, name)
        if node is None or node.get("path") is None:
            parts.append(Part(name, None, None, None, True))
            continue
        path, sub = str(node.path), node.get("subfolder")
        folder = Path(path) / sub if sub else Path(path)
        key = public.key(path, sub)
        parts.append(Part(name, path, sub, key if key in public.PUBLIC else None, folder.is_dir()))
    return parts


def use_random_weights(cfg: DictConfig, parts: list[Part], depth: int | None, dtype: torch.dtype) -> list[str]:
    """Write random-weight stand-ins for the parts not on this machine and point ``cfg`` at them; the parts done."""
    missing = [p for p in parts if not p.present]
    unknown = [p for p in missing if p.public is None]
    if unknown:
        raise ConfigError("; ".join(f"model.{p.name}.path={p.path}{'/' + p.subfolder if p.subfolder else ''}: no such folder, and "
                                    f"mingexp ships no public config for it (known: {sorted(public.PUBLIC)})" for p in unknown)
                          + ". Download the checkpoint or point the path at one.")
    stacks = {p.public: public.full_depth(p.public) for p in missing if public.full_depth(p.public)}
    if depth is not None and stacks and not 1 <= depth <= max(stacks.values()):
        raise ConfigError(f"depth={depth}: the stacks built here hold {', '.join(f'{k} {v}' for k, v in stacks.items())} blocks; "
                          f"use 1..{max(stacks.values())} (a stack shorter than depth keeps its own).")
    root = Path(cfg.work_dir) / f"checkpoints-depth{depth or 'full'}"
    for p in missing:
        stack = public.full_depth(p.public)
        public.write_random(p.public, root / p.public, None if depth is None else min(depth, stack) if stack else None, dtype)
        with open_dict(cfg):
            cfg.model[p.name].path = str(root / Path(p.public).parts[0])
    return [p.name for p in missing]


def fingerprint(module: torch.nn.Module) -> str:
    """A digest of every parameter and buffer's bytes (frozen parts must not move)."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().contiguous().view(torch.uint8).cpu().numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class Probe(L.Callback):
    """What the doctor reads from the real training loop: losses, which parts got a gradient, step times, the
    FLOPs of the first step."""

    def __init__(self, count_flops: bool = True) -> None:
        self.losses: list[float] = []
        self.grad_parts: set[str] = set()
        self.step_times: list[float] = []
        self.flops: int | None = None
        self._counter = None
        self._count = count_flops
        self._start = 0.0

    def _sync(self, trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self._sync(trainer)
        if self._count and batch_idx == 0:
            from torch.utils.flop_counter import FlopCounterMode

            self._counter = FlopCounterMode(display=False)
            self._counter.__enter__()
        self._start = time.perf_counter()

    def on_after_backward(self, trainer, module) -> None:
        for part, params in module.model.param_groups().items():
            grads = [p.grad for p in params if p.grad is not None]
            if grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads):
                self.grad_parts.add(part)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self._sync(trainer)
        self.step_times.append(time.perf_counter() - self._start)
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self.flops, self._counter = int(self._counter.get_total_flops()), None
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss) if loss is not None else float("nan"))


def _dtypes(module: torch.nn.Module) -> list[str]:
    return sorted({str(p.dtype).removeprefix("torch.") for p in module.parameters()})


def _fsdp_wrap(cfg: DictConfig, model: torch.nn.Module) -> dict[str, int]:
    from hydra.utils import get_class

    from mingexp.lit.sharding import QWEN2_LAYERS
    from mingexp.models.denoisers.base import denoiser_class

    classes = [*denoiser_class(str(cfg.model.dit._target_)).fsdp_blocks, *QWEN2_LAYERS]
    found = {}
    for path in classes:
        cls = get_class(path)
        n = sum(isinstance(m, cls) for m in model.modules())
        if n:
            found[path.rsplit(".", 1)[-1]] = n
    return found


def preset_name() -> str:
    """The model preset and its part choices, as chosen on the command line (``ming_lite_uni`` + ``dit=sd3`` ...)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return "model"
    choices = HydraConfig.get().runtime.choices
    extra = [f"{k.split('/', 1)[1]}={v}" for k, v in choices.items() if k.startswith("model/") and v is not None]
    return str(choices.get("model")) + (f" ({', '.join(sorted(extra))})" if extra else "")


def _gib(x: float | None) -> float | None:
    return None if x is None else round(x / 2**30, 3)


def doctor(cfg: DictConfig) -> dict[str, Any]:
    """Run the checks of the module docstring on ``cfg`` (conf/doctor.yaml); returns the report."""
    from hydra.utils import instantiate

    from mingexp.lit.memory import GIB, estimate, model_parts

    cuda = torch.cuda.is_available()
    device = str(cfg.device or ("cuda" if cuda else "cpu"))
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"device={device}: use cpu or cuda.")
    if device == "cuda" and not cuda:
        raise ConfigError("device=cuda but no GPU is visible here; use device=cpu.")
    depth = cfg.depth if cfg.depth is not None else (None if device == "cuda" else 1)
    depth = None if depth is None else int(depth)
    dtype_name = str(cfg.dtype).lower()
    if dtype_name not in ("bf16", "bfloat16", "fp32", "float32"):
        raise ConfigError(f"dtype={cfg.dtype}: use bf16 or fp32.")
    bf16 = dtype_name in ("bf16", "bfloat16")
    frozen_dtype = torch.bfloat16 if bf16 else torch.float32
    preset = preset_name()

    # 1. where each part comes from (random stand-ins written for the absent ones)
    parts = find_parts(cfg)
    with open_dict(cfg):
        for name in ("mllm", "vae"):
            if _node(cfg, name) is not None and "dtype" in cfg.model[name]:
                cfg.model[name].dtype = "bf16" if bf16 else "float32"
    random_parts = use_random_weights(cfg, parts, depth, frozen_dtype)
    if random_parts:
        print(f"[doctor] {preset}: RANDOM WEIGHTS for {', '.join(random_parts)} (no checkpoint under {cfg.paths.checkpoints_dir}): built "
              f"from the public configs shipped with mingexp, every stack cut to {depth or 'full'} block(s). A check of shapes, dtypes, "
              "memory and speed, not a model.", flush=True)
    else:
        print(f"[doctor] {preset}: every part from its checkpoint ({', '.join(p.path or p.name for p in parts)}).", flush=True)

    # 2. the real LightningModule (it builds the model), the data at the model's size
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    started = time.perf_counter()
    module = instantiate(cfg.module)
    model = module.model
    build_s = time.perf_counter() - started
    full = {p.name: public.parameter_count(p.public) for p in parts if p.name in random_parts}
    built = {name: sum(x.numel() for x in getattr(model, name).parameters()) for name in ("mllm", "queries", "connector", "dit", "vae")}
    parameters = {name: full.get(name, built[name]) for name in built}
    if "connector" in full:  # the connector is fed embeddings: the stack without the causal LM's table and head, plus its projections
        stack = sum(x.numel() for x in model.connector.transformer.parameters())
        key = next(p.public for p in parts if p.name == "connector")
        parameters["connector"] = built["connector"] - stack + public.parameter_count(key, exclude=("embed_tokens", "lm_head"))
    if "dit" in full:  # the adapter's own weights (a pooled projection, a caption MLP) on top of the library model
        parameters["dit"] = full["dit"] + built["dit"] - sum(x.numel() for x in model.dit.transformer.parameters())
    spec = module.model_spec()
    resolution = int(cfg.resolution or spec.resolution)
    if resolution % spec.multiple:
        raise ConfigError(f"resolution={resolution}: must be a multiple of {spec.multiple} (VAE factor × patch).")
    batch = int(cfg.batch_size)
    as_built = estimate(model_parts(model), batch)
    full_parts = []
    for part in model_parts(model):
        scale = parameters.get(part.name, part.params) / max(part.params, 1)
        blocks = part.blocks
        key_name = next((p.public for p in parts if p.name == part.name and p.name in random_parts), None)
        if key_name and public.full_depth(key_name):
            blocks = public.full_depth(key_name)
        full_parts.append(replace(part, params=int(part.params * scale), trainable=int(part.trainable * scale), blocks=blocks))
    at_full = estimate(full_parts, batch)
    report: dict[str, Any] = {
        "preset": preset, "device": device, "depth": depth, "dtype": "bf16" if bf16 else "fp32", "random_weights": random_parts,
        "parameters_full_depth": parameters, "parameters_as_built": built, "build_s": round(build_s, 1),
        "dtypes": {name: _dtypes(getattr(model, name)) for name in ("mllm", "queries", "connector", "dit", "vae")},
        "fsdp_wrap": _fsdp_wrap(cfg, model), "estimate_gib": _gib(as_built["total"]), "estimate_full_depth_gib": _gib(at_full["total"]),
        "estimate_full_depth": {k: _gib(v) for k, v in at_full.items()},
    }
    print("[doctor] parameters at full depth (M): " + ", ".join(f"{k} {v / 1e6:,.1f}" for k, v in parameters.items()), flush=True)
    print(f"[doctor] dtypes: {report['dtypes']}; FSDP would wrap {report['fsdp_wrap']}", flush=True)
    print(f"[doctor] memory estimate per GPU at batch {batch}: {as_built['total'] / GIB:,.2f} GiB as built, "
          f"{at_full['total'] / GIB:,.2f} GiB at full depth ({', '.join(f'{k} {v / GIB:,.2f}' for k, v in at_full.items() if k != 'total')})",
          flush=True)

    with open_dict(cfg):
        cfg.paths.shapes_dir = str(Path(cfg.work_dir) / "shapes")
        cfg.data.batch_size, cfg.data.num_workers, cfg.data.epoch_batches = batch, 0, max(int(cfg.steps), 1)
        cfg.data.prepare.counts = dict(SMALL_WORLD)
        cfg.data.prepare["progress"] = False
    datamodule = instantiate(cfg.data)
    datamodule.configure(replace(spec, resolution=resolution))

    # 3. K steps of the real LightningModule, frozen parts fingerprinted around them
    frozen_before = {name: fingerprint(getattr(model, name)) for name in ("mllm", "vae")}
    probe = Probe()
    trainer = L.Trainer(accelerator="gpu" if device == "cuda" else "cpu", devices=1, precision="bf16-mixed" if bf16 else "32-true",
                        max_steps=int(cfg.steps), max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, gradient_clip_val=1.0,
                        callbacks=[probe], default_root_dir=str(cfg.work_dir))
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with quiet_fit():
        trainer.fit(module, datamodule=datamodule)
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    frozen_same = {name: fingerprint(getattr(model, name)) == before for name, before in frozen_before.items()}
    trainable = model.param_groups()
    fp32 = {part: all(p.dtype == torch.float32 for p in params) for part, params in trainable.items() if params}
    expected = sorted(part for part, params in trainable.items() if params)
    timed = probe.step_times[1:] or probe.step_times
    step_s = statistics.median(timed) if timed else None
    peak_tflops = cfg.peak_tflops
    if peak_tflops is None and device == "cuda":
        name = torch.cuda.get_device_name()
        peak_tflops = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    mfu = (probe.flops / step_s / (float(peak_tflops) * 1e12)) if (probe.flops and step_s and peak_tflops) else None

    # 4. one guided sampling step at the resolution
    model.eval()
    with torch.no_grad():
        inputs = model.mllm.processor(["a photo of a red circle"]).to(model.device)
        image = model.sample(inputs, resolution, resolution, steps=1, generator=[torch.Generator().manual_seed(0)])
    report.update({
        "resolution": resolution, "batch_size": batch, "steps": int(cfg.steps),
        "loss": probe.losses, "loss_finite": bool(probe.losses) and all(math.isfinite(x) for x in probe.losses),
        "grad_parts": sorted(probe.grad_parts), "trainable_parts": expected, "trainable_fp32": fp32, "frozen_unchanged": frozen_same,
        "sample_finite": bool(torch.isfinite(image).all()), "sample_shape": list(image.shape),
        "step_s": None if step_s is None else round(step_s, 3),
        "samples_per_s": None if device != "cuda" or not step_s else round(batch / step_s, 2),
        "flops_per_step": probe.flops, "peak_tflops": peak_tflops, "mfu": None if mfu is None else round(mfu, 4),
        "peak_memory_gib": _gib(peak),
    })
    ok = (report["loss_finite"] and set(expected) <= probe.grad_parts and all(fp32.values()) and all(frozen_same.values())
          and report["sample_finite"])
    report["ok"] = bool(ok)
    print(f"[doctor] {int(cfg.steps)} step(s) at {resolution}² batch {batch}: loss {[round(x, 4) for x in probe.losses]}; gradients in "
          f"{sorted(probe.grad_parts)} (trainable: {expected}); fp32 masters {fp32}; frozen unchanged {frozen_same}; guided sampling step "
          f"{'finite' if report['sample_finite'] else 'NOT finite'}; step {report['step_s']} s", flush=True)
    if device == "cuda":
        print(f"[doctor] GPU: {report['samples_per_s']} samples/s, peak {report['peak_memory_gib']} GiB against the estimate "
              f"{report['estimate_gib']} GiB, MFU {report['mfu']} ({probe.flops} FLOPs a step, peak {peak_tflops} TFLOPS)", flush=True)
    print(f"[doctor] {'OK' if ok else 'FAILED'}", flush=True)
    if cfg.json:
        out = Path(str(cfg.json))
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(json.dumps(report, indent=1))
        tmp.replace(out)
    return report


@hydra.main(version_base="1.3", config_path="conf", config_name="doctor")
def main(cfg: DictConfig) -> None:
    try:
        report = doctor(cfg)
    except ConfigError as e:
        raise SystemExit(f"doctor: {e}") from None
    if not report["ok"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
