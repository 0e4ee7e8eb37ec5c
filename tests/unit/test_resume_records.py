"""A sweep's records read through one validated reader; a folder to resume is checked before anything runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mingexp.errors import ConfigError
from mingexp.lit import resume

REPO = Path(__file__).resolve().parents[2]


def finished(folder: Path, checkpoints: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / resume.FINISHED).write_text(json.dumps({"metrics": {"loss": 0.5}, "output_dir": str(folder),
                                                      "checkpoints": checkpoints, "samples": []}))
    return folder


@pytest.mark.parametrize("text,message", [
    ("{not json", r"finished.json: not readable JSON \(JSONDecodeError"),
    ("[1, 2]", r"finished.json: must be a JSON object, not list"),
    ('{"metrics": [], "output_dir": "x", "checkpoints": [], "samples": []}', r"finished.json: field 'metrics' must be a mapping"),
    ('{"metrics": {}, "output_dir": "x", "checkpoints": [1], "samples": []}', r"field 'checkpoints' must hold strings only"),
    ('{"metrics": {"a": "b"}, "output_dir": "x", "checkpoints": [], "samples": []}', r"field 'metrics' must map names to numbers"),
    ('{"output_dir": "x", "checkpoints": [], "samples": []}', r"field 'metrics' must be .* found NoneType"),
])
def test_a_malformed_finished_record_names_the_file_and_the_field(tmp_path, text, message):
    (tmp_path / resume.FINISHED).write_text(text)
    with pytest.raises(ConfigError, match=message) as e:
        resume.finished_result(tmp_path)
    assert str(tmp_path / resume.FINISHED) in str(e.value) and "delete" in str(e.value)


def test_a_job_record_with_the_wrong_shape_is_named(tmp_path):
    (tmp_path / resume.JOB).write_text('{"overrides": "seed=1"}')
    with pytest.raises(ConfigError, match=r"sweep_job.json: field 'overrides' must be a list of override strings, found str"):
        resume.check_same_job(tmp_path, ["seed=1"])


def test_a_finished_record_counts_only_with_a_checkpoint_that_exists(tmp_path, capsys):
    ckpt = tmp_path / "job" / "checkpoints" / "last.ckpt"
    job = finished(tmp_path / "job", [str(ckpt)])
    assert resume.finished_result(job) is None  # its checkpoint is gone: the job runs again
    assert "lists no checkpoint that exists" in capsys.readouterr().err
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"x")
    assert resume.finished_result(job)["metrics"] == {"loss": 0.5}
    assert resume.finished_result(finished(tmp_path / "none", [])) is None


def test_a_sweep_folder_is_checked_before_resuming(tmp_path):
    with pytest.raises(ConfigError, match=r"\+resume_sweep=.*nope: no such folder"):
        resume.check_sweep_folder(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ConfigError, match="not a sweep folder \\(no multirun.yaml"):
        resume.check_sweep_folder(tmp_path / "plain")
    sweep = tmp_path / "sweep"
    (sweep / "0").mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("{}")
    assert resume.check_sweep_folder(sweep) == sweep
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, sweep / "1")
    with pytest.raises(ConfigError, match=r"sweep/1 is a symbolic link"):
        resume.check_sweep_folder(sweep)
    (sweep / "0" / "checkpoints").symlink_to(elsewhere)
    with pytest.raises(ConfigError, match=r"0/checkpoints is a symbolic link"):
        resume.check_same_job(sweep / "0", ["seed=0"])


def test_a_misspelled_resume_folder_stops_the_sweep_before_any_job(tmp_path):
    """The Hydra callback runs before the launcher creates the sweep folder: exit 2, the folder named, nothing made."""
    missing = tmp_path / "multiruns" / "typo"
    proc = subprocess.run([sys.executable, "-m", "mingexp.train", "-m", "seed=0,1", f"+resume_sweep={missing}"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"+resume_sweep={missing}: no such folder" in proc.stderr
    assert not missing.exists() and "Launching" not in proc.stdout
