"""Weights files are read only as safetensors and loaded exactly; every error names the file and the keys."""

from __future__ import annotations

import os
import stat

import pytest
import torch
from torch import nn

from mingexp.errors import ConfigError
from mingexp.io.tensors import load_exact, read_tensors, save_tensors


def test_a_pickle_named_safetensors_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "model.safetensors"
    torch.save({"w": torch.ones(2)}, path)
    with pytest.raises(ConfigError, match=rf"{path}: not a readable safetensors file .*a pickled file is refused"):
        read_tensors(path)
    with pytest.raises(ConfigError, match=rf"{tmp_path / 'absent.safetensors'}: no such file"):
        read_tensors(tmp_path / "absent.safetensors")


def test_save_is_atomic_and_read_can_take_a_prefix(tmp_path):
    path = tmp_path / "w.safetensors"
    save_tensors({"a.x": torch.ones(2), "b.y": torch.zeros(3)}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]  # no temporary file left
    assert list(read_tensors(path, "a.")) == ["a.x"]


def test_load_exact_names_missing_unknown_and_misshapen_keys_in_the_files_spelling():
    module = nn.Sequential(nn.Linear(4, 3), nn.GELU(), nn.Linear(3, 3))
    good = {k: torch.zeros_like(v) for k, v in module.state_dict().items()}
    load_exact(module, good, "f.safetensors")
    assert float(module[0].weight.detach().abs().sum()) == 0
    spelled = lambda k: f"linear_proj.{k}"  # noqa: E731
    with pytest.raises(ConfigError, match=r"f.safetensors: missing \['linear_proj.0.bias'\]"):
        load_exact(module, {k: v for k, v in good.items() if k != "0.bias"}, "f.safetensors", spelled)
    with pytest.raises(ConfigError, match=r"unknown \['9.weight'\]"):
        load_exact(module, {**good, "9.weight": torch.zeros(1)}, "f.safetensors")
    with pytest.raises(ConfigError, match=r"shapes differ: linear_proj.2.weight is \[3, 2\] but the model's 2.weight is \[3, 3\]"):
        load_exact(module, {**good, "2.weight": torch.zeros(3, 2)}, "f.safetensors", spelled)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_writes_get_the_mode_open_would_give(tmp_path, umask):
    """A result written through a temporary file reads like any other file (0666 less the umask), not mkstemp's 0600."""
    from mingexp.io.records import write_json

    old = os.umask(umask)
    try:
        json_file = write_json(tmp_path / "results.json", {"a": 1.0})
        save_tensors({"w": torch.zeros(2)}, tmp_path / "model.safetensors")
    finally:
        os.umask(old)
    for path in (json_file, tmp_path / "model.safetensors"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
