"""The toy-conditioning study script runs on the real (shrunk) config and writes what its README reports."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import torch

from tests.conftest import SMALL

PROBE = Path(__file__).resolve().parents[2] / "experiments" / "toy_conditioning" / "probe.py"


def load_script(path: Path):
    """A study script (loaded by path: experiments/ is not a package) as a module."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_probe_trains_scores_and_writes_its_grid(tiny_dir, tmp_path):
    out = tmp_path / "probe"
    run = subprocess.run(
        [sys.executable, str(PROBE), "--name", "smoke", "--steps", "2", "--eval-every", "2", "--batch-size", "4",
         "--toy-dir", str(tiny_dir), "--out", str(out), *SMALL, "model.queries.trainable=false"],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    line = [l for l in run.stdout.splitlines() if l.startswith("smoke step 2 ")]
    assert line, run.stdout
    # every rate is a fraction of the 60 colour × shape prompts
    rates = dict(re.findall(r"(colour|shape|both|one) ([0-9.]+)", line[0]))
    assert set(rates) == {"colour", "shape", "both", "one"}
    assert all(0.0 <= float(v) <= 1.0 for v in rates.values())
    assert float(rates["both"]) <= min(float(rates["colour"]), float(rates["shape"]))
    # the condition's spread across the 60 prompts; the colour's part of it is no larger (triangle inequality)
    spread, cspread = map(float, re.search(r"spread ([0-9.]+) cspread ([0-9.]+)", line[0]).groups())
    assert 0.0 < cspread <= spread
    # the frozen block has no optimizer group
    header = [l for l in run.stdout.splitlines() if l.startswith("smoke {")]
    assert header and "'dit'" in header[0] and "'queries'" not in header[0]
    assert (out / "smoke_step2.png").is_file()


def test_token_control_bypasses_the_mllm(tiny_dir, tmp_path):
    """--condition tokens: the connector reads a caption-token embedding; alignment must be off, and says so."""
    options = [sys.executable, str(PROBE), "--name", "ctl", "--steps", "2", "--eval-every", "2", "--batch-size", "4",
               "--toy-dir", str(tiny_dir), "--out", str(tmp_path), "--condition", "tokens", "--data", "single"]
    overrides = [*SMALL, "model.queries.trainable=false"]
    refused = subprocess.run([*options, *overrides], capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "model.align.weight=0" in refused.stderr
    run = subprocess.run([*options, "--train-embedding", *overrides, "model.align.weight=0"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert any(l.startswith("ctl step 2 ") for l in run.stdout.splitlines()), run.stdout
    assert (tmp_path / "ctl_step2.png").is_file()


def test_decodability_script_reports_held_out_accuracies(tiny_dir):
    script = PROBE.with_name("decodability.py")
    run = subprocess.run([sys.executable, str(script), "--toy-dir", str(tiny_dir), *SMALL], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert re.search(r"prompts 180, query states \(\d+, \d+\), relative spread [0-9.]+", run.stdout), run.stdout
    for pooled in ("mean", "flat"):
        (line,) = [l for l in run.stdout.splitlines() if l.startswith(pooled + ":")]
        rates = [float(v) for v in re.findall(r"(?:colour|shape) ([0-9.]+)", line)]
        assert len(rates) == 2 and all(0.0 <= r <= 1.0 for r in rates)


def test_held_out_ridge_separates_a_linear_code_and_not_noise():
    mod = load_script(PROBE.with_name("decodability.py"))
    g = torch.Generator().manual_seed(0)
    labels = [i % 5 for i in range(100)]
    groups = [str(i // 20) for i in range(100)]
    codes = torch.randn(5, 40, generator=g)
    coded = codes[labels] + 0.3 * torch.randn(100, 40, generator=g)
    assert mod.held_out_accuracy(coded, labels, groups) > 0.95
    assert mod.held_out_accuracy(torch.randn(100, 40, generator=g), labels, groups) < 0.5


def test_single_object_data_is_the_evaluations_own_prompts():
    import random

    mod = load_script(PROBE)
    texts, images = mod.scenes(random.Random(0), 32, 40, "single")
    assert images.shape == (40, 3, 32, 32) and -1.0 <= float(images.min()) and float(images.max()) <= 1.0
    prompts = {mod.prompt(c, s) for c in mod.COLORS for s in mod.SHAPES}
    assert mod.prompt("orange", "star") == "a photo of an orange star"
    assert set(texts) <= prompts and len(set(texts)) > 20
    mixed, _ = mod.scenes(random.Random(0), 32, 40)
    assert not set(mixed) <= prompts  # the world's mix has other captions


def test_fixed_data_gives_each_caption_one_image_in_the_first_slot_the_detector_reads():
    import random

    import numpy as np
    from PIL import Image

    from mingexp.eval.geneval.shapes_detector import ShapesDetector

    mod = load_script(PROBE)
    texts, images = mod.scenes(random.Random(0), 32, 120, "fixed")
    by_caption = {}
    for text, image in zip(texts, images):
        by_caption.setdefault(text, []).append(image)
    assert len(by_caption) > 30 and set(by_caption) <= {mod.prompt(c, s) for c in mod.COLORS for s in mod.SHAPES}
    for same in by_caption.values():  # memorisation: a caption always comes with the same image
        assert all(torch.equal(same[0], other) for other in same[1:])
    # the detector reads back each caption's colour and shape, as the probe's scorer will
    detector = ShapesDetector()
    for text, (image, *_) in by_caption.items():
        pixels = ((image.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
        (found,) = detector.detect(Image.fromarray(np.ascontiguousarray(pixels)))
        assert text == mod.prompt(found.colour, found.label)
        ys, xs = np.nonzero(found.mask)
        # in the first slot: the top-left cell, whose centre is at (7.5, 7.5) on the 32-px image
        assert abs(xs.mean() - 7.5) < 1.5 and abs(ys.mean() - 7.5) < 2.5  # (a triangle's mass sits low)
