"""Training entry point.

    python -m mingexp.train                                   # the toy world (model=toy data=shapes)
    python -m mingexp.train +experiment=ms_align              # an experiment file (overrides only)
    python -m mingexp.train -m +experiment=ms_align model.queries.scales=finest,pyramid model.align.weight=0,1 seed=0,1,2
    python -m mingexp.train +experiment=ms_align model=ming_lite_uni module=unified_large data=paper_mixture trainer=fsdp
    python -m mingexp.train ckpt_path=outputs/.../checkpoints/last.ckpt   # resume
    python -m mingexp.train -m <the sweep's command> +resume_sweep=<sweep folder>  # continue an interrupted sweep

:func:`train` does the work and is what tests call; :func:`main` is the Hydra wrapper.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from mingexp.errors import ConfigError, TrainingDiverged
from mingexp.io import checkpoint as io_checkpoint
from mingexp.eval.headline import headline_lines
from mingexp.lit import resume
from mingexp.lit.checkpoint import newest_checkpoint
from mingexp.lit.contract import TrainableModule, check_module
from mingexp.lit.quiet import quiet_fit


def _instantiate_group(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a name → config mapping (callbacks, loggers); null entries are off."""
    if not cfg:
        return []
    return [instantiate(c) for c in cfg.values() if c is not None and "_target_" in c]


def _check(cfg: DictConfig) -> None:
    """Values that cannot work fail before anything is built."""
    if cfg.get("trainer") is None or cfg.trainer.get("max_steps", -1) in (None, 0):
        raise ConfigError("trainer.max_steps must be positive (training is counted in steps: the data streams are infinite).")
    for key in ("ckpt_path", "init_from"):
        path = cfg.get(key)
        if key == "ckpt_path" and path == "last":
            continue  # Lightning's: the newest last.ckpt / interrupted.ckpt of this run's folder, if any (a requeued job)
        if path and not Path(str(path)).is_file():
            raise ConfigError(f"{key}={path}: no such checkpoint file (ckpt_path=last resumes this run folder's newest checkpoint).")
    for name, logger in (cfg.get("logger") or {}).items():  # an extra the run needs is named before anything is built
        if logger is not None and str(logger.get("_target_", "")).endswith("WandbRun"):
            from mingexp.extras import require

            require("wandb", "tracking", f"logger.{name}", instead="logger=csv")
    metric = cfg.get("optimized_metric")
    if metric and str(metric).startswith("eval/") and not (cfg.get("callbacks") or {}).get("evaluation"):
        raise ConfigError(f"optimized_metric={metric} is an evaluation's value but callbacks.evaluation is off: turn it on, or "
                          "optimized_metric=train/loss_epoch (or null).")


def _init_from(module: L.LightningModule, path: str) -> list[str]:
    """Start a stage from another run's weights (model and EMA only; fresh optimizer, schedule and step):
    :func:`mingexp.io.checkpoint.init_from`, which names any tensor of another shape. Returns the keys it loaded (the
    module's names)."""
    loaded = io_checkpoint.init_from(module.model, path)
    skipped = [f"model.{k}" for k in loaded.mismatch.unexpected]
    new = f"; {len(loaded.mismatch.missing)} start as built (e.g. model.{loaded.mismatch.missing[0]})" if loaded.mismatch.missing else ""
    print(f"[mingexp] init_from {path}: {len(loaded.keys)} tensors loaded, {len(skipped)} skipped"
          f"{(' e.g. ' + skipped[0]) if skipped else ''}{new}", flush=True)
    return [f"model.{k}" for k in loaded.keys]


def _kept(output_dir: Path, prefer: str = "last.ckpt") -> str:
    """Which checkpoint a stopped run left behind, for the message that ends it."""
    folder = output_dir / "checkpoints"
    for name in (prefer, "last.ckpt"):
        if (folder / name).is_file():
            return str(folder / name)
    return f"no checkpoint in {folder} (no step was finished)"


def _accelerator(cfg: DictConfig) -> None:
    """Say on the first line where the run trains; the main job on a GPU that ``accelerator=auto`` found spends the
    CPU run's wall time on more steps (``on_gpu`` in conf/train.yaml)."""
    accelerator = str(cfg.trainer.get("accelerator", "cpu"))
    gpu = torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")
    where = f"cuda ({torch.cuda.get_device_name()})" if gpu else f"cpu ({torch.get_num_threads()} threads)"
    note = ""
    on_gpu = cfg.get("on_gpu")
    if gpu and accelerator == "auto" and on_gpu and cfg.get("task_name") == "train":
        with open_dict(cfg):
            cfg.trainer.max_steps, cfg.trainer.max_time = int(on_gpu.max_steps), str(on_gpu.max_time)
        note = f"; the main job on a GPU: up to {on_gpu.max_steps} steps within {on_gpu.max_time} (on_gpu; on_gpu=null keeps the CPU's steps)"
    print(f"[mingexp] training on {where} (trainer.accelerator={accelerator}){note}", flush=True)


