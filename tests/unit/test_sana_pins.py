"""The SANA adapter carries the pre-seam behaviour exactly: losses and samples pinned at commit 062162d.

``tests/fixtures/sana_pins.json`` was written by this file's ``__main__`` at 062162d, before SANA moved behind
the ``Denoiser`` seam (``mingexp.models.denoisers``); each case's numbers must come out of today's code
unchanged (to float32 rounding). Regenerate only for a deliberate change of behaviour, and say so.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import build

PINS = Path(__file__).resolve().parents[1] / "fixtures" / "sana_pins.json"

# case → overrides of the shrunk toy preset (tests/conftest.SMALL)
CASES = {
    "x_prediction_semantic_align": ["model.align.weight=1", "model.cond_dropout.p=0.5"],
    "velocity_latent_align": ["model.flow.prediction=velocity", "model/align=latent", "model.align.weight=1", "model.align.layer=0"],
    "no_align_zeros_null": ["model.align.weight=0", "model/cond_dropout/null_condition=zeros"],
}


def measure(model) -> dict[str, float]:
    """One training step's loss terms and a guided 3-step sample's pixels, from fixed seeds."""
    import numpy as np
    from PIL import Image

    prompts = ["a photo of a red circle", "a photo of two blue stars", "what is <image> this", "x"]
    im = Image.fromarray((np.random.RandomState(0).rand(24, 24, 3) * 255).astype("uint8"))
    inputs = model.mllm.processor(prompts, [[], [], [im], []])
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    model.train()
    out = model(inputs, images, generator=torch.Generator().manual_seed(0))
    values = {f"loss/{k}": v.item() for k, v in out.terms.items()}
    values["loss"] = out.loss.item()
    model.eval()
    with torch.no_grad():
        x = model.sample(model.mllm.processor(prompts[:2]), 32, 32, steps=3, guidance_scale=3.0,
                         generator=[torch.Generator().manual_seed(s) for s in (0, 7)])
    values["sample/sum"] = float(x.double().sum())
    values["sample/abs_dev"] = float((x.double() - 0.5).abs().sum())
    for i, (c, h, w) in enumerate([(0, 0, 0), (1, 5, 17), (2, 31, 31), (0, 16, 8)]):
        values[f"sample/px{i}"] = float(x[i % 2, c, h, w])
    return values


@pytest.mark.parametrize("case", sorted(CASES))
def test_sana_adapter_reproduces_the_pinned_outputs(tiny_dir, case):
    pinned = json.loads(PINS.read_text())[case]
    got = measure(build(tiny_dir, *CASES[case], seed=3))
    assert set(got) == set(pinned)
    for key, value in pinned.items():
        assert got[key] == pytest.approx(value, rel=2e-5, abs=2e-6), key


if __name__ == "__main__":  # python -m tests.unit.test_sana_pins <tiny_dir> (writes the fixture)
    import sys

    from mingexp.models.tiny import write_all

    root = Path(sys.argv[1])
    if not (root / "mllm").is_dir():
        write_all(root)
    PINS.write_text(json.dumps({case: measure(build(root, *CASES[case], seed=3)) for case in sorted(CASES)}, indent=1) + "\n")
    print(PINS.read_text())
