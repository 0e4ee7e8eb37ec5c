"""Run fingerprints: two runs of one seeded command are identical to the bit, and the diff names where runs part."""

from __future__ import annotations

import json

from mingexp.lit.fingerprint import first_difference, main
from mingexp.train import train
from tests.integration.conftest import compose_train

# as make train runs: one data worker
COMMON = ["trainer.max_steps=3", "data.num_workers=1"]


def fingerprint(out):
    return json.loads((out / "fingerprint.json").read_text())


def test_two_runs_of_one_seeded_command_are_identical_and_another_seed_parts_at_its_inputs(tiny_dir, world, tmp_path, capsys):
    for name in ("a", "b"):
        train(compose_train(tiny_dir, world, tmp_path / name, *COMMON))
    a, b = fingerprint(tmp_path / "a"), fingerprint(tmp_path / "b")
    assert set(a["weights"]) == {"0", "1"} and a["inputs"]["first_batch_step"] == 0
    assert a["environment"]["torch"] and a["environment"]["cpu_capability"] and a["environment"]["threads"] >= 1
    assert first_difference(a, b) is None and a == b  # every digest and loss equal, to the bit
    assert main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "identical in every recorded entry (steps 0, 1)" in capsys.readouterr().out

    # another seed: another data order, so the runs part at the first batch
    train(compose_train(tiny_dir, world, tmp_path / "c", *COMMON, "seed=1"))
    assert main([str(tmp_path / "a"), str(tmp_path / "c" / "fingerprint.json")]) == 1
    assert "the runs part at inputs.first_batch:" in capsys.readouterr().out


def test_the_diff_reports_the_environment_first_then_inputs_then_the_earliest_step():
    base = {"environment": {"torch": "2.13.0", "cpu_capability": "AVX2"}, "inputs": {"frozen_weights": "f", "first_batch": "x"},
            "weights": {"0": "w0", "1": "w1", "10": "w10"}}
    later = {**base, "weights": {"0": "w0", "1": "w1", "10": "zz"}}
    assert first_difference(base, later) == "weights at step 10: w10 vs zz (equal at step 1)"
    other_mllm = {**later, "inputs": {**base["inputs"], "frozen_weights": "g"}}
    assert first_difference(base, other_mllm) == "inputs.frozen_weights: f vs g"
    other_host = {**other_mllm, "environment": {**base["environment"], "cpu_capability": "AVX512"}}
    assert first_difference(base, other_host) == "environment.cpu_capability: AVX2 vs AVX512"