def resume_point(cfg: DictConfig, output_dir: Path) -> tuple[str | None, dict | None]:
    """Step 1, the resume sweep: ``(checkpoint to resume or None, None)``, or ``(None, its result)`` for a job of a
    continued sweep that already finished (skipped). A job of a sweep remembers what it is; continued
    (``+resume_sweep``, :mod:`mingexp.lit.resume`) it resumes from its folder's newest checkpoint."""
    ckpt_path = cfg.get("ckpt_path")
    resume.check_same_job(output_dir, resume.job_overrides())
    if cfg.get("resume_sweep"):
        resume.check_no_links(output_dir)
        done = resume.finished_result(output_dir)
        if done is not None:
            print(f"[mingexp] resume_sweep: {output_dir} finished before; skipped.", flush=True)
            return None, done
        ckpt_path = ckpt_path or "last"
    if ckpt_path == "last":  # this run folder's newest last.ckpt / interrupted.ckpt, else a fresh start (said)
        found = newest_checkpoint(output_dir / "checkpoints")
        print(f"[mingexp] ckpt_path=last: {'resuming ' + str(found) if found else 'no checkpoint in ' + str(output_dir / 'checkpoints') + ', starting fresh'}",
              flush=True)
        ckpt_path = str(found) if found else None
    return ckpt_path, None


def already_trained(cfg: DictConfig, ckpt_path: str | None, output_dir: Path) -> dict | None:
    """A checkpoint to resume that is already at ``trainer.max_steps`` (a job stopped during its end-of-run evaluation,
    or a resume with the same step budget): nothing to train, said, and a result with no metrics (``trained: False``)
    instead of a fit that logs nothing."""
    max_steps = int(cfg.trainer.get("max_steps") or -1)
    if not ckpt_path or max_steps <= 0:
        return None
    step = io_checkpoint.step_of(ckpt_path)
    if step < max_steps:
        return None
    print(f"[mingexp] {ckpt_path} is at step {step}, trainer.max_steps={max_steps}: nothing to train. Raise trainer.max_steps to "
          "continue it; evaluate it with python -m mingexp.evaluate ckpt_path=<it>.", flush=True)
    return {"metrics": {}, "output_dir": str(output_dir), "checkpoints": sorted(str(p) for p in (output_dir / "checkpoints").glob("*.ckpt")),
            "samples": [], "trained": False}


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, TrainableModule]:
    """Step 2: the datamodule and the training module (which builds the model, every width read from the loaded
    checkpoints), the module checked against :class:`~mingexp.lit.contract.TrainableModule`, and the data told the
    model's image sizes (a multiple of its DiT patch in pixels; None: no image model)."""
    datamodule = instantiate(cfg.data)
    module = check_module(instantiate(cfg.module), f"module._target_={cfg.module.get('_target_')}")
    datamodule.configure(module.model_spec())
    return datamodule, module


def check_data(datamodule: L.LightningDataModule, module: TrainableModule) -> None:
    """Step 3, before the trainer exists (rank 0): the memory estimate, then Lightning's own data hooks, so that a data
    source matching no shard fails here with its one-line message and leaves no checkpoint (inside fit it would be a
    traceback and an interrupted.ckpt). Lightning calls the hooks again in fit; both return at once the second time."""
    if rank_zero_only.rank != 0:
        return
    estimate = module.memory_estimate(datamodule.batch_size)
    if estimate:
        print(estimate, flush=True)
    datamodule.prepare_data()
    datamodule.setup("fit")


def initialise(cfg: DictConfig, module: TrainableModule) -> None:
    """Step 4: the seed was set before building; ``init_from`` starts from another run's weights (fresh optimizer)."""
    if cfg.get("init_from"):
        _init_from(module, cfg.init_from)


def fit(cfg: DictConfig, datamodule: L.LightningDataModule, module: TrainableModule, ckpt_path: str | None,
        output_dir: Path) -> tuple[L.Trainer, list]:
    """Step 5: callbacks, loggers and the trainer, then fit; a resumed run restores optimizer, scheduler, EMA, step and
    data position. A diverged run ends with an error naming its last finite checkpoint; SIGTERM with interrupted.ckpt."""
    callbacks = _instantiate_group(cfg.get("callbacks"))
    loggers = _instantiate_group(cfg.get("logger"))
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    try:
        with quiet_fit():  # Lightning's noise for these runs (mingexp.lit.quiet)
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except TrainingDiverged as e:
        raise TrainingDiverged(f"{e} The last checkpoint with finite losses: {_kept(output_dir)}.") from None
    except (Exception, SIGTERMException) as e:
        # SIGTERM (a scheduler's stop or preemption): interrupted.ckpt is written; exit as a terminated process.
        # Sent to the process group (SLURM, a session's end), it also kills the data workers, and their loss
        # can surface first as the DataLoader's error: that error is the signal's too. Exiting (SystemExit)
        # also stops a multirun, which otherwise would log the job as failed and start the next one.
        if not (isinstance(e, SIGTERMException) or trainer.received_sigterm):
            raise
        print(f"[mingexp] SIGTERM at step {trainer.global_step}: {_kept(output_dir, 'interrupted.ckpt')}. "
              f"Resume with ckpt_path=<that file> (a sweep: its command plus +resume_sweep=<sweep folder>).", file=sys.stderr, flush=True)
        raise SIGTERMException(128 + signal.SIGTERM) from None
    return trainer, loggers


