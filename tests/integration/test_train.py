"""The training harness: every experiment file runs, multirun, resume, distributed, NaN guard, bad input."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.errors import InstantiationException, MissingConfigException

from mingexp.errors import ConfigError, TrainingDiverged
from mingexp.eval.base import Evaluation
from mingexp.train import optimized_metric, train
from tests.conftest import FAMILIES
from tests.integration.conftest import FAST, compose_train

REPO = Path(__file__).resolve().parents[2]


class StopAt:
    """A callback that ends a run after ``step`` optimizer steps, as a kill would (same max_steps)."""

    def __new__(cls, step: int):
        import lightning as L

        class _StopAt(L.Callback):
            def on_train_batch_end(self, trainer, *args):
                if trainer.global_step >= step:
                    trainer.should_stop = True

        return _StopAt()


class Poison:
    """A callback that makes the DiT diverge (one weight set to inf) before step ``at_step``, as a too-high lr would."""

    def __new__(cls, at_step: int):
        import lightning as L

        class _Poison(L.Callback):
            def on_train_batch_start(self, trainer, module, batch, batch_idx):
                if trainer.global_step == at_step:
                    with torch.no_grad():
                        next(module.model.dit.parameters()).fill_(float("inf"))

        return _Poison()


class Marker:
    """A callback that writes ``path`` once training reaches ``step`` (for tests that signal a running process).

    When the file ``hold_if`` exists, training then waits (at most a minute) until the SIGTERM has arrived, so
    the signal lands at a known step however fast the steps are.
    """

    def __new__(cls, path: str, step: int, hold_if: str | None = None):
        import time

        import lightning as L

        class _Marker(L.Callback):
            def on_train_batch_end(self, trainer, *args):
                if trainer.global_step >= step and not Path(path).exists():
                    Path(path).write_text(str(trainer.global_step))
                    deadline = time.monotonic() + 60
                    while hold_if and Path(hold_if).exists() and not trainer.received_sigterm and time.monotonic() < deadline:
                        time.sleep(0.05)

        return _Marker()


class LastCheckpointProbe(Evaluation):
    """An evaluation that reports the step of the ``last.ckpt`` on disk when it runs (0: none yet)."""

    name = "probe"
    example_labels = ()

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def work(self) -> int:
        return 1

    def __call__(self, model, out_dir=None):
        step = torch.load(self.path, map_location="cpu", weights_only=True)["global_step"] if self.path.is_file() else 0
        return {"last_ckpt_step": float(step)}, []


def with_callback(cfg, name: str, target: dict):
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.callbacks[name] = target
    return cfg


def metrics(out: Path) -> list[dict]:
    import csv

    with open(out / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def column(rows: list[dict], name: str) -> dict[int, float]:
    """step → value of a logged metric."""
    return {int(r["step"]): float(r[name]) for r in rows if r.get(name) not in (None, "")}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("experiment", ["ms_align", "single_scale", "no_align"])
def test_experiment_files_train(tiny_dir, world, tmp_path, experiment, family):
    cfg = compose_train(tiny_dir, world, tmp_path, f"+experiment={experiment}", family=family)  # layouts resolve at the tiny DiT's grid
    result = train(cfg)
    assert cfg.task_name == experiment and cfg.model.dit._target_.endswith({"sana": "SanaDenoiser.build", "sd3": "SD3Denoiser.build"}[family])
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    rows = metrics(tmp_path)
    assert len(column(rows, "train/flow")) == 3
    has_align = any(c.startswith("train/align/s") and column(rows, c) for c in rows[0])
    assert has_align == (experiment != "no_align")
    assert result["samples"] and Path(result["samples"][-1]).name == "final.png"


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_finetune_starts_from_a_full_run_and_trains_only_the_adapters(tiny_dir, world, tmp_path, family, capsys):
    from mingexp.pipeline.pipeline import MingUniPipeline

    full = tmp_path / "full"
    train(compose_train(tiny_dir, world, full, "trainer.max_steps=2", family=family))
    start = full / "checkpoints" / "last.ckpt"
    tuned = tmp_path / "lora"
    # (the shrunk test preset sets model.queries.trainable=true on the command line: restate the experiment's false)
    train(compose_train(tiny_dir, world, tuned, "+experiment=finetune_lora", f"init_from={start}", "trainer.max_steps=3",
                        "model.queries.trainable=false", family=family))
    out = capsys.readouterr().out
    assert "memory estimate" in out and "optimizer" in out
    loaded = [line for line in out.splitlines() if "init_from" in line and "tensors loaded" in line]
    # the full run's weights, under LoRA's base names; only its alignment head (off here) is left
    assert loaded and re.search(r"\d+ tensors loaded, 4 skipped e\.g\. model\.align\.", loaded[0]), loaded
    a = torch.load(start, map_location="cpu", weights_only=True)["state_dict"]
    b = torch.load(tuned / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    moved = {k for k in b if "lora_" not in k and not torch.equal(b[k], a.get(k, a.get(k.replace(".base_layer.", "."))))}
    assert not {k for k in moved if not k.startswith("model.connector.in_norm.")}  # (the running input statistics are buffers)
    assert any("lora_B" in k and b[k].abs().sum() > 0 for k in b)  # the adapters trained
    # exported merged (a plain model) or separate (base + adapter), the two sample alike
    import numpy as np
    from hydra import compose, initialize_config_dir

    from mingexp.export import export
    from tests.conftest import CONF_DIR

    for mode in ("merged", "separate"):
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("export", overrides=[f"ckpt_path={tuned / 'checkpoints' / 'last.ckpt'}", f"out={tmp_path / mode}", f"lora={mode}",
                                               f"paths.toy_dir={tiny_dir}", f"paths.root_dir={tuned}"])
        folder = export(cfg)
        pipe = MingUniPipeline.from_pretrained(folder)
        assert (pipe.config.get("lora") is None) == (mode == "merged")
        assert (folder / "transformer" / "lora" / "adapter_model.safetensors").is_file() == (mode == "separate")
    one = MingUniPipeline.from_pretrained(tmp_path / "merged").generate("a photo of a red circle", seed=3, steps=2)[0]
    two = MingUniPipeline.from_pretrained(tmp_path / "separate").generate("a photo of a red circle", seed=3, steps=2)[0]
    assert np.abs(np.asarray(one, dtype=float) - np.asarray(two, dtype=float)).max() <= 1  # merged = base + adapter, up to rounding


def test_toy_mllm_stage_writes_a_loadable_checkpoint(tiny_dir, world, tmp_path):
    from mingexp.models.mllm import FrozenMLLM

    cfg = compose_train(
        tiny_dir, world, tmp_path, "+experiment=toy_mllm", f"module.base_path={tmp_path / 'base'}", f"module.out_path={tmp_path / 'mllm'}",
        f"data.processor_path={tmp_path / 'base'}", "module.base_sizes.hidden_size=32", "module.base_sizes.num_layers=1", model=False,
    )
    # the processor folder must exist before the datamodule is set up: the module writes the base first
    train(cfg)
    m = FrozenMLLM.from_pretrained(tmp_path / "mllm")
    assert m.hidden_size == 32 and isinstance(m.chat(None, "describe the image.", max_new_tokens=3), str)
    assert len(column(metrics(tmp_path), "train/lm_loss_step")) == 3


@pytest.mark.parametrize("family", FAMILIES)
def test_staged_recipe_files_train_from_the_previous_stage(tiny_dir, world, wds_data, tmp_path, family):
    from hydra.utils import instantiate

    from mingexp.train import _init_from

    previous = None
    for stage in ("stage1_t2i", "stage2_recon", "stage3_edit", "stage4_sft"):
        out = tmp_path / stage
        # the model's native size (stage 4's paper mixture asks for 512 px buckets: beyond the tiny SD3's positions)
        extra = [f"paths.data_dir={wds_data}", "trainer.max_steps=2", "data.resolution=null"]
        if previous:
            extra.append(f"init_from={previous}")
        cfg = compose_train(tiny_dir, world, out, f"+experiment={stage}", *extra, shapes=False, family=family)
        if previous:
            # the stage starts from every tensor the previous stage saved (the frozen MLLM / VAE are not saved)
            module = instantiate(cfg.module)
            loaded = _init_from(module, str(previous))
            saved = torch.load(previous, map_location="cpu", weights_only=True)["state_dict"]
            state = module.state_dict()
            assert set(loaded) == set(saved) and any(k.startswith("model.dit.") for k in loaded)
            assert all(torch.equal(state[k], saved[k]) for k in loaded)
        result = train(cfg)
        assert result["metrics"]["train/loss_step"] > 0
        previous = out / "checkpoints" / "last.ckpt"


def test_frozen_parameters_unchanged_by_training(tiny_dir, world, tmp_path):
    from transformers import AutoModelForImageTextToText

    cfg = compose_train(tiny_dir, world, tmp_path)
    train(cfg)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert not any(k.startswith("model.mllm.") for k in ckpt["state_dict"])  # loaded by path, never saved
    saved = dict(AutoModelForImageTextToText.from_pretrained(tiny_dir / "mllm").named_parameters())
    # rebuild the trained module from the checkpoint and compare its MLLM with the file on disk
    from hydra.utils import instantiate

    module = instantiate(cfg.module)
    module.on_load_checkpoint(ckpt)
    module.load_state_dict(ckpt["state_dict"])
    for name, p in module.model.mllm.model.named_parameters():
        assert torch.equal(p, saved[name]), name


def test_resume_continues_the_same_loss_curve(tiny_dir, world, tmp_path):
    common = ["trainer.max_steps=6", "module.ema={decay: 0.9, start_step: 0}", "data.num_workers=1"]
    full = tmp_path / "full"
    train(compose_train(tiny_dir, world, full, *common))
    part = tmp_path / "part"  # the same run, killed after step 3
    train(with_callback(compose_train(tiny_dir, world, part, *common), "stop", {"_target_": f"{__name__}.StopAt", "step": 3}))
    resumed = tmp_path / "resumed"
    train(compose_train(tiny_dir, world, resumed, *common, f"ckpt_path={part / 'checkpoints' / 'last.ckpt'}"))
    a = torch.load(full / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(resumed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert a["global_step"] == b["global_step"] == 6
    for k, v in a["state_dict"].items():
        assert torch.allclose(v, b["state_dict"][k], atol=1e-6), k
    for k, v in a["ema"].items():
        assert torch.allclose(v, b["ema"][k], atol=1e-6), k
    loss_full = column(metrics(full), "train/loss_step")
    loss_resumed = column(metrics(resumed), "train/loss_step")
    assert len(loss_full) == 6 and len(loss_resumed) == 3
    for step, value in loss_resumed.items():
        assert value == pytest.approx(loss_full[step], rel=1e-5)
    assert a["WebDataModule"]["samples_seen"] == b["WebDataModule"]["samples_seen"] == 24
    # resuming a checkpoint already at max_steps trains nothing, says so, and is no error (nor an optimised value)
    from mingexp.train import optimized_metric

    again_cfg = compose_train(tiny_dir, world, tmp_path / "again", *common, f"ckpt_path={full / 'checkpoints' / 'last.ckpt'}")
    again = train(again_cfg)
    assert again["trained"] is False and again["metrics"] == {} and optimized_metric(again_cfg, again) is None
    assert not (tmp_path / "again" / "checkpoints").exists()


def test_a_checkpoint_from_before_the_denoiser_seam_resumes(tiny_dir, world, tmp_path):
    """Pre-seam checkpoints hold the DiT at model.dit.<name> (no adapter): they resume to the same weights."""
    common = ["module.ema={decay: 0.9, start_step: 0}"]
    first = tmp_path / "first"
    train(compose_train(tiny_dir, world, first, *common, "trainer.max_steps=2"))
    ckpt = torch.load(first / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    old = lambda k: k.replace("dit.transformer.", "dit.", 1)  # noqa: E731  (the pre-seam name)
    legacy = {**ckpt, "state_dict": {old(k): v for k, v in ckpt["state_dict"].items()}, "ema": {old(k): v for k, v in ckpt["ema"].items()}}
    assert any(k.startswith("model.dit.transformer_blocks.") for k in legacy["state_dict"])
    torch.save(legacy, tmp_path / "legacy.ckpt")
    ends = []
    for name, path in (("new", first / "checkpoints" / "last.ckpt"), ("old", tmp_path / "legacy.ckpt")):
        train(compose_train(tiny_dir, world, tmp_path / name, *common, "trainer.max_steps=3", f"ckpt_path={path}"))
        ends.append(torch.load(tmp_path / name / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True))
    assert ends[0]["state_dict"].keys() == ends[1]["state_dict"].keys()
    for k, v in ends[0]["state_dict"].items():
        assert torch.equal(v, ends[1]["state_dict"][k]), k
    for k, v in ends[0]["ema"].items():
        assert torch.equal(v, ends[1]["ema"][k]), k


def test_nan_losses_are_skipped_then_stop_the_run(tiny_dir, world, tmp_path):
    import lightning as L
    from hydra.utils import instantiate

    from mingexp.data.batch import Batch

    cfg = compose_train(tiny_dir, world, tmp_path, "module.nan_tolerance=2")
    module = instantiate(cfg.module)
    inputs = module.model.mllm.processor(["a photo of a red circle"] * 2)
    images = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    good = Batch(inputs, images, ["t2i"] * 2, ["a", "b"], ["s", "s"], ["p", "p"], [None, None])
    params_before = [p.detach().clone() for p in module.model.dit.parameters()]

    class NaNData(torch.utils.data.IterableDataset):
        def __iter__(self):
            for _ in range(10):
                yield good

    original = module.model.forward

    def forward_with_nan(*args, **kwargs):  # a real forward whose loss is then poisoned
        out = original(*args, **kwargs)
        out.loss = out.loss * float("nan")
        return out

    module.model.forward = forward_with_nan
    trainer = L.Trainer(max_steps=10, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    from mingexp.lit.quiet import quiet_fit

    with pytest.raises(TrainingDiverged, match=r"3 non-finite losses in a row \(module.nan_tolerance=2\)"), quiet_fit():
        trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(NaNData(), batch_size=None))
    assert module.nonfinite_total == 3  # two tolerated, the third stops the run
    assert trainer.global_step == 2 < 10  # Lightning counts the two skipped steps; the third raised
    assert all(torch.equal(a, b) for a, b in zip(params_before, module.model.dit.parameters()))  # no update applied


def test_a_diverged_run_exits_non_zero_and_keeps_its_last_finite_checkpoint(tiny_dir, world, tmp_path):
    """Losses go non-finite from step 4 on: the run stops with an error, last.ckpt stays the step-3 one."""
    fast = [o for o in FAST if "callbacks.samples.rows" not in o]
    common = [f"paths.toy_dir={tiny_dir}", f"paths.shapes_dir={world}", f"paths.root_dir={tmp_path}", *fast, "callbacks.samples=null"]
    proc = run_cli([*common, "trainer.max_steps=8", "module.nan_tolerance=2", "hydra.run.dir=diverged",
                    f"+callbacks.poison._target_={__name__}.Poison", "+callbacks.poison.at_step=3"], cwd=tmp_path)
    assert proc.returncode != 0
    assert "3 non-finite losses in a row (module.nan_tolerance=2)" in proc.stderr and "last.ckpt" in proc.stderr
    folder = tmp_path / "diverged" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]  # nothing written from the diverged weights
    kept = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)
    assert kept["global_step"] == 3 and all(torch.isfinite(v).all() for v in kept["state_dict"].values() if v.is_floating_point())
    # the weights are those of step 3: the same as a clean run of 3 steps
    clean = tmp_path / "clean"
    train(compose_train(tiny_dir, world, clean, "trainer.max_steps=3", "callbacks.samples=null"))
    reference = torch.load(clean / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert kept["state_dict"].keys() == reference.keys()
    assert all(torch.equal(kept["state_dict"][k], reference[k]) for k in reference)
    # the CSV shows the skipped steps as non-finite, not as the last finite step's numbers again
    rows = metrics(tmp_path / "diverged")
    loss, flow, grad = column(rows, "train/loss_step"), column(rows, "train/flow"), column(rows, "train/grad_norm")
    assert all(math.isfinite(loss[s]) for s in (0, 1, 2)) and all(math.isnan(loss[s]) and math.isnan(flow[s]) for s in (3, 4))
    assert all(math.isnan(grad[s]) for s in (3, 4)) and math.isfinite(grad[2])


def test_keyboard_interrupt_saves_a_checkpoint(tiny_dir, world, tmp_path):
    import lightning as L

    class Interrupt(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 2:
                raise KeyboardInterrupt

    from omegaconf import open_dict

    cfg = compose_train(tiny_dir, world, tmp_path, "trainer.max_steps=10", "callbacks.last.every_n_train_steps=100")
    with open_dict(cfg):
        cfg.callbacks["interrupt"] = {"_target_": f"{__name__}.Interrupt"}
    globals()["Interrupt"] = Interrupt
    with pytest.raises((SystemExit, KeyboardInterrupt)):
        train(cfg)
    ckpt = torch.load(tmp_path / "checkpoints" / "interrupted.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2


@pytest.mark.parametrize("override,msg", [
    ("data.batch_size=0", "data.batch_size=0"),
    ("model.queries.scales=[]", "model.queries.scales is empty"),
    ("model.align.layer=9", "model.align.layer=9 is outside the DiT"),
    ("ckpt_path=/nope/last.ckpt", "ckpt_path=/nope/last.ckpt: no such checkpoint"),
    ("optimized_metric=eval/geneval_shapes/overall", "optimized_metric=eval/geneval_shapes/overall is an evaluation's value but "
     "callbacks.evaluation is off"),
    ("model.mllm.path=/nope", "model.mllm.path=/nope: no such folder"),
    # the shapes world is not legible below 32 px (its ground truth scores < 0.97): refused before anything runs
    ("model.dit.config.sample_size=16", r"the shapes world cannot be read at the model's 16 px"),
])
def test_bad_values_fail_before_the_first_step(tiny_dir, world, tmp_path, override, msg):
    cfg = compose_train(tiny_dir, world, tmp_path, override)
    with pytest.raises((ConfigError, InstantiationException), match=msg):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()


def test_data_source_without_files_fails_before_the_first_step(tiny_dir, world, tmp_path):
    cfg = compose_train(tiny_dir, world, tmp_path, f"data.sources=[{{urls: '{tmp_path}/none/*.tar', task: t2i}}]")
    with pytest.raises(ConfigError, match=r"data.sources\[0\].urls: the pattern .*none/\*.tar.* matches no file") as raised:
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()  # found before the trainer started: no step-0 interrupted.ckpt
    assert all(frame.name != "fit" for frame in __import__("traceback").extract_tb(raised.tb))  # not from inside fit


def test_unknown_experiment_lists_the_available_ones(tiny_dir, world, tmp_path):
    with pytest.raises(MissingConfigException, match=r"(?s)experiment/nope.*ms_align.*no_align"):
        compose_train(tiny_dir, world, tmp_path, "+experiment=nope")


def test_sweep_command_composes_all_twelve_jobs(tiny_dir, world, tmp_path):
    """The README's sweep: 2 scale layouts × 2 alignment weights × 3 seeds."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    sweep = parser.parse_overrides(["model.queries.scales=finest,pyramid", "model.align.weight=0,1", "seed=0,1,2"])
    jobs = [[]]
    for o in sweep:
        jobs = [j + [f"{o.key_or_group}={v}"] for j in jobs for v in o.sweep_string_iterator()]
    assert len(jobs) == 12
    configs = [compose_train(tiny_dir, world, tmp_path, "+experiment=ms_align", *job, fast=False) for job in jobs]
    assert {(c.model.queries.scales, c.model.align.weight, c.seed) for c in configs} == {
        (s, w, seed) for s in ("finest", "pyramid") for w in (0, 1) for seed in (0, 1, 2)
    }


