"""A NON-editable install: the wheel built from this tree, installed into a folder of its own and run from a folder
outside the repository, so that nothing is read from the checkout (the configs come from the installed package).

The wheel is built offline with the venv's setuptools (--no-build-isolation) from a copy of the tree's top-level files
and src/ (an in-tree build would leave build/ and a stale build/lib could slip deleted files into the wheel).
``pip install --target`` puts it in ``<tmp>/site``, which PYTHONPATH places before site-packages and so before the
editable install's path entry (checked: without PYTHONPATH the same interpreter imports the checkout).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib.metadata import distribution
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "mingexp"
# the distributions of the extras (pyproject.toml: demo, lora, report, tracking) that the core does not need too
EXTRA_DISTS = ("gradio", "peft", "matplotlib", "wandb")


def run(args: list[str], cwd: Path, pythonpath: Path | None, python: str = sys.executable) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    env["HYDRA_FULL_ERROR"] = "1"
    return subprocess.run([python, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("install")
    tree = tmp / "tree"
    tree.mkdir()
    for f in ROOT.iterdir():  # pyproject.toml, README.md (the readme), and any other top-level file a build reads
        if f.is_file() and not f.is_symlink():
            shutil.copy2(f, tree / f.name)
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    build = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(tmp / "dist"), str(tree)],
                           cwd=tmp, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, f"pip wheel failed (the venv needs setuptools):\n{build.stdout}\n{build.stderr}"
    (wheel,) = (tmp / "dist").glob("mingexp-*.whl")
    install = subprocess.run([*pip, "install", "--no-deps", "--no-index", "-q", "--target", str(tmp / "site"), str(wheel)],
                             cwd=tmp, capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    cwd = tmp / "elsewhere"  # outside the repository: no conf/, src/ or .cache/ beside it
    cwd.mkdir()
    return {"wheel": wheel, "site": tmp / "site", "cwd": cwd, "tmp": tmp}


def test_wheel_holds_the_configs_and_the_code(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    wanted = {f"mingexp/{p.relative_to(SRC).as_posix()}" for pattern in ("conf/**/*.yaml", "public_configs/*.json", "public_configs/*.md", "eval/prompts/*", "**/*.py")
              for p in SRC.glob(pattern) if "__pycache__" not in p.parts}
    assert "mingexp/conf/train.yaml" in wanted and "mingexp/conf/model/toy.yaml" in wanted  # the globs found the tree
    assert any(n.startswith("mingexp/public_configs/") and n.endswith(".json") for n in wanted)
    assert "mingexp/eval/prompts/viescore_tie.json" in wanted  # GEdit's VIEScore prompts (and their licence)
    assert not wanted - names, f"the wheel lacks {sorted(wanted - names)[:10]}"
    meta = zipfile.ZipFile(installed["wheel"]).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    for dist in EXTRA_DISTS:  # an extra, not a requirement of the plain install
        assert not any(line.startswith(f"Requires-Dist: {dist}") and "extra ==" not in line for line in meta.splitlines()), dist


def test_the_install_is_what_imports(installed):
    code = ["-c", "import mingexp; print(mingexp.__file__)"]
    proc = run(code, installed["cwd"], installed["site"])
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).resolve().is_relative_to(installed["site"].resolve())
    # the same interpreter without PYTHONPATH imports another copy (make install's editable one, the checkout's src/):
    # PYTHONPATH, not the folder, is what won above
    proc = run(code, installed["cwd"], None)
    assert proc.returncode == 0, proc.stderr
    assert not Path(proc.stdout.strip()).resolve().is_relative_to(installed["site"].resolve()), proc.stdout


def test_train_composes_its_config_from_the_install(installed):
    cwd, site = installed["cwd"], installed["site"]
    proc = run(["-m", "mingexp.train", "--cfg", "job"], cwd, site)
    assert proc.returncode == 0, proc.stderr
    assert "task_name: train" in proc.stdout
    assert "model:\n  _target_: mingexp.models.unified.build_model" in proc.stdout
    assert "root_dir: ${oc.env:MINGEXP_ROOT,.}" in proc.stdout  # paths are the caller's folder's (or MINGEXP_*)
    proc = run(["-m", "mingexp.train", "--info", "searchpath"], cwd, site)
    assert proc.returncode == 0, proc.stderr
    assert f"file://{site}/mingexp/conf" in proc.stdout  # the installed conf/, not the checkout's
    assert not any(cwd.iterdir()), f"--cfg job wrote {sorted(p.name for p in cwd.iterdir())}"


@pytest.mark.parametrize("command", ["evaluate", "generate"])
def test_entry_points_answer_help(installed, command):
    proc = run(["-m", f"mingexp.{command}", "--help"], installed["cwd"], installed["site"])
    assert proc.returncode == 0, proc.stderr
    assert f"usage: python -m mingexp.{command}" in proc.stdout


def test_core_install_without_extras(installed):
    """pip install mingexp with no extra: a venv holding the test venv's packages less the extras' own. Every module but
    the demo's page imports, and each feature of an extra answers with the extra to install."""
    venv = installed["tmp"] / "core-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    (site,) = (venv / "lib").glob("python*/site-packages")
    here = Path(sysconfig.get_paths()["purelib"])  # this venv's site-packages
    top = lambda d: {f.parts[0] for f in (distribution(d).files or []) if f.parts[0] not in ("..", "__pycache__")}  # noqa: E731
    left_out = set().union(*(top(d) for d in (*EXTRA_DISTS, "mingexp")))  # mingexp: the editable install's entries
    for entry in here.iterdir():
        if entry.name not in left_out and entry.name != "__pycache__":
            (site / entry.name).symlink_to(entry)
    python = str(venv / "bin" / "python")
    proc = run(["-c", CORE_CHECK, str(installed["site"])], installed["cwd"], installed["site"], python=python)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("ok"), proc.stdout
    proc = run(["-m", "mingexp.demo", "model=/nonexistent/model"], installed["cwd"], installed["site"], python=python)
    assert proc.returncode == 1 and "pip install 'mingexp[demo]'" in proc.stderr, proc.stderr
    # the default logger (W&B) needs the tracking extra: said before anything is built, with the option that does without
    proc = run(["-m", "mingexp.train", f"hydra.run.dir={installed['tmp'] / 'core-run'}"], installed["cwd"], installed["site"], python=python)
    assert proc.returncode == 1 and "logger.wandb needs wandb" in proc.stderr and "logger=csv" in proc.stderr, proc.stderr[-2000:]
    assert not (installed["tmp"] / "core-run" / "checkpoints").exists()


CORE_CHECK = """
import importlib, importlib.util, pkgutil, sys
import mingexp
assert mingexp.__file__.startswith(sys.argv[1]), mingexp.__file__  # the wheel's, not the checkout's
for name in ("gradio", "peft", "matplotlib", "wandb"):
    assert importlib.util.find_spec(name) is None, name + " is importable"
failed = []
for info in pkgutil.walk_packages(mingexp.__path__, "mingexp."):
    if info.name.endswith("__main__") or info.name == "mingexp.demo.app":  # app.py imports gradio at its top
        continue
    try:
        importlib.import_module(info.name)
    except Exception as e:
        failed.append(f"{info.name}: {e!r}")
assert not failed, failed
from mingexp.extras import MissingExtra
from mingexp.models.lora import LoRA
from mingexp.lit.loggers import WandbRun
for make, extra in ((LoRA, "lora"), (lambda: WandbRun(task_name="t", offline=True), "tracking")):
    try:
        make()
    except MissingExtra as e:
        assert f"pip install 'mingexp[{extra}]'" in str(e), e
    else:
        raise AssertionError(f"no MissingExtra for {extra}")
print("ok")
"""
