"""Evaluation entry point: one evaluation of a checkpoint, or scoring an existing image folder.

    python -m mingexp.evaluate ckpt_path=.../checkpoints/last.ckpt +eval=geneval_shapes
    python -m mingexp.evaluate ckpt_path=... +eval=geneval eval.detector.path=... eval.detector.clip_path=...
    python -m mingexp.evaluate ckpt_path=... +eval=recon            # also edit, vqa
    python -m mingexp.evaluate score_only=DIR +eval=geneval         # DIR in GenEval's layout, from any model

Writes ``<out_dir>/results.json`` (values, track, checkpoint) and, for GenEval, the official folder layout
under ``<out_dir>/<name>/`` (with ``results.jsonl`` and ``summary.json``) so the official scorer can be
run on the same images. :func:`evaluate` does the work (tests call it); :func:`main` is the Hydra wrapper.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mingexp.errors import ConfigError
from mingexp.io import run as io_run
from mingexp.io.records import plain, write_json



def evaluations() -> list[str]:
    """The evaluations the package's configs offer (``conf/eval/<name>.yaml``), for ``+eval=<name>``."""
    from importlib.resources import files

    return sorted(p.name.removesuffix(".yaml") for p in (files("mingexp.conf") / "eval").iterdir() if p.name.endswith(".yaml"))


def model_config(cfg: DictConfig) -> dict:
    """The model config of ``cfg.ckpt_path``'s run when beside it, else ``cfg.model`` (:func:`mingexp.io.run.model_config`)."""
    return io_run.model_config(cfg.get("ckpt_path"), cfg.model, cfg.paths, int(cfg.get("seed", 0)))


def load_model(cfg: DictConfig, config: dict | None = None):
    """The unified model of ``cfg.ckpt_path`` (trained weights, EMA weights when the checkpoint has them), in eval mode.

    The architecture comes from the run's own config when it is beside the checkpoint, else from ``model=...``
    (:mod:`mingexp.io.run`).
    """
    return io_run.load(config if config is not None else model_config(cfg), cfg.get("ckpt_path"))


def _build_evaluation(node: DictConfig, overrides: dict | None = None):
    """``+eval=<name>``'s evaluation, checked to be a :class:`~mingexp.eval.base.Evaluation`, with a progress bar."""
    from mingexp.eval.base import Evaluation

    from hydra.errors import InstantiationException

    from mingexp.errors import InputError

    try:
        evaluation = instantiate(node, **(overrides or {}))
    except InstantiationException as e:  # a part's own clear error (a judge that is no VLM), without Hydra's wrapping
        cause = e.__cause__
        if isinstance(cause, (ConfigError, InputError)):
            raise cause from None
        raise
    if not isinstance(evaluation, Evaluation):
        raise ConfigError(f"eval._target_={node.get('_target_')} built a {type(evaluation).__name__}, which is not a "
                          "mingexp.eval.base.Evaluation: subclass it (name, work, __call__, baselines).")
    evaluation.progress = True  # signs of life on a long evaluation
    return evaluation


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Run ``cfg.eval`` (or score ``cfg.score_only``); returns and writes the results."""
    if cfg.get("eval") is None:
        raise ConfigError(f"choose an evaluation: +eval=<{' | '.join(evaluations())}> (configs in conf/eval/).")
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = cfg.eval.get("name") or "geneval"
    if cfg.get("score_only"):
        folder = Path(cfg.score_only)
        if not folder.is_dir():
            raise ConfigError(f"score_only={folder}: no such folder.")
        overrides = {"images_per_prompt": int(cfg.images_per_prompt)} if "images_per_prompt" in cfg.eval else {}
        evaluation = _build_evaluation(cfg.eval, overrides)
        try:
            summary, _ = evaluation.score_folder(folder, out_dir)
        except NotImplementedError as e:
            raise ConfigError(f"score_only: {e}; +eval=geneval, geneval_shapes, gedit, imgedit and magicbrush score folders.") from None
        details = out_dir / "summary.json"
        result = {"evaluation": evaluation.name, "score_only": str(folder), **summary,
                  **({"summary": json.loads(details.read_text())} if details.is_file() else {})}
    else:
        prepare = cfg.data.get("prepare") if cfg.get("data") is not None else None
        uses_world = "paths.shapes_dir" in OmegaConf.to_yaml(cfg.eval)  # the evaluation's config points into the toy world
        if uses_world and prepare is not None and not (Path(prepare.out) / "manifest.json").is_file():
            instantiate(prepare)()  # the shapes world is missing: write it (an existing world is used as it is)
        evaluation = _build_evaluation(cfg.eval)  # before the model: a bad eval config (a judge that is no VLM) fails first
        model = load_model(cfg)
        name = evaluation.name
        print(f"[mingexp] {name}: {evaluation.work()} images / answers on {cfg.get('ckpt_path') or 'the model config'}", flush=True)
        target = out_dir / name
        target.mkdir(parents=True, exist_ok=True)
        with torch.no_grad():
            values, examples = evaluation(model, target)
        from mingexp.eval.callbacks import pair_grid

        grid = pair_grid(examples, evaluation.example_labels)
        if grid is not None:
            grid.save(out_dir / f"{name}_examples.png")
        summary_file = target / "summary.json"
        print(f"[mingexp] {name}: scoring the floor and ceiling on the same items", flush=True)
        baselines = evaluation.baselines(model.default_size())  # the floor and ceiling of each metric on the same items
        result = {"evaluation": name, "ckpt_path": cfg.get("ckpt_path"), **values, "baselines": baselines,
                  **({"summary": json.loads(summary_file.read_text())} if summary_file.is_file() else {})}
        from mingexp.eval.headline import headline_lines

        for line in headline_lines({**{f"eval/{name}/{k}": v for k, v in values.items()}, "baselines": {name: baselines}}):
            print(f"[mingexp] {line}")
    write_json(out_dir / "results.json", result)
    print(json.dumps(plain({k: v for k, v in result.items() if k not in ("summary", "baselines")}), indent=1))
    print(f"[mingexp] results: {out_dir / 'results.json'}")
    return result


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from mingexp.console import tee

    hydra_cfg = HydraConfig.get()
    with tee(Path(hydra_cfg.runtime.output_dir) / f"{hydra_cfg.job.name}.log"):  # <out>/evaluate.log: what was printed too
        evaluate(cfg)


if __name__ == "__main__":
    main()
