"""Peak memory of the demo's session reload on hostile zips: this checkout against another (the baseline), same run.

Each trial runs in a fresh child process that builds the toy pipeline from tiny checkpoints, then calls the
demo's ``Demo.load`` on a crafted zip; the figure is the peak resident memory the call adds (``ru_maxrss`` after
minus before). Trials:

* ``understated``: a 1 MB zip whose image member inflates to 1 GiB of zeros while its headers declare 100 bytes;
* ``many``: 150 black 2048² PNGs (a 40 KB zip) with a valid transcript;
* ``twelve``: 12 of them (within the turn cap: the session's pixel cap decides).

    python benchmarks/hostile_inputs.py                                  # this checkout only
    git worktree add /tmp/before c5c9cd7
    python benchmarks/hostile_inputs.py --baseline-src /tmp/before/src   # and the baseline's src, side by side

The baseline's ``Demo.load(upload, folder)`` and this checkout's ``Demo.load(upload, previous)`` differ in their
second argument; the child passes what each expects.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent("""
    import inspect, json, resource, sys, tempfile
    from pathlib import Path
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from mingexp.pipeline.pipeline import MingUniPipeline
    from mingexp.demo.actions import Demo
    tiny, conf, upload = sys.argv[1], sys.argv[2], sys.argv[3]
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.toy_dir={tiny}", "model.mllm.path=" + tiny + "/mllm"])
    pipe = MingUniPipeline(instantiate(cfg.model), OmegaConf.to_container(cfg.model, resolve=True))
    demo = Demo(pipe, "toy")
    second = tempfile.mkdtemp() if "folder" in inspect.signature(demo.load).parameters else None
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        session = demo.load(upload, second)
        outcome = f"loaded {len(session.images)} images"
    except Exception as e:
        outcome = f"refused: {type(e).__name__}: {str(e)[:120]}"
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_added_mib": (after - before) / 1024, "outcome": outcome}))
""")


def transcript(n: int) -> bytes:
    turns = [{"kind": "generate" if k == 0 else "edit", "text": f"turn {k}", "source": None if k == 0 else k - 1, "image": k,
              "answer": None, "seconds": 0.1, "options": {}, "image_file": f"image_{k:03d}.png"} for k in range(n)]
    return json.dumps({"turns": turns}).encode()


def understated(path: Path, real_mib: int = 1024, declared: int = 100) -> Path:
    import struct

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("transcript.json", transcript(1))
        with z.open("image_000.png", "w") as f:
            for _ in range(real_mib):
                f.write(bytes(1 << 20))
    data = bytearray(path.read_bytes())
    for signature, name_len_at, name_at, size_at in ((b"PK\x03\x04", 26, 30, 22), (b"PK\x01\x02", 28, 46, 24)):
        pos = 0
        while (pos := data.find(signature, pos)) != -1:
            n = struct.unpack_from("<H", data, pos + name_len_at)[0]
            if data[pos + name_at: pos + name_at + n] == b"image_000.png":
                struct.pack_into("<I", data, pos + size_at, declared)
            pos += 4
    path.write_bytes(bytes(data))
    return path


def many(path: Path, n: int, side: int = 2048) -> Path:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (side, side)).save(buf, format="PNG")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("transcript.json", transcript(n))
        for k in range(n):
            z.writestr(f"image_{k:03d}.png", buf.getvalue())
    return path


def trial(src: Path, tiny: Path, upload: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tiny), str(src.parent / "conf"), str(upload)], env=env,
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        return {"peak_added_mib": float("nan"), "outcome": f"child died (exit {proc.returncode}): {proc.stderr[-200:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-src", type=Path, help="another checkout's src/ (e.g. a worktree of the commit before the fix)")
    args = parser.parse_args(argv)
    from mingexp.models.tiny import write_all

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_all(tmp / "tiny")
        tiny = tmp / "tiny"
        zips = {"understated": understated(tmp / "understated.zip"), "many": many(tmp / "many.zip", 150),
                "twelve": many(tmp / "twelve.zip", 12)}
        sources = {"this": ROOT / "src", **({"baseline": args.baseline_src} if args.baseline_src else {})}
        print(f"{'trial':<12} {'zip':>9}  " + "  ".join(f"{name + ' peak MiB':>18}" for name in sources) + "  outcomes")
        for name, path in zips.items():
            results = {label: trial(src, tiny, path) for label, src in sources.items()}
            print(f"{name:<12} {path.stat().st_size / 1e6:>7.2f}MB  "
                  + "  ".join(f"{r['peak_added_mib']:>18.0f}" for r in results.values()) + "  "
                  + " | ".join(f"{k}: {r['outcome']}" for k, r in results.items()))


if __name__ == "__main__":
    main()
