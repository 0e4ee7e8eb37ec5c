"""The toy-conditioning study script runs on the real (shrunk) config and writes what its README reports."""

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import SMALL

PROBE = Path(__file__).resolve().parents[2] / "experiments" / "toy_conditioning" / "probe.py"


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
    # the frozen block has no optimizer group
    header = [l for l in run.stdout.splitlines() if l.startswith("smoke {")]
    assert header and "'dit'" in header[0] and "'queries'" not in header[0]
    assert (out / "smoke_step2.png").is_file()
