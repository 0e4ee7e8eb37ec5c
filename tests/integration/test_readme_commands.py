"""Every command of the README's "Commands by task" runs as printed (make test-full).

Each line is run in a subprocess as the README writes it, with three things added: the placeholders (``<time>``) are
filled with the folders the earlier commands wrote, the toy world and tiny checkpoints of the tests are pointed at
(``paths.*``), and training runs at smoke size (``+budget=smoke`` and fewer steps: the main job's 3600 steps and the
ablation sweep's hour are what the README says they are, not what a test can spend). ``doctor`` runs on the release
preset's tiny folder (the 7B preset's depth-1 check is tests/integration/test_doctor.py, also slow).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = text.split("## Commands by task", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines, current = [], ""
    for raw in block.splitlines():
        line = raw.split("  #", 1)[0].rstrip()
        if not line:
            continue
        current += (" " if current else "") + line.rstrip("\\").strip()
        if not line.endswith("\\"):
            lines.append(current)
            current = ""
    return lines


def run(args: list[str], cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900, input=stdin)
    assert proc.returncode == 0, (" ".join(args), proc.stdout[-2000:], proc.stderr[-3000:])
    return proc


@pytest.mark.slow
def test_every_readme_command_runs_as_printed(tiny_dir, world, tmp_path):
    commands = readme_commands()
    assert len(commands) >= 12 and all(c.startswith("python -m mingexp.") for c in commands)
    paths = [f"paths.toy_dir={tiny_dir}", f"paths.shapes_dir={world}", f"paths.root_dir={tmp_path}"]
    smoke = ["trainer.max_steps=2", "logger=csv", "data.batch_size=4", "callbacks.evaluation.evals.geneval_shapes.prompts=4",
             "callbacks.evaluation.evals.recon.n=2", "callbacks.evaluation.evals.edit.n=2", "callbacks.evaluation.evals.vqa.n=2",
             "callbacks.samples=null", "model.sampler.steps=2"]
    seen: dict[str, Path] = {}
    for command in commands:
        args = shlex.split(command)[1:]  # python -m mingexp.<tool> ...
        tool = args[1].split(".", 1)[1]
        sweep = "-m" in args[2:]
        run_dir = seen.get("run")
        args = [a.replace("outputs/train/runs/<time>", str(run_dir)) if run_dir else a for a in args]
        args = [a.replace("outputs/ms_align/multiruns/<time>", str(seen.get("sweep", ""))) for a in args]
        if tool == "train":
            extra = [*paths, *smoke]
            if sweep:  # the budget file sizes the evaluations itself (and turns VQA off)
                extra = [e for e in extra if not e.startswith("callbacks.evaluation.")] + ["hydra.sweep.dir=" + str(tmp_path / "sweep")]
                args = [re.sub(r"seed=0,1,2", "seed=0,1", a) for a in args]
                args = [a for a in args if not a.startswith("model.queries.scales=")] + ["model.queries.scales=finest"]
            elif "+experiment=grpo" in args:  # post-training from the run: its own folder, a group of 2 on 2 sampler steps
                extra = [e for e in extra if not e.startswith(("callbacks.evaluation.evals.recon", "callbacks.evaluation.evals.edit"))]
                extra += ["module.group_size=2", "module.steps=2", f"hydra.run.dir={tmp_path / 'grpo'}"]
            elif not any(a.startswith("ckpt_path=") for a in args):
                extra.append(f"hydra.run.dir={tmp_path / 'run'}")
            else:
                extra.append(f"hydra.run.dir={run_dir}")
            smoke_run = "+budget=smoke" in args  # its own 20 steps: the quick run as printed
            proc = run([*args, *[e for e in extra if not (smoke_run and e.startswith("trainer.max_steps"))]], tmp_path)
            if sweep:
                seen["sweep"] = tmp_path / "sweep"
            elif "+experiment=grpo" in args:
                assert (tmp_path / "grpo" / "checkpoints" / "last.ckpt").is_file() and (tmp_path / "grpo" / "grpo.json").is_file()
            else:
                seen["run"] = tmp_path / "run"
                assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file(), proc.stdout[-2000:]
        elif tool == "report":
            run([*args, f"out={tmp_path / 'report'}"], tmp_path)
            assert (tmp_path / "report" / "results.md").is_file()
        elif tool == "evaluate":
            run([*args, *paths, "eval.prompts=4", "eval.images_per_prompt=1", f"out_dir={tmp_path / 'eval'}"], tmp_path)
            assert (tmp_path / "eval" / "results.json").is_file()
        elif tool == "export":
            run([*args, *paths], tmp_path)
            seen["export"] = tmp_path / "exports" / "toy"
        elif tool == "generate":
            run([*args, "steps=2"], tmp_path)
        elif tool == "chat":
            run([*args, "steps=2", f"out={tmp_path / 'chat'}"], tmp_path, stdin="generate a photo of a red circle\nquit\n")
        elif tool == "demo":
            proc = subprocess.run([sys.executable, *args, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                                  env={**os.environ, "PYTHONPATH": str(REPO)})
            assert proc.returncode == 0 and "model" in proc.stdout  # serving a page is tests/integration/test_demo.py's
        elif tool == "doctor":
            args = [a for a in args if not a.startswith("model=")]
            run([*args, "model=ming_lite_uni_release", f"model.path={tiny_dir / 'release'}", f"work_dir={tmp_path / 'doctor'}"], tmp_path)
        else:
            pytest.fail(f"README command for an unknown tool: {command}")
    assert (tmp_path / "red.png").is_file() and (tmp_path / "blue.png").is_file()
