"""Resumable sweeps: which jobs of a multirun finished, and what an interrupted one resumes from.

    python -m mingexp.train -m +experiment=ms_align seed=0,1,2 ...                     # interrupted
    python -m mingexp.train -m +experiment=ms_align seed=0,1,2 ... +resume_sweep=<that sweep folder>

``+resume_sweep`` points Hydra's sweep folder at the old one (``conf/hydra/default.yaml``), so each job lands in
the folder it had (Hydra numbers the jobs of the same command in the same order). There, a job:

* that finished (``<job>/finished.json``, written atomically as the job's last act) is skipped and returns
  its recorded result;
* that started and stopped (Ctrl-C, a session's end, preemption) resumes from its newest ``last.ckpt`` /
  ``interrupted.ckpt`` (``ckpt_path=last``: optimizer, schedule, EMA, step and data position);
* that never started starts.

A job folder remembers the overrides it first ran with (``<job>/sweep_job.json``); resuming it with other
overrides (another command) fails and names both, instead of mixing two experiments in one folder. On SLURM the
same flag resubmits the sweep into its folder; requeued jobs resume by ``ckpt_path=last`` as before.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from mingexp.errors import ConfigError

FINISHED = "finished.json"
JOB = "sweep_job.json"
# Overrides that say how to run a job, not what it is: they may differ between an interrupted command and its resume.
NOT_IDENTITY = ("resume_sweep=", "ckpt_path=", "hydra.", "trainer.enable_progress_bar")


def _atomic_json(path: Path, value: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(value, f, indent=1)
    os.replace(tmp, path)


def job_overrides() -> list[str] | None:
    """A sweep job's identity: its Hydra overrides minus how-to-run ones (None outside a multirun)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return identity(HydraConfig.get().overrides.task)


def identity(overrides: Iterable[str]) -> list[str]:
    """The overrides that say what a job is (sorted), without those that say how it is run."""
    return sorted(o for o in overrides if not o.lstrip("+~").startswith(NOT_IDENTITY))


def finished_result(output_dir: Path) -> dict | None:
    """The recorded result of a job that finished in ``output_dir``, else None."""
    path = Path(output_dir) / FINISHED
    return json.loads(path.read_text()) if path.is_file() else None


def check_same_job(output_dir: Path, overrides: list[str] | None) -> None:
    """Record the job's overrides on its first start; refuse to resume the folder with different ones."""
    if overrides is None:
        return
    path = Path(output_dir) / JOB
    if not path.is_file():
        _atomic_json(path, {"overrides": overrides})
        return
    before = json.loads(path.read_text())["overrides"]
    if before != overrides:
        raise ConfigError(
            f"resume_sweep: {output_dir} holds the job {before}, but this command's job there is {overrides}. Resume a sweep "
            f"with the command that started it (plus +resume_sweep=<folder>), or start a new sweep without the flag."
        )


def mark_finished(output_dir: Path, result: dict) -> None:
    """The job's last act: its result, written atomically (a sweep resumed later skips this job)."""
    _atomic_json(Path(output_dir) / FINISHED, result)
