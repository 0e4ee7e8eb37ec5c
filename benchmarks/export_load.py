"""Load time of an export folder against the bare ``from_pretrained`` of its parts, each in a fresh process, same run.

What a ``python -m mingexp.generate`` call pays before it samples. Four children, each timed from its first line:

* ``imports``: only the library modules a load needs (transformers' Qwen2.5-VL and Qwen2 modeling, diffusers'
  SANA) — the floor any loader of these parts pays;
* ``bare``: those imports plus each part's own ``from_pretrained`` (the MLLM folder, the DiT folder, the connector's
  Qwen2 config + safetensors, the scheduler) with nothing of mingexp;
* ``mingexp``: ``MingUniPipeline.from_pretrained(folder)`` (its checks, the config read as data, strict loads);
* ``warm``: the same load a second time in one process (a demo, a notebook, a server: imports already paid).

Prints each time (median of ``--repeats``) and the ratio ``mingexp / bare``.

    python benchmarks/export_load.py --export exports/toy          # an existing export
    python benchmarks/export_load.py                               # a random-weight toy export written to a temp dir
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

IMPORTS = """
import transformers.models.qwen2_5_vl.modeling_qwen2_5_vl, transformers.models.qwen2.modeling_qwen2
import diffusers.models.transformers.sana_transformer
"""
BARE = IMPORTS + """
import json, torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, Qwen2Config, Qwen2Model
from diffusers import SanaTransformer2DModel, FlowMatchEulerDiscreteScheduler
index = json.loads((folder / "mingexp_pipeline.json").read_text())
AutoModelForImageTextToText.from_pretrained(index["mllm_source"])
SanaTransformer2DModel.from_pretrained(folder / "transformer")
Qwen2Model(Qwen2Config.from_pretrained(folder / "connector")).load_state_dict(
    {k.removeprefix("transformer."): v for k, v in load_file(folder / "connector" / "model.safetensors").items() if k.startswith("transformer.")},
    strict=False)
load_file(folder / "queries" / "model.safetensors")
FlowMatchEulerDiscreteScheduler.from_pretrained(folder / "scheduler")
"""
MINGEXP = """
from mingexp.pipeline import MingUniPipeline
MingUniPipeline.from_pretrained(folder)
"""
WARM = MINGEXP + """
t0 = time.perf_counter()
MingUniPipeline.from_pretrained(folder)
"""


def child(body: str, folder: Path) -> float:
    """Seconds from the child's first line to its end (or from ``t0`` when the body sets it)."""
    code = "import time\nt0 = time.perf_counter()\nfrom pathlib import Path\nfolder = Path(%r)\n" % str(folder)
    code += textwrap.dedent(body) + "\nprint(time.perf_counter() - t0)\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(proc.stderr[-2000:])
    return float(proc.stdout.strip().splitlines()[-1])


def toy_export(out: Path) -> Path:
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from mingexp.models.tiny import write_all
    from mingexp.pipeline.pipeline import MingUniPipeline

    write_all(out / "tiny")
    with initialize_config_module(config_module="mingexp.conf", version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.toy_dir={out / 'tiny'}"])
    pipe = MingUniPipeline(instantiate(cfg.model), OmegaConf.to_container(cfg.model, resolve=True))
    return pipe.save_pretrained(out / "export")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--export", type=Path, help="an export folder (default: a random-weight toy export in a temp dir)")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.export or toy_export(Path(tmp))
        kinds = (("imports", IMPORTS), ("bare", BARE), ("mingexp", MINGEXP), ("warm", WARM))
        runs: dict[str, list[float]] = {name: [] for name, _ in kinds}
        for _ in range(args.repeats):  # interleaved, so that a busy moment of the machine falls on every kind alike
            for name, body in kinds:
                runs[name].append(child(body, folder))
        times = {name: statistics.median(values) for name, values in runs.items()}
    for name, seconds in times.items():
        print(f"{name:>8}  {seconds:6.2f} s")
    print(f"mingexp / bare = {times['mingexp'] / times['bare']:.2f}; imports are {times['imports'] / times['mingexp']:.0%} of the cold load; "
          f"a warm load takes {times['warm']:.2f} s")
    return times


if __name__ == "__main__":
    main()
