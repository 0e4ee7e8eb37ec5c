"""Optional dependencies (mingexp.extras): a missing one is answered with the extra that brings it, at the real call
sites, and pyproject.toml's extras say the same as :data:`mingexp.extras.EXTRAS`."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from mingexp.extras import EXTRAS, MissingExtra, require

ROOT = Path(__file__).resolve().parents[2]
# Packages of an extra that the core needs too (pyproject.toml says why beside each)
CORE_TOO = {"scipy"}  # transformers' Mask2Former (GenEval's detector) builds its loss, and so needs scipy, at inference


def dist_name(requirement: str) -> str:
    """``"gradio>=6"`` → ``"gradio"`` (PEP 503 normalised)."""
    return re.sub(r"[-_.]+", "-", re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1)).lower()


def dists_of(import_name: str) -> set[str]:
    """The distributions that install an import name (everything is installed where the tests run)."""
    return {dist_name(d) for d in installed_dists().get(import_name, [import_name])}


@cache
def installed_dists() -> dict[str, list[str]]:
    return packages_distributions()


# --- require ----------------------------------------------------------------------------------------------------------


def test_require_names_the_extra_and_the_alternative():
    with pytest.raises(MissingExtra) as info:
        require("mingexp_no_such_pkg", "demo", "the web demo", instead="logger=csv")
    message = str(info.value)
    assert "pip install 'mingexp[demo]'" in message
    assert "the web demo needs mingexp_no_such_pkg" in message
    assert "or use logger=csv" in message
    assert isinstance(info.value, ImportError)  # `except ImportError` elsewhere still catches it


def test_require_without_alternative_and_submodules():
    with pytest.raises(MissingExtra) as info:
        require("mingexp_no_such_pkg.sub", "lora", "LoRA")
    assert "needs mingexp_no_such_pkg," in str(info.value) and "mingexp[lora]" in str(info.value)
    assert "or use" not in str(info.value)
    import json

    assert require("json", "report", "anything") is json  # present: the module itself


def test_require_leaves_a_broken_package_alone(tmp_path, monkeypatch):
    """The package is there but one of its own imports is missing: that error is not the extra's to explain."""
    (tmp_path / "mingexp_broken_pkg.py").write_text("import mingexp_its_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as info:
        require("mingexp_broken_pkg", "demo", "the web demo")
    assert not isinstance(info.value, MissingExtra) and info.value.name == "mingexp_its_missing_dependency"


def test_require_refuses_an_unknown_extra():
    with pytest.raises(ValueError, match="unknown extra 'nope'"):
        require("json", "nope", "anything")


# --- pyproject.toml and EXTRAS cannot drift ---------------------------------------------------------------------------


def test_every_extra_in_pyproject_and_dev_installs_them_all():
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml")  # requires-python allows 3.10
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    core = {dist_name(r) for r in project["dependencies"]}
    for extra, modules in EXTRAS.items():
        assert extra in optional, f"EXTRAS names {extra!r}; pyproject.toml's [project.optional-dependencies] has no such extra"
        listed = {dist_name(r) for r in optional[extra]}
        wanted = set().union(*(dists_of(m) for m in modules))
        assert wanted == listed, f"extra {extra!r}: EXTRAS imports {sorted(wanted)}, pyproject.toml lists {sorted(listed)}"
        assert not (listed & core) - CORE_TOO, f"extra {extra!r}: {sorted(listed & core)} are core dependencies too"
    # dev = every extra (make install: -e ".[dev]")
    self_refs = [re.fullmatch(r"mingexp\[([^\]]*)\]", r.replace(" ", "")) for r in optional["dev"]]
    in_dev = {e for m in self_refs if m for e in m.group(1).split(",")}
    assert in_dev >= set(EXTRAS), f"dev must include every extra; missing {sorted(set(EXTRAS) - in_dev)}"
    assert '-e ".[dev]"' in (ROOT / "Makefile").read_text()


# --- the real call sites, with the package blocked --------------------------------------------------------------------


def run_blocked(package: str, code: str, expect: str | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where ``import <package>`` raises ModuleNotFoundError (name=package); with
    ``expect`` (an expression), print the MissingExtra it raises (and fail when it raises none)."""
    script = f"import sys\nsys.modules[{package!r}] = None\n" + textwrap.dedent(code)
    if expect is not None:
        script += ("\nfrom mingexp.extras import MissingExtra\ntry:\n    " + expect +
                   "\nexcept MissingExtra as e:\n    print(e)\nelse:\n    raise SystemExit('no MissingExtra')\n")
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_lora_without_peft():
    proc = run_blocked("peft", """
        from torch import nn
        from mingexp.models.lora import LoRA, has_lora

        class Part(nn.Module):
            def __init__(self):
                super().__init__()
                self.transformer = nn.Sequential(nn.Linear(4, 4))

        model = nn.Module()
        model.dit, model.connector = Part(), Part()
        assert has_lora(model) is False  # exports of models without LoRA never need peft
        """, expect='LoRA(rank=2, dit=["0"]).apply(model)')
    assert proc.returncode == 0, proc.stderr
    assert "LoRA (model.lora) needs peft" in proc.stdout and "pip install 'mingexp[lora]'" in proc.stdout
    assert "model.lora=null" in proc.stdout


def test_wandb_logger_without_wandb():
    proc = run_blocked("wandb", "from mingexp.lit.loggers import WandbRun", expect='WandbRun(task_name="t", offline=True)')
    assert proc.returncode == 0, proc.stderr
    assert "logger=wandb needs wandb" in proc.stdout and "pip install 'mingexp[tracking]'" in proc.stdout
    assert "or use logger=csv" in proc.stdout


def test_demo_without_gradio():
    """The entry point says it (a one-line exit, no traceback) before it loads anything."""
    proc = run_blocked("gradio", """
        from mingexp.demo.__main__ import main

        main(["model=/nonexistent/model"])
        """)
    assert proc.returncode == 1, proc.stderr
    assert "demo: the web demo (python -m mingexp.demo) needs gradio" in proc.stderr
    assert "pip install 'mingexp[demo]'" in proc.stderr
    assert "Traceback" not in proc.stderr and "nonexistent" not in proc.stderr  # before the model is looked at
