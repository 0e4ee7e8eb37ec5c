"""The real training configs, shrunk to toy size, on a small shapes world written once per session."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import webdataset as wds
from hydra import compose, initialize_config_dir

from tests.conftest import CONF_DIR, compose_cfg, shrunk
from tests.data.helpers import jpg, png

WORLD = {"t2i": 64, "edit": 24, "edit_chains": 6, "style": 12, "vqa": 48, "textqa": 16, "heldout": 4}

# Everything a run needs to be a few seconds long (beside the shrunk model, tests.conftest.shrunk).
RUN_FAST = [
    "logger=csv",
    "trainer.max_steps=3",
    "trainer.log_every_n_steps=1",
    "data.num_workers=0",
    "data.batch_size=4",
    "data.epoch_batches=4",
    "+data.prepare.progress=false",
    *[f"data.prepare.counts.{k}={v}" for k, v in WORLD.items()],
    "callbacks.samples.every_n_steps=0",
    # a dict (the toy sheet's _target_) is replaced by a list in two steps: delete, then add
    "~callbacks.samples.rows",
    "+callbacks.samples.rows=[{label: shapes, prompts: [a photo of a red circle, a photo of two stars]}]",
    "callbacks.samples.seeds=[0]",
    "callbacks.samples.steps=2",
    "callbacks.last.every_n_train_steps=1",
    "callbacks.evaluation=null",
    "optimized_metric=train/loss_epoch",  # ms_align's eval/... needs the evaluation (test_train: the optimised metric)
    "callbacks.best.monitor=train/loss_epoch",
    "callbacks.best.mode=min",
]
FAST = [*shrunk("sana"), *RUN_FAST]

# The in-training evaluation, shrunk: every 2 steps and at the end, a few prompts / images, 2 sampler steps.
EVAL_SMALL = [
    "callbacks.evaluation.every_n_steps=2",
    "callbacks.best.every_n_train_steps=2",
    "callbacks.evaluation.evals.geneval_shapes.prompts=6",
    "callbacks.evaluation.evals.geneval_shapes.steps=2",
    "callbacks.evaluation.evals.recon.n=2",
    "callbacks.evaluation.evals.recon.steps=2",
    "callbacks.evaluation.evals.edit.n=2",
    "callbacks.evaluation.evals.edit.steps=2",
    "callbacks.evaluation.evals.vqa.n=2",
    "callbacks.evaluation.evals.vqa.max_new_tokens=4",
    "callbacks.evaluation.final_overrides={geneval_shapes: {prompts: 6, images_per_prompt: 2}, recon: {n: 3}}",
    "callbacks.evaluation.full_suite_min_steps=0",  # these runs are a few steps long: apply final_overrides anyway
]


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> Path:
    from mingexp.data.shapes import prepare_shapes

    return prepare_shapes(tmp_path_factory.mktemp("shapes") / "v1", counts=WORLD, shard_size=32, progress=False)


@pytest.fixture(scope="session")
def wds_data(tmp_path_factory) -> Path:
    """Tiny shards for the staged recipe's sources (paths.data_dir layout of data/paper_mixture.yaml)."""
    root = tmp_path_factory.mktemp("data")
    for name in ("laion", "coyo"):
        (root / name).mkdir()
        with wds.TarWriter(str(root / name / "00000.tar")) as sink:
            for i in range(8):
                sink.write({"__key__": f"{name}{i}", "jpg": jpg(48, 40, seed=i), "txt": f"a photo number {i}"})
    for name in ("instructpix2pix", "magicbrush"):
        (root / name).mkdir()
        with wds.TarWriter(str(root / name / "00000.tar")) as sink:
            for i in range(8):
                sink.write({"__key__": f"{name}{i}", "src.png": png(), "tgt.png": png(color=(0, 0, 200)), "txt": "make it blue"})
    for name in ("wikiart", "stylebooth"):
        (root / name).mkdir()
        with wds.TarWriter(str(root / name / "00000.tar")) as sink:
            for i in range(8):
                sink.write({"__key__": f"{name}{i}", "tgt.png": png(color=(9, 99, 9)), "txt": "in the style of x",
                            "json": json.dumps({"style": "x"})})
    return root


def compose_train(tiny_dir: Path, world: Path, out: Path, *overrides: str, fast: bool = True, model: bool = True, shapes: bool = True,
                  family: str = "sana"):
    """Compose conf/train.yaml shrunk to toy size with the ``family`` decoder; ``model=False`` for runs without a
    unified model (toy_mllm), ``shapes=False`` for data configs that generate nothing (data=wds)."""
    base = [f"paths.toy_dir={tiny_dir}", f"paths.shapes_dir={world}", f"paths.output_dir={out}", f"paths.root_dir={out}"]
    extra = [
        o for o in [*shrunk(family), *RUN_FAST]
        if (model or not o.lstrip("~+").startswith(("model.", "model/", "callbacks.samples.", "callbacks.best.")))
        and (shapes or not o.lstrip("~+").startswith("data.prepare"))
    ] if fast else []
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=[*base, *extra, *overrides])


def free_port() -> int:
    """A free local TCP port (the demo's page in the tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def pipe(tiny_dir):
    """The shrunk toy model as a pipeline (untrained: the demo's tests check plumbing, not pictures)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from mingexp.pipeline.pipeline import MingUniPipeline

    cfg = compose_cfg(tiny_dir)
    return MingUniPipeline(instantiate(cfg.model), OmegaConf.to_container(cfg.model, resolve=True))
