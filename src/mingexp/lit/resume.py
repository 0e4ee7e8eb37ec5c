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

What a folder holds is checked, never assumed: ``+resume_sweep`` must name an existing sweep folder (its
``multirun.yaml``; :class:`ResumeSweepCheck` runs before Hydra creates anything), symbolic links inside a
sweep or job folder are refused (a checkpoint would be written wherever the link points), both JSON records
are read by one validated reader (:func:`read_record`) that names the file and the field, and a job counts as
finished only when its ``finished.json`` and a checkpoint it lists both exist.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Iterable

from hydra.experimental.callback import Callback

from mingexp.errors import ConfigError

FINISHED = "finished.json"
JOB = "sweep_job.json"
# Overrides that say how to run a job, not what it is: they may differ between an interrupted command and its resume.
NOT_IDENTITY = ("resume_sweep=", "ckpt_path=", "hydra.", "trainer.enable_progress_bar")


def _atomic_json(path: Path, value: Any) -> None:
    from mingexp.io.records import temp_beside

    fd, tmp = temp_beside(path)
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


# The records' shapes: field → (type, description); every field required.
SCHEMAS: dict[str, dict[str, tuple[type, str]]] = {
    JOB: {"overrides": (list, "a list of override strings")},
    FINISHED: {"metrics": (dict, "a mapping of metric name to number"), "output_dir": (str, "a path"),
               "checkpoints": (list, "a list of checkpoint paths"), "samples": (list, "a list of image paths")},
}


def read_record(path: Path) -> dict:
    """``sweep_job.json`` or ``finished.json``, parsed and checked against its schema; an error names the file, the
    field and the fix (delete the file: the job then runs again)."""
    path = Path(path)
    fix = f"delete {path} to run the job again"
    if path.is_symlink():
        raise ConfigError(f"{path}: a symbolic link; a sweep's records must be files ({fix}).")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ConfigError(f"{path}: not readable JSON ({type(e).__name__}: {e}); {fix}.") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: must be a JSON object, not {type(value).__name__}; {fix}.")
    for name, (kind, what) in SCHEMAS[path.name].items():
        if not isinstance(value.get(name), kind):
            raise ConfigError(f"{path}: field '{name}' must be {what}, found {type(value.get(name)).__name__}; {fix}.")
    strings = {JOB: ("overrides",), FINISHED: ("checkpoints", "samples")}[path.name]
    for name in strings:
        if not all(isinstance(v, str) for v in value[name]):
            raise ConfigError(f"{path}: field '{name}' must hold strings only; {fix}.")
    if path.name == FINISHED and not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value["metrics"].values()):
        raise ConfigError(f"{path}: field 'metrics' must map names to numbers; {fix}.")
    return value


def check_no_links(folder: Path) -> None:
    """A job folder, and what a job writes in it, must not be symbolic links (a checkpoint would land wherever the
    link points)."""
    folder = Path(folder)
    links = [p for p in [folder, *(folder / n for n in ("checkpoints", FINISHED, JOB, ".hydra"))] if p.is_symlink()]
    if links:
        raise ConfigError(f"resume_sweep: {', '.join(map(str, links))} is a symbolic link; a sweep's job folders must be real "
                          "folders (replace the link with the folder it points to, or start a new sweep).")


def finished_result(output_dir: Path) -> dict | None:
    """The recorded result of a job that finished in ``output_dir``, else None. A ``finished.json`` none of whose
    checkpoints exists does not count (the job runs again, and says why)."""
    path = Path(output_dir) / FINISHED
    if not path.is_file():
        return None
    result = read_record(path)
    if not any(Path(c).is_file() for c in result["checkpoints"]):
        print(f"[mingexp] resume_sweep: {path} lists no checkpoint that exists ({result['checkpoints'] or 'none'}); "
              "the job runs again.", file=sys.stderr, flush=True)
        return None
    return result


def check_same_job(output_dir: Path, overrides: list[str] | None) -> None:
    """Record the job's overrides on its first start; refuse to resume the folder with different ones."""
    if overrides is None:
        return
    check_no_links(output_dir)
    path = Path(output_dir) / JOB
    if not path.is_file():
        _atomic_json(path, {"overrides": overrides})
        return
    before = read_record(path)["overrides"]
    if before != overrides:
        raise ConfigError(
            f"resume_sweep: {output_dir} holds the job {before}, but this command's job there is {overrides}. Resume a sweep "
            f"with the command that started it (plus +resume_sweep=<folder>), or start a new sweep without the flag."
        )


def mark_finished(output_dir: Path, result: dict) -> None:
    """The job's last act: its result, written atomically (a sweep resumed later skips this job)."""
    _atomic_json(Path(output_dir) / FINISHED, result)


def check_sweep_folder(folder: str | Path) -> Path:
    """The folder ``+resume_sweep`` names: it must exist, be a sweep's folder (Hydra's ``multirun.yaml`` in it), and
    hold no symbolic links among its job folders."""
    path = Path(str(folder)).expanduser()
    if not path.is_dir():
        raise ConfigError(f"+resume_sweep={folder}: no such folder. Pass the folder of the sweep to continue "
                          "(outputs/<task>/multiruns/<time>); without the flag the command starts a new sweep.")
    if not (path / "multirun.yaml").is_file():
        raise ConfigError(f"+resume_sweep={folder}: not a sweep folder (no multirun.yaml in it). Pass the folder a multirun "
                          "(-m) wrote: outputs/<task>/multiruns/<time>.")
    links = sorted(str(p) for p in path.iterdir() if p.is_symlink())
    if links:
        raise ConfigError(f"+resume_sweep={folder}: {', '.join(links)} is a symbolic link; a sweep's job folders must be "
                          "real folders (replace the link with its target's contents, or start a new sweep).")
    return path


class ResumeSweepCheck(Callback):
    """Hydra callback (``conf/hydra/default.yaml``): checks ``+resume_sweep`` before the launcher creates the sweep
    folder, so a misspelled folder is an error instead of a fresh sweep in a new folder. Hydra turns a callback's
    exceptions into warnings and goes on, so the refusal is a ``SystemExit`` (exit status 2, the message on
    stderr)."""

    def on_multirun_start(self, config, **kwargs: Any) -> None:
        folder = config.get("resume_sweep")
        if folder:
            try:
                check_sweep_folder(folder)
            except ConfigError as e:
                print(f"[mingexp] {e}", file=sys.stderr, flush=True)
                raise SystemExit(2) from None
