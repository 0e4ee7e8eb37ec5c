"""Where two runs of the same command part: a fingerprint of what a run computed with, and a diff of two.

A seeded run on the same machine is bit-for-bit repeatable (tested: ``tests/integration/test_fingerprint.py``),
so when two runs of one command report different figures, something they computed with differs. The
:class:`RunFingerprint` callback writes ``<run>/fingerprint.json``:

* ``environment``: Python, the versions of the libraries that compute (torch, transformers, diffusers, ...),
  torch's CPU kernel set (``AVX2``, ``AVX512``: the same sums in another order give other floats) and thread
  count, the accelerator;
* ``inputs``: a digest of the frozen parts' weights (the toy MLLM of stage 0), and of the first batch (the
  world and the data order);
* ``weights``: a digest of the trainable weights after 0, 1, 10, 100, 1000, ... updates (at init and as
  training goes), and ``loss``: the loss of the batch that made each of those updates.

``python -m mingexp.lit.fingerprint a/fingerprint.json b/fingerprint.json`` names the first entry that differs
(environment first, then inputs, then the earliest step), i.e. where the two runs parted.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

import lightning as L
import torch

PACKAGES = ("torch", "transformers", "diffusers", "lightning", "numpy", "pillow", "tokenizers", "safetensors", "webdataset")


def digest(tensors: Iterable[torch.Tensor]) -> str:
    """SHA-256 (first 16 hex digits) of tensors' bytes, in order."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def environment() -> dict[str, Any]:
    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {
        "python": platform.python_version(),
        **{name: version(name) for name in PACKAGES},
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def checkpoints_at(step: int) -> bool:
    """Steps whose weights are recorded: 0, 1, 10, 100, 1000, ... and every 1000 after that."""
    return step in (0, 1, 10, 100) or (step > 0 and step % 1000 == 0)


class RunFingerprint(L.Callback):
    """Writes ``<dirpath>/fingerprint.json`` (see the module docstring), rewritten at each recorded step."""

    def __init__(self, dirpath: str) -> None:
        self.path = Path(dirpath) / "fingerprint.json"
        self.record: dict[str, Any] = {}

    def _trainable(self, module: L.LightningModule) -> list[torch.Tensor]:
        return [p for p in module.parameters() if p.requires_grad]

    def _write(self, trainer: L.Trainer) -> None:
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(self.record, indent=1))
            tmp.replace(self.path)

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        frozen = [p for p in module.parameters() if not p.requires_grad]
        # a resumed run keeps the steps its earlier part recorded (inputs are taken again: they must match)
        earlier = json.loads(self.path.read_text()) if trainer.global_step and self.path.is_file() else {}
        self.record = {
            "environment": environment(),
            "inputs": {"frozen_weights": digest(frozen)},
            "weights": earlier.get("weights", {}) if trainer.global_step else {"0": digest(self._trainable(module))},
            "loss": earlier.get("loss", {}),
        }
        self._write(trainer)

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch, batch_idx: int) -> None:
        if "first_batch" not in self.record["inputs"]:  # the first batch this run (or this resumed part) trains on
            if hasattr(batch, "fingerprint"):  # a batch that says what identifies it (post-training's prompt batches)
                tensors = list(batch.fingerprint())
            else:
                tensors = [getattr(batch.mllm, k) for k in ("input_ids", "attention_mask", "pixel_values") if getattr(batch.mllm, k) is not None]
                tensors += [batch.images] if batch.images is not None else []
            self.record["inputs"]["first_batch"] = digest(tensors)
            self.record["inputs"]["first_batch_step"] = trainer.global_step
            self._write(trainer)

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        # weights after `step` updates, and the loss of the batch that made the last of them
        step = trainer.global_step
        if checkpoints_at(step) and str(step) not in self.record["weights"]:
            self.record["weights"][str(step)] = digest(self._trainable(module))
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self.record["loss"][str(step)] = None if loss is None else float(loss)
            self._write(trainer)


def first_difference(a: dict, b: dict) -> str | None:
    """The first entry where two fingerprints differ (environment, then inputs, then the earliest step), or None."""
    for section in ("environment", "inputs"):
        for key in sorted(set(a.get(section, {})) | set(b.get(section, {}))):
            x, y = a.get(section, {}).get(key), b.get(section, {}).get(key)
            if x != y:
                return f"{section}.{key}: {x} vs {y}"
    shared = sorted(set(a.get("weights", {})) & set(b.get("weights", {})), key=int)
    equal = None
    for step in shared:
        if a["weights"][step] != b["weights"][step]:
            since = f" (equal at step {equal})" if equal is not None else ""
            return f"weights at step {step}: {a['weights'][step]} vs {b['weights'][step]}{since}"
        equal = step
    return None


def main(argv: list[str] | None = None) -> int:
    from mingexp.cli_args import REQUIRED, Opt, parse

    spec = {"a": Opt(Path, REQUIRED, "a run folder or its fingerprint.json", positional=True),
            "b": Opt(Path, REQUIRED, "the other run folder or fingerprint.json", positional=True)}
    args = parse(sys.argv[1:] if argv is None else argv, spec, "lit.fingerprint",
                 "Where two runs parted: the first differing entry of their fingerprints.")
    records = []
    for path in (args["a"], args["b"]):
        path = path / "fingerprint.json" if path.is_dir() else path
        if not path.is_file():
            raise SystemExit(f"lit.fingerprint: {path}: no such file (runs write it with callbacks.fingerprint, on by default)")
        records.append(json.loads(path.read_text()))
    difference = first_difference(*records)
    shared = sorted(set(records[0]["weights"]) & set(records[1]["weights"]), key=int)
    print(f"the runs part at {difference}" if difference else f"identical in every recorded entry (steps {', '.join(shared)})")
    return 1 if difference else 0


if __name__ == "__main__":
    sys.exit(main())
