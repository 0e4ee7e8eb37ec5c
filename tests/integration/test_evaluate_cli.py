"""`python -m mingexp.evaluate`: a checkpoint evaluated by every evaluation, and score-only on a folder."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import numpy as np

from mingexp.errors import ConfigError
from mingexp.eval.base import Evaluation, Example
from mingexp.evaluate import evaluate
from mingexp.train import train
from tests.conftest import CONF_DIR
from tests.integration.conftest import FAST, compose_train

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def checkpoint(tiny_dir, world, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    train(compose_train(tiny_dir, world, out, "trainer.max_steps=2", "callbacks.samples=null", "+module.ema={decay: 0.9}"))
    return out / "checkpoints" / "last.ckpt"


def compose_eval(tiny_dir, world, out, *overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("evaluate", overrides=[f"paths.toy_dir={tiny_dir}", f"paths.shapes_dir={world}", f"paths.root_dir={out}",
                                              f"out_dir={out}", "+data.prepare.progress=false", *overrides])


SMALL_EVAL = {
    "geneval_shapes": ["eval.prompts=6", "eval.images_per_prompt=2", "eval.steps=2"],
    "recon": ["eval.n=3", "eval.steps=2"],
    "edit": ["eval.n=3", "eval.steps=2"],
    "vqa": ["eval.n=3", "eval.max_new_tokens=3"],
}


@pytest.mark.parametrize("name", sorted(SMALL_EVAL))
def test_every_evaluation_runs_on_a_checkpoint(tiny_dir, world, checkpoint, tmp_path, name):
    # the checkpoint's run was made with the tiny model: its config is read from beside the checkpoint
    cfg = compose_eval(tiny_dir, world, tmp_path, f"ckpt_path={checkpoint}", f"+eval={name}", *SMALL_EVAL[name])
    result = evaluate(cfg)
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["evaluation"] == name and written["ckpt_path"] == str(checkpoint)
    if name == "geneval_shapes":
        assert 0 <= result["overall"] <= 1 and result["missing"] == 0
        layout = tmp_path / "geneval_shapes"
        assert len(list(layout.glob("0000?/samples/*.png"))) == 12 and (layout / "summary.json").is_file()
        assert written["summary"]["track"] == "shapes-subset6"
        # score-only: the same folder scored again from the command line gives the same Overall
        again = tmp_path / "again"
        proc = subprocess.run([sys.executable, "-m", "mingexp.evaluate", f"score_only={layout}", "+eval=geneval_shapes",
                               "images_per_prompt=2", f"out_dir={again}", f"paths.root_dir={tmp_path}", f"paths.shapes_dir={world}"],
                              cwd=REPO, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert json.loads((again / "results.json").read_text())["overall"] == pytest.approx(result["overall"])
    elif name == "recon":
        assert result["psnr"] > 0 and (tmp_path / "recon_examples.png").is_file()
    elif name == "edit":
        assert 0 <= result["success"] <= 1
    else:
        assert 0 <= result["accuracy"] <= 1


class MeanBrightness(Evaluation):
    """A new evaluation, as a contributor adds one (docs/architecture.md): the class and its conf/eval/<name>.yaml, nothing
    else. The mean brightness of ``n`` generated images, beside a black and a white canvas."""

    name = "brightness"
    example_labels = ("sample",)

    def __init__(self, n: int = 2, steps: int = 2) -> None:
        self.n, self.steps = n, steps

    def work(self) -> int:
        return self.n

    def __call__(self, model, out_dir=None):
        from mingexp.models.generation import generate

        prompt = "a photo of a red circle"
        images = generate(model, [prompt] * self.n, list(range(self.n)), steps=self.steps)
        mean = float(np.mean([np.asarray(im, dtype=np.float64).mean() / 255 for im in images]))
        return {"mean": mean}, [Example([im], prompt) for im in images]

    def baselines(self, size: int):
        return {"black": {"mean": 0.0}, "white": {"mean": 1.0}}


def test_a_new_evaluation_runs_through_evaluate_and_the_training_callback(tiny_dir, world, checkpoint, tmp_path):
    """Issue 35: a subclass of Evaluation plus its config file is all a new evaluation needs, for both entry points."""
    conf = tmp_path / "conf" / "eval"
    conf.mkdir(parents=True)
    (conf / "brightness.yaml").write_text(f"_target_: {__name__}.MeanBrightness\nn: 3\n")
    cfg = compose_eval(tiny_dir, world, tmp_path / "eval", f"ckpt_path={checkpoint}", f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
                       "+eval=brightness")
    result = evaluate(cfg)
    assert 0 < result["mean"] < 1 and result["baselines"] == {"black": {"mean": 0.0}, "white": {"mean": 1.0}}
    assert (tmp_path / "eval" / "brightness_examples.png").is_file()
    # the same class in training: in-training and end-of-run, with its baselines in final.json
    evals = f"{{brightness: {{_target_: {__name__}.MeanBrightness, _partial_: true, n: 2}}}}"
    run = tmp_path / "run"
    base = [o for o in FAST if not o.startswith(("callbacks.evaluation", "callbacks.best"))]
    train(compose_train(tiny_dir, world, run, *base, "trainer.max_steps=2", "~callbacks.evaluation.evals", f"+callbacks.evaluation.evals={evals}",
                        "callbacks.evaluation.every_n_steps=1", "~callbacks.evaluation.final_overrides", "+callbacks.evaluation.final_overrides={brightness: {n: 3}}",
                        "callbacks.evaluation.full_suite_min_steps=0", "callbacks.best.monitor=eval/brightness/mean", fast=False))
    final = json.loads((run / "eval" / "final.json").read_text())
    assert 0 < final["eval/brightness/mean"] < 1 and final["baselines"]["brightness"]["white"] == {"mean": 1.0}
    assert (run / "eval" / "brightness_final.png").is_file()


def test_missing_evaluation_choice_lists_them(tiny_dir, world, tmp_path):
    with pytest.raises(ConfigError, match="edit \\| gedit \\| geneval \\| geneval_shapes \\| imgedit \\| magicbrush \\| recon \\| vqa"):
        evaluate(compose_eval(tiny_dir, world, tmp_path))


def test_missing_checkpoint_is_named(tiny_dir, world, tmp_path):
    with pytest.raises(ConfigError, match="ckpt_path=.*nope.ckpt"):
        evaluate(compose_eval(tiny_dir, world, tmp_path, f"ckpt_path={tmp_path}/nope.ckpt", "+eval=recon", "eval.n=1",
                              f"model.mllm.path={tiny_dir}/mllm"))


def test_toy_conditioning_probe_scores_a_run_checkpoint(tiny_dir, checkpoint, tmp_path):
    """The study's --checkpoint mode rebuilds the run's model from beside the checkpoint and scores it."""
    probe = REPO / "experiments" / "toy_conditioning" / "probe.py"
    run = subprocess.run([sys.executable, str(probe), "--name", "ck", "--toy-dir", str(tiny_dir), "--out", str(tmp_path),
                          "--checkpoint", str(checkpoint)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    (line,) = [l for l in run.stdout.splitlines() if l.startswith("ck checkpoint ")]
    values = dict(re.findall(r"(spread|cspread|colour|shape|both|one) ([0-9.]+)", line))
    assert set(values) == {"spread", "cspread", "colour", "shape", "both", "one"}
    assert 0 < float(values["cspread"]) <= float(values["spread"]) and all(0 <= float(values[k]) <= 1 for k in ("colour", "shape", "both", "one"))
    assert (tmp_path / "ck_checkpoint.png").is_file()


def malicious_run(checkpoint: Path, folder: Path, edit) -> Path:
    """A copy of a real run folder whose .hydra/config.yaml was edited by ``edit(model_section, folder)``."""
    import shutil

    from omegaconf import OmegaConf

    shutil.copytree(checkpoint.parent.parent, folder)
    saved = OmegaConf.load(folder / ".hydra" / "config.yaml")
    model = OmegaConf.to_container(saved.model, resolve=False)
    edit(model, folder)
    saved.model = model
    OmegaConf.save(saved, folder / ".hydra" / "config.yaml")
    return folder / "checkpoints" / checkpoint.name


RUN_ATTACKS = {
    "torch.load": (lambda m, f: m.update(dit={"_target_": "torch.load", "f": f"{f}/payload.pt", "weights_only": False}),
                   r"config.yaml: model.dit._target_='torch.load' is refused"),
    "os.system": (lambda m, f: m["flow"].update(_target_="os.system", command=f"touch {f}/marker"), r"model.flow._target_='os.system'"),
    "builtins.open": (lambda m, f: m.update(vae={"_target_": "builtins.open", "file": f"{f}/marker", "mode": "w"}), r"model.vae._target_='builtins.open'"),
    "trust_remote_code": (lambda m, f: m["mllm"].update(trust_remote_code=True), r"model.mllm.trust_remote_code=true is refused"),
    "oc.env": (lambda m, f: m["mllm"].update(path="${oc.env:HOME}/mllm"), r"model.mllm.path=.*refused"),
}


@pytest.mark.parametrize("attack", sorted(RUN_ATTACKS))
def test_a_malicious_run_config_is_refused_by_evaluate_and_export(tiny_dir, world, checkpoint, tmp_path, attack):
    import torch

    from mingexp.export import export
    from tests.integration.test_pipeline import Payload

    edit, refused = RUN_ATTACKS[attack]
    ckpt = malicious_run(checkpoint, tmp_path / "run", edit)
    torch.save({"weights": Payload(tmp_path / "run" / "marker")}, tmp_path / "run" / "payload.pt")
    with pytest.raises(ConfigError, match=refused):
        evaluate(compose_eval(tiny_dir, world, tmp_path / "eval", f"ckpt_path={ckpt}", "+eval=recon", "eval.n=1"))
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("export", overrides=[f"ckpt_path={ckpt}", f"out={tmp_path / 'export'}", f"paths.toy_dir={tiny_dir}"])
    with pytest.raises(ConfigError, match=refused):
        export(cfg)
    assert not (tmp_path / "run" / "marker").exists() and not (tmp_path / "export" / "mingexp_pipeline.json").exists()
    if attack == "trust_remote_code":  # given on the user's own command line, it is accepted
        result = evaluate(compose_eval(tiny_dir, world, tmp_path / "eval", f"ckpt_path={ckpt}", "+eval=recon", "eval.n=1", "eval.steps=1",
                                       "model.mllm.trust_remote_code=true"))
        assert result["psnr"] > 0