def run_cli(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mingexp.train", *args], cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=timeout)


def cli_env() -> dict[str, str]:
    """The environment of a training subprocess; the test callbacks above import from the repository root."""
    return {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1", "PYTHONPATH": str(REPO)}


def test_multirun_two_jobs_each_in_its_own_folder(tiny_dir, world, tmp_path):
    fast = [o for o in FAST if "callbacks.samples.rows" not in o]
    args = ["-m", f"paths.toy_dir={tiny_dir}", f"paths.shapes_dir={world}", f"paths.root_dir={tmp_path}", *fast,
            "trainer.max_steps=2", "callbacks.samples=null", "seed=0,1"]
    proc = run_cli(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted((tmp_path / "outputs" / "train" / "multiruns").glob("*/*/checkpoints/last.ckpt"))
    assert len(jobs) == 2 and jobs[0].parents[1] != jobs[1].parents[1]


def test_wandb_offline_run_lands_on_disk(tiny_dir, world, tmp_path):
    fast = [o for o in FAST if o != "logger=csv" and "callbacks.samples.rows" not in o]
    args = [f"paths.toy_dir={tiny_dir}", f"paths.shapes_dir={world}", f"paths.root_dir={tmp_path}", *fast,
            "trainer.max_steps=2", "callbacks.samples=null", "+experiment=ms_align", "logger.wandb.offline=true"]
    proc = run_cli(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list((tmp_path / "outputs" / "ms_align" / "runs").glob("*/wandb/offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))


def wandb_records(path: Path) -> list:
    """The records of an offline W&B run file (``run-<id>.wandb``): W&B's LevelDB-style log of protobuf records."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, block, records, chunks = path.read_bytes(), 32768, [], b""
    assert data[:4] == b":W&B"
    pos = 7  # file header: ident, magic, version
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a record header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            break
        chunks += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            records.append(record)
            chunks = b""
    return records


def test_a_local_sweep_logs_one_wandb_run_per_job(tiny_dir, world, tmp_path):
    # the toy preset itself (not shrunk: its overrides would make every name long), two steps per job
    fast = [o for o in FAST if o != "logger=csv" and "callbacks.samples.rows" not in o and not o.startswith("model.")]
    args = ["-m", f"paths.toy_dir={tiny_dir}", f"paths.shapes_dir={world}", f"paths.root_dir={tmp_path}", *fast,
            "trainer.max_steps=2", "callbacks.samples=null", "+experiment=no_align", "model.queries.scales=[2,4]", "seed=0,1,2"]
    proc = run_cli(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wandb run already in progress" not in proc.stderr
    jobs = sorted((tmp_path / "outputs" / "no_align" / "multiruns").glob("*/[0-9]"))
    assert [j.name for j in jobs] == ["0", "1", "2"]
    runs = []
    for job in jobs:
        (run_file,) = job.glob("wandb/offline-run-*/run-*.wandb")  # each job has its own run, on disk
        (run,) = [r.run for r in wandb_records(run_file) if r.WhichOneof("record_type") == "run"]
        exits = [r.exit.exit_code for r in wandb_records(run_file) if r.WhichOneof("record_type") == "exit"]
        runs.append((run.run_id, run.display_name, run.run_group))
        assert exits == [0]  # finished at the job's end
        # named by what the job changed (where and how it ran is left out)
        assert run.display_name == f"no_align-data.batch_size=4,data.epoch_batches=4,model.queries.scales=[2,4],seed={job.name}"
    assert len({r[0] for r in runs}) == len({r[1] for r in runs}) == 3
    assert len({r[2] for r in runs}) == 1 and runs[0][2] == f"no_align-{jobs[0].parent.name}"  # grouped by the sweep


def sigterm_when(args: list[str], cwd: Path, ready, limit: float = 240.0, group: bool = False) -> tuple[int, float, str]:
    """Start a training process, send SIGTERM once ``ready(output so far)`` holds; returns its exit code, the
    seconds it took to exit after the signal, and its output. ``group``: to its whole process group, data
    workers included, as SLURM and a session's end do."""
    import signal
    import threading
    import time

    proc = subprocess.Popen([sys.executable, "-m", "mingexp.train", *args], cwd=cwd, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=group)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    start = time.monotonic()
    while not ready("".join(lines)):
        assert proc.poll() is None, "".join(lines)[-3000:]
        assert time.monotonic() - start < limit, "".join(lines)[-3000:]
        time.sleep(0.2)
    if group:
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    code = proc.wait(timeout=60)
    waited = time.monotonic() - sent
    reader.join(timeout=10)
    return code, waited, "".join(lines)


def test_sigterm_during_training_checkpoints_and_exits_promptly(tiny_dir, world, tmp_path):
    fast = [o for o in FAST if "callbacks.samples.rows" not in o]
    marker = tmp_path / "step2"
    args = [f"paths.toy_dir={tiny_dir}", f"paths.shapes_dir={world}", f"paths.root_dir={tmp_path}", *fast, "callbacks.samples=null",
            "trainer.max_steps=100000", "callbacks.last.every_n_train_steps=100000", "data.num_workers=1", "hydra.run.dir=run",
            f"+callbacks.marker._target_={__name__}.Marker", f"+callbacks.marker.path={marker}", "+callbacks.marker.step=2"]
    code, waited, output = sigterm_when(args, tmp_path, lambda _: marker.is_file())
    assert code == 143 and waited < 15, (code, waited, output[-2000:])
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "interrupted.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] >= 2 and "SIGTERM at step" in output and "interrupted.ckpt" in output
    # the same command again with ckpt_path=last (what a requeued job does) continues from there
    step = ckpt["global_step"]
    train(compose_train(tiny_dir, world, tmp_path / "run", "callbacks.samples=null", "ckpt_path=last", f"trainer.max_steps={step + 2}"))
    resumed = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert resumed["global_step"] == step + 2 and resumed["WebDataModule"]["samples_seen"] == 4 * (step + 2)


def test_sigterm_during_the_end_of_run_evaluation_checkpoints_and_exits_promptly(tiny_dir, world, tmp_path):
    from tests.integration.conftest import EVAL_SMALL

    fast = [o for o in FAST if "callbacks.samples.rows" not in o and not o.startswith(("callbacks.evaluation", "callbacks.best"))]
    evals = [o for o in EVAL_SMALL if not o.startswith(("callbacks.evaluation.every_n_steps", "callbacks.best", "callbacks.evaluation.final",
                                                        "callbacks.evaluation.evals.geneval_shapes.steps"))]
    # the full final suite, minutes long: GenEval-Shapes' 299 prompts × 4 images × 20 sampler steps, then the rest
    args = [f"paths.toy_dir={tiny_dir}", f"paths.shapes_dir={world}", f"paths.root_dir={tmp_path}", *fast, *evals, "callbacks.samples=null",
            "trainer.max_steps=2", "callbacks.evaluation.every_n_steps=0", "callbacks.evaluation.full_suite_min_steps=0",
            "callbacks.evaluation.evals.geneval_shapes.steps=20", "callbacks.best.monitor=train/loss_epoch", "callbacks.best.mode=min",
            "hydra.run.dir=run"]
    code, waited, output = sigterm_when(args, tmp_path, lambda out: "end-of-run evaluation" in out)
    assert code == 143 and waited < 15, (code, waited, output[-2000:])
    folder = tmp_path / "run" / "checkpoints"
    assert torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 2  # written before evaluating
    assert torch.load(folder / "interrupted.ckpt", map_location="cpu", weights_only=True)["global_step"] == 2
    assert not (tmp_path / "run" / "eval" / "final.json").exists()


def test_a_short_run_is_evaluated_on_the_subsets_after_writing_last_ckpt(tiny_dir, world, tmp_path, capsys):
    from tests.integration.conftest import EVAL_SMALL

    probe = {"_target_": f"{__name__}.LastCheckpointProbe", "_partial_": True, "path": str(tmp_path / "checkpoints" / "last.ckpt")}
    base = [o for o in FAST if not o.startswith(("callbacks.evaluation", "callbacks.best"))]
    cfg = compose_train(tiny_dir, world, tmp_path, *base, *EVAL_SMALL, "trainer.max_steps=5", "callbacks.evaluation.full_suite_min_steps=500",
                        "callbacks.evaluation.evals.vqa=null", "callbacks.evaluation.evals.edit=null", fast=False)
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.callbacks.evaluation.evals["probe"] = probe
    result = train(cfg)
    out = capsys.readouterr().out
    # announced: which suite, its size, the expected time (from the step-4 evaluation) and how to skip it
    assert re.search(r"end-of-run evaluation on the in-training subsets \(the run trained 5 < callbacks.evaluation.full_suite_min_steps=500 "
                     r"steps.*geneval_shapes 6, recon 2, probe 1 images / answers; about [0-9.]+ min at the last evaluation's pace.*"
                     r"callbacks.evaluation.at_end=false", out), out[-2000:]
    final = json.loads((tmp_path / "eval" / "final.json").read_text())
    assert final["eval/probe/last_ckpt_step"] == 5  # last.ckpt of the final step was on disk before the evaluation ran
    # what main returns to a sweeper: the configured metric, here the end-of-run evaluation's value
    with open_dict(cfg):
        cfg.optimized_metric = "eval/probe/last_ckpt_step"
    assert optimized_metric(cfg, result) == 5.0
    with open_dict(cfg):
        cfg.optimized_metric = "eval/nothing"
    with pytest.raises(ConfigError, match="optimized_metric=eval/nothing: the run logged no such metric.*eval/probe/last_ckpt_step"):
        optimized_metric(cfg, result)


def test_two_process_distributed_run(tiny_dir, world, tmp_path):
    cfg = compose_train(tiny_dir, world, tmp_path, "trainer=ddp_cpu", "trainer.max_steps=2", "callbacks.samples=null")
    result = train(cfg)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2
    assert result["metrics"]["train/loss_step"] > 0


@pytest.mark.parametrize("trainer", ["gpu", "ddp", "fsdp"])
def test_gpu_trainer_configs_compose_and_build_their_strategy(tiny_dir, world, tmp_path, trainer):
    """The GPU trainers cannot run here; their configs must compose and their strategy objects build."""
    from hydra.utils import instantiate

    cfg = compose_train(tiny_dir, world, tmp_path, f"trainer={trainer}")
    assert cfg.trainer.accelerator == "gpu"
    assert cfg.trainer.precision == "bf16-mixed"
    if trainer != "gpu":
        strategy = instantiate(cfg.trainer.strategy)
        assert type(strategy).__name__ == {"ddp": "DDPStrategy", "fsdp": "FSDPStrategy"}[trainer]
    if trainer == "fsdp":
        from diffusers.models.attention import JointTransformerBlock
        from diffusers.models.transformers.sana_transformer import SanaTransformerBlock
        from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer

        policy = instantiate(cfg.trainer.strategy.auto_wrap_policy)
        assert {SanaTransformerBlock, Qwen2DecoderLayer} <= set(policy._module_classes)
        sd3 = compose_train(tiny_dir, world, tmp_path, f"trainer={trainer}", family="sd3")
        assert JointTransformerBlock in instantiate(sd3.trainer.strategy.auto_wrap_policy)._module_classes


def test_slurm_launcher_config_composes(tiny_dir, world, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs `pip install -e .[slurm]`")
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    assert cfg.hydra.launcher.gpus_per_node == 8



def test_a_sweep_through_submitits_local_executor_writes_each_job_and_resumes(tiny_dir, world, tmp_path):
    """The path SLURM takes, run here: hydra-submitit-launcher's local executor pickles each job, runs it in its own
    process from ``<sweep>/.submitit`` and collects its result, as ``hydra/launcher=slurm`` does on a cluster. Each job
    writes its W&B run, ``sweep_job.json`` and ``finished.json``; the same command with ``+resume_sweep`` skips the
    finished job and runs the one that was not."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs `pip install -e .[dev]` (hydra-submitit-launcher)")
    from mingexp.lit.resume import FINISHED, JOB

    fast = [o for o in FAST if o != "logger=csv" and "callbacks.samples.rows" not in o and not o.startswith("model.")]
    command = ["-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", "hydra.launcher.cpus_per_task=1",
               f"paths.toy_dir={tiny_dir}", f"paths.shapes_dir={world}", f"paths.root_dir={tmp_path}", *fast, "trainer.max_steps=2",
               "callbacks.samples=null", "+experiment=no_align", "model.queries.scales=[2,4]", "seed=0,1"]
    proc = run_cli(command, cwd=tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    (sweep,) = (tmp_path / "outputs" / "no_align" / "multiruns").iterdir()
    jobs = [sweep / str(k) for k in range(2)]
    assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 2  # each job ran through submitit
    for job in jobs:
        assert (job / JOB).is_file() and (job / FINISHED).is_file() and (job / "checkpoints" / "last.ckpt").is_file()
        assert len(list(job.glob("wandb/offline-run-*/run-*.wandb"))) == 1
    # job 1 lost (as a job that never started on the cluster): the resumed sweep skips job 0 and runs job 1 again
    shutil.rmtree(jobs[1])
    finished_at = (jobs[0] / FINISHED).stat().st_mtime_ns
    proc = run_cli([*command, f"+resume_sweep={sweep}"], cwd=tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    logs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.out"))
    assert logs.count("finished before; skipped") == 1
    assert (jobs[0] / FINISHED).stat().st_mtime_ns == finished_at and (jobs[1] / FINISHED).is_file() and (jobs[1] / JOB).is_file()
    assert list((tmp_path / "outputs" / "no_align" / "multiruns").iterdir()) == [sweep]  # the same folder


def test_an_interrupted_sweep_resumes_with_one_flag(tiny_dir, world, tmp_path):
    """A 3-job multirun stopped during job 1 (SIGTERM, as a session end or preemption): job 0 finished, job 1
    is partial, job 2 never started. mingexp.report says so; the same command plus +resume_sweep=<sweep> skips
    job 0, resumes job 1 from its checkpoint and runs job 2, all in the same folder. The signal goes to the
    whole process group with a data worker running (as SLURM sends it): the sweep stops there, it does not log
    job 1 as failed and go on to job 2."""
    from mingexp import report
    from mingexp.lit.resume import FINISHED

    fast = [o for o in FAST if "callbacks.samples.rows" not in o]
    (tmp_path / "hold_seed1").touch()  # job 1 (seed 1) waits at step 2 for the signal
    command = ["-m", f"paths.toy_dir={tiny_dir}", f"paths.shapes_dir={world}", f"paths.root_dir={tmp_path}", *fast, "callbacks.samples=null",
               "trainer.max_steps=5", "callbacks.last.every_n_train_steps=1", "seed=0,1,2", "data.num_workers=1",
               f"+callbacks.marker._target_={__name__}.Marker", "+callbacks.marker.step=2",
               f"+callbacks.marker.path={tmp_path}/marker_seed" + "${seed}", f"+callbacks.marker.hold_if={tmp_path}/hold_seed" + "${seed}"]
    code, _, output = sigterm_when(command, tmp_path, lambda _: (tmp_path / "marker_seed1").is_file(), group=True)
    assert code == 143 and "SIGTERM at step 2" in output and "Launching" not in output.split("#1 :")[-1], output[-3000:]
    (sweep,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    jobs = [sweep / str(k) for k in range(3)]
    assert [(j / FINISHED).is_file() for j in jobs] == [True, False, False] and not jobs[2].exists()
    assert torch.load(jobs[1] / "checkpoints" / "interrupted.ckpt", map_location="cpu", weights_only=True)["global_step"] == 2
    finished_at = (jobs[0] / FINISHED).stat().st_mtime_ns

    # the report on the partial sweep: one complete run, job 1 started and unfinished, job 2 never started
    partial = report.main([str(sweep), f"out={tmp_path / 'report_partial'}"])
    assert partial["runs"] == 1 and [r["seed"] for r in partial["incomplete"]] == [1]
    assert [m["job"] for m in partial["missing"]] == [["seed=2"]]
    assert not partial["table"][0]["complete"]
    text = (tmp_path / "report_partial" / "results.md").read_text()
    assert "started, not finished" in text and "never started" in text and "+resume_sweep" in text

    (tmp_path / "hold_seed1").unlink()
    proc = run_cli([*command, f"+resume_sweep={sweep}"], cwd=tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert proc.stdout.count("finished before; skipped") == 1
    assert (jobs[0] / FINISHED).stat().st_mtime_ns == finished_at  # untouched
    assert list((tmp_path / "outputs" / "train" / "multiruns").iterdir()) == [sweep]  # no new sweep folder
    for job in jobs[1:]:
        last = torch.load(job / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        assert last["global_step"] == 5 and last["WebDataModule"]["samples_seen"] == 4 * 5 and (job / FINISHED).is_file()
    assert (proc.stdout + proc.stderr).count("Restoring states from the checkpoint") == 1  # job 1 resumed, job 2 started fresh
    whole = report.main([str(sweep), f"out={tmp_path / 'report_whole'}"])
    assert whole["runs"] == 3 and not whole["incomplete"] and not whole["missing"] and whole["table"][0]["complete"]

    # the same folder with another command's job refuses, naming both
    other = run_cli([c if c != "seed=0,1,2" else "seed=5,6,7" for c in command] + [f"+resume_sweep={sweep}"], cwd=tmp_path)
    assert other.returncode != 0 and "resume_sweep" in other.stderr and "seed=5" in other.stderr
