"""The training harness: every experiment file runs, multirun, resume, distributed, NaN guard, bad input."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.errors import InstantiationException, MissingConfigException

from mingexp.errors import ConfigError
from mingexp.train import train
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


@pytest.mark.parametrize("experiment", ["ms_align", "single_scale", "no_align"])
def test_experiment_files_train(tiny_dir, world, tmp_path, experiment):
    overrides = [f"+experiment={experiment}"]
    if experiment == "single_scale":
        overrides.append("model.queries.scales=[4]")  # the file's [16], shrunk to the tiny DiT
    cfg = compose_train(tiny_dir, world, tmp_path, *overrides)
    result = train(cfg)
    assert cfg.task_name == experiment
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    rows = metrics(tmp_path)
    assert len(column(rows, "train/flow")) == 3
    has_align = any(c.startswith("train/align/s") and column(rows, c) for c in rows[0])
    assert has_align == (experiment != "no_align")
    assert result["samples"] and Path(result["samples"][-1]).name == "final.png"


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


def test_staged_recipe_files_train_from_the_previous_stage(tiny_dir, world, wds_data, tmp_path):
    previous = None
    for stage in ("stage1_t2i", "stage2_recon", "stage3_edit", "stage4_sft"):
        out = tmp_path / stage
        extra = [f"paths.data_dir={wds_data}", "trainer.max_steps=2"]
        if previous:
            extra.append(f"init_from={previous}")
        result = train(compose_train(tiny_dir, world, out, f"+experiment={stage}", *extra, shapes=False))
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
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(NaNData(), batch_size=None))
    assert module.nonfinite_total == 3  # two tolerated, the third stops the run
    assert trainer.global_step == 3 < 10  # Lightning counts the skipped steps; the run ended early
    assert all(torch.equal(a, b) for a, b in zip(params_before, module.model.dit.parameters()))  # no update applied


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
    ("model.mllm.path=/nope", "model.mllm.path=/nope: no such folder"),
])
def test_bad_values_fail_before_the_first_step(tiny_dir, world, tmp_path, override, msg):
    cfg = compose_train(tiny_dir, world, tmp_path, override)
    with pytest.raises((ConfigError, InstantiationException), match=msg):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()


def test_data_source_without_files_fails_before_the_first_step(tiny_dir, world, tmp_path):
    cfg = compose_train(tiny_dir, world, tmp_path, f"data.sources=[{{urls: '{tmp_path}/none/*.tar', task: t2i}}]")
    with pytest.raises(ConfigError, match=r"matches no file"):
        train(cfg)


def test_unknown_experiment_lists_the_available_ones(tiny_dir, world, tmp_path):
    with pytest.raises(MissingConfigException, match=r"(?s)experiment/nope.*ms_align.*no_align"):
        compose_train(tiny_dir, world, tmp_path, "+experiment=nope")


def test_sweep_command_composes_all_twelve_jobs(tiny_dir, world, tmp_path):
    """The README's sweep: 2 scale settings × 2 alignment weights × 3 seeds."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    # what Hydra receives from the shell for: model.queries.scales='[16]','[4,8,16]' model.align.weight=0,1 seed=0,1,2
    sweep = parser.parse_overrides(["model.queries.scales=[16],[4,8,16]", "model.align.weight=0,1", "seed=0,1,2"])
    jobs = [[]]
    for o in sweep:
        jobs = [j + [f"{o.key_or_group}={v}"] for j in jobs for v in o.sweep_string_iterator()]
    assert len(jobs) == 12
    configs = [compose_train(tiny_dir, world, tmp_path, "+experiment=ms_align", *job, fast=False) for job in jobs]
    assert {(tuple(c.model.queries.scales), c.model.align.weight, c.seed) for c in configs} == {
        (s, w, seed) for s in ((16,), (4, 8, 16)) for w in (0, 1) for seed in (0, 1, 2)
    }


def run_cli(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1"}
    return subprocess.run([sys.executable, "-m", "mingexp.train", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_multirun_two_jobs_each_in_its_own_folder(tiny_dir, world, tmp_path):
    fast = [o for o in FAST if not o.startswith("callbacks.samples.prompts")]
    args = ["-m", f"paths.toy_dir={tiny_dir}", f"paths.shapes_dir={world}", f"paths.root_dir={tmp_path}", *fast,
            "trainer.max_steps=2", "callbacks.samples=null", "seed=0,1"]
    proc = run_cli(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted((tmp_path / "outputs" / "train" / "multiruns").glob("*/*/checkpoints/last.ckpt"))
    assert len(jobs) == 2 and jobs[0].parents[1] != jobs[1].parents[1]


def test_wandb_offline_run_lands_on_disk(tiny_dir, world, tmp_path):
    fast = [o for o in FAST if o != "logger=csv" and not o.startswith("callbacks.samples.prompts")]
    args = [f"paths.toy_dir={tiny_dir}", f"paths.shapes_dir={world}", f"paths.root_dir={tmp_path}", *fast,
            "trainer.max_steps=2", "callbacks.samples=null", "+experiment=ms_align", "logger.wandb.offline=true"]
    proc = run_cli(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list((tmp_path / "outputs" / "ms_align" / "runs").glob("*/wandb/offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))


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
        from diffusers.models.transformers.sana_transformer import SanaTransformerBlock

        policy = instantiate(cfg.trainer.strategy.auto_wrap_policy)
        assert SanaTransformerBlock in policy._module_classes


def test_slurm_launcher_config_composes(tiny_dir, world, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs `pip install -e .[slurm]`")
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    assert cfg.hydra.launcher.gpus_per_node == 8