def summarise(trainer: L.Trainer, loggers: list, output_dir: Path, started: float) -> dict[str, Any]:
    """Step 6: the final metrics, checkpoints and samples; printed (rank 0) with the end-of-run evaluation beside its
    floors and ceilings, and recorded as the job's ``finished.json`` (what a continued sweep skips)."""
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
    final_eval = output_dir / "eval" / "final.json"
    values = None
    if final_eval.is_file() and final_eval.stat().st_mtime >= started:  # this run's own, not a resumed run's earlier one
        values = json.loads(final_eval.read_text())
        # the end-of-run evaluation's values are the run's eval/... metrics (over the last in-training ones)
        metrics.update({k: float(v) for k, v in values.items() if k.startswith("eval/") and isinstance(v, (int, float))})
    checkpoints = sorted(str(p) for p in (output_dir / "checkpoints").glob("*.ckpt"))
    # step_XXXXXXX.png in order, final.png last
    samples = sorted((str(p) for p in (output_dir / "samples").glob("*.png")), key=lambda p: (Path(p).stem == "final", p))
    result = {"metrics": metrics, "output_dir": str(output_dir), "checkpoints": checkpoints, "samples": samples}
    if not trainer.is_global_zero:
        return result
    print("\n[mingexp] done.")
    print(f"  output folder : {output_dir}")
    print(f"  checkpoints   : {output_dir / 'checkpoints'} ({len(checkpoints)} files, last.ckpt resumes)")
    print(f"  sample images : {samples[-1] if samples else '(none)'}")
    if values is not None:
        print(f"  evaluation    : {final_eval} (grids beside it; beside each value what noise / a constant / the input and the "
              "ground truth score on the same items)")
        for line in headline_lines(values):
            print(f"      {line}")
    else:
        print("  evaluation    : none in this run (callbacks.evaluation.at_end=false or no evaluation configured)")
    for logger in loggers:
        print(f"  logs          : {type(logger).__name__} in {getattr(logger, 'save_dir', None) or output_dir}")
    loss = {k: round(v, 4) for k, v in metrics.items() if "loss" in k}
    if loss:
        print(f"  final losses  : {loss}")
    resume.mark_finished(output_dir, result)
    return result


def train(cfg: DictConfig) -> dict[str, Any]:
    """Build everything from ``cfg`` and fit, in the steps above. Returns the final metrics and where the outputs are."""
    _check(cfg)
    _accelerator(cfg)
    started = time.time()
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, finished = resume_point(cfg, output_dir)  # 1. the resume sweep
    if finished is not None:
        return finished
    done = already_trained(cfg, ckpt_path, output_dir)
    if done is not None:
        return done
    L.seed_everything(int(cfg.seed), workers=True)
    saved = output_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        # Hydra writes it for command-line runs; calls from Python (tests, notebooks) get it here, so
        # `mingexp.evaluate` can rebuild the model of any checkpoint from <run>/.hydra/config.yaml.
        saved.parent.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, saved)
    datamodule, module = build(cfg)  # 2. build
    check_data(datamodule, module)  # 3. check the data
    initialise(cfg, module)  # 4. init
    trainer, loggers = fit(cfg, datamodule, module, ckpt_path, output_dir)  # 5. fit
    return summarise(trainer, loggers, output_dir, started)  # 6. summarise


def optimized_metric(cfg: DictConfig, result: dict[str, Any]) -> float | None:
    """The value a sweeper optimises: ``result``'s metric named by ``cfg.optimized_metric`` (None: nothing to optimise).
    A named metric the run did not log is an error listing those it did."""
    name = cfg.get("optimized_metric")
    if not name or result.get("trained") is False:  # a resumed run with nothing left to train has no new value
        return None
    metrics = result.get("metrics") or {}
    if name not in metrics:
        raise ConfigError(f"optimized_metric={name}: the run logged no such metric; it logged {sorted(metrics)[:20]}.")
    return float(metrics[name])


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    from mingexp.console import tee

    hydra_cfg = HydraConfig.get()
    with tee(Path(hydra_cfg.runtime.output_dir) / f"{hydra_cfg.job.name}.log"):  # <run>/train.log: what was printed too
        result = train(cfg)
    return optimized_metric(cfg, result)  # what a sweeper (Optuna, Ax) optimises


if __name__ == "__main__":
    main()
