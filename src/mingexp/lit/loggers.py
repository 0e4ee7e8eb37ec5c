"""Loggers: one W&B run per training job, named by what the job changed and grouped by its sweep."""

from __future__ import annotations

import hashlib

from lightning.pytorch.loggers import WandbLogger

from mingexp.extras import require

MAX_NAME = 128  # W&B display names are cut at 128 characters; a longer name keeps a hash so that names stay distinct
# Overrides that say where and how a job ran, not what it is: left out of its name (the experiment is the task name).
NOT_IN_NAMES = ("paths.", "callbacks.", "trainer", "logger", "hydra.", "data.prepare", "data.num_workers", "experiment=",
                "ckpt_path=", "init_from=", "resume_sweep=", "optimized_metric=")


def job_name(task_name: str, seed: int) -> str:
    """``<task>-<the job's overrides>`` under Hydra (``ms_align-model.align.weight=0,seed=1``), else ``<task>-s<seed>``."""
    from hydra.core.hydra_config import HydraConfig

    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    kept = sorted(o for o in overrides if not o.lstrip("+~").startswith(NOT_IN_NAMES))
    name = f"{task_name}-{','.join(kept)}" if kept else f"{task_name}-s{seed}"
    if len(name) > MAX_NAME:
        name = f"{name[: MAX_NAME - 9]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return name


def sweep_group(task_name: str) -> str:
    """The jobs of one multirun share a group, ``<task>-<sweep folder>``; a single run is grouped by its task."""
    from pathlib import Path

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return f"{task_name}-{Path(str(HydraConfig.get().sweep.dir)).name}"
    return task_name


class WandbRun(WandbLogger):
    """Lightning's :class:`WandbLogger` for one job of a sweep.

    Lightning reuses a W&B run still open in the process, so in a sequential multirun every job after the
    first would log into job 0's run. This logger finishes its run when the trainer finalizes (end of fit,
    or a failure), and the next job starts its own.

    Args:
        task_name / seed: name the run when ``name`` is None (:func:`job_name`) and group it when ``group``
            is None (:func:`sweep_group`).
        name / group: explicit W&B display name and group.
        **kwargs: :class:`WandbLogger` arguments (``project``, ``offline``, ``save_dir``, ``tags``, ``id`` ...).
    """

    def __init__(self, task_name: str, seed: int = 0, name: str | None = None, group: str | None = None, **kwargs) -> None:
        # wandb is an extra: said here with the fix, before Lightning's WandbLogger raises its own ModuleNotFoundError
        require("wandb", "tracking", "logger=wandb", instead="logger=csv")
        super().__init__(name=name or job_name(task_name, seed), group=group or sweep_group(task_name), **kwargs)
        # Lightning passes anonymous=None to wandb.init, which W&B answers with a deprecation warning at every run
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)

    def finalize(self, status: str) -> None:
        super().finalize(status)
        # "success" / "failed": the job is over. ("finished" is Lightning's SLURM requeue save: the job goes on
        # until SLURM stops it, and the offline run on disk is complete up to that point anyway.)
        if self._experiment is not None and status in ("success", "failed"):
            self._experiment.finish(exit_code=0 if status == "success" else 1)
            self._experiment = None
