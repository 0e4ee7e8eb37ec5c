"""The end-of-run evaluations are built from their configs plus ``final_overrides`` (the constructor's keys)."""

from __future__ import annotations

import functools

import lightning as L
import pytest

from mingexp.errors import ConfigError
from mingexp.eval.base import Evaluation
from mingexp.eval.callbacks import EvaluationCallback


class Counting(Evaluation):
    """An evaluation of ``n`` items (what the callback builds; its size is all this test reads)."""

    name = "counting"

    def __init__(self, n: int = 1, steps: int | None = None) -> None:
        self.n, self.steps = n, steps

    def work(self) -> int:
        return self.n

    def __call__(self, model, out_dir=None):
        return {"n": float(self.n)}, []


def test_final_suite_is_built_from_the_config_with_the_overrides(tmp_path):
    callback = EvaluationCallback({"x": functools.partial(Counting, n=2, steps=3), "y": functools.partial(Counting, n=4)}, str(tmp_path),
                                  final_overrides={"x": {"n": 50}})
    in_training = callback.evals["x"]
    assert (in_training.n, in_training.steps, callback.evals["y"].n) == (2, 3, 4)
    suite = callback._final_suite(L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False))
    assert "full suites" in suite
    assert (callback.evals["x"].n, callback.evals["x"].steps, callback.evals["y"].n) == (50, 3, 4)  # the rest of x's config kept
    assert in_training.n == 2  # nothing was changed in place


def test_an_unknown_final_override_fails_at_construction_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"final_overrides.x: .*unexpected keyword argument 'n_prompts'.*constructor arguments"):
        EvaluationCallback({"x": functools.partial(Counting)}, str(tmp_path), final_overrides={"x": {"n_prompts": None}})


def test_the_run_summary_shows_each_evaluations_numbers_not_geneval_breakdowns():
    from mingexp.eval.headline import headline

    values = {"eval/geneval_shapes/overall": 0.5, "eval/geneval_shapes/colors": 0.4, "eval/geneval_shapes/counting": 0.3,
              "eval/geneval_shapes/unseen/overall": 0.1, "eval/geneval_shapes/correct_prompts": 0.6, "eval/recon/psnr": 12.0,
              "eval_seconds": 3.0, "step": 5}
    assert headline(values) == {"eval/geneval_shapes/correct_prompts": 0.6, "eval/geneval_shapes/overall": 0.5, "eval/recon/psnr": 12.0}
