"""Inference: export → from_pretrained round trip, generate / edit / chat, sessions, the CLIs, bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from mingexp.errors import ConfigError
from mingexp.export import export
from mingexp.pipeline import InputError, MingUniPipeline
from mingexp.train import train
from tests.conftest import CONF_DIR
from tests.integration.conftest import compose_train

FAST = dict(steps=2)


@pytest.fixture(scope="module")
def exported(tiny_dir, world, tmp_path_factory) -> tuple[Path, Path]:
    run = tmp_path_factory.mktemp("run")
    train(compose_train(tiny_dir, world, run, "trainer.max_steps=2", "callbacks.samples=null", "+module.ema={decay: 0.5}"))
    ckpt = run / "checkpoints" / "last.ckpt"
    out = tmp_path_factory.mktemp("export") / "toy"
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("export", overrides=[f"ckpt_path={ckpt}", f"out={out}", f"paths.toy_dir={tiny_dir}", f"paths.root_dir={run}"])
    export(cfg)
    return ckpt, out


@pytest.fixture(scope="module")
def pipe(exported) -> MingUniPipeline:
    return MingUniPipeline.from_pretrained(exported[1])


def test_export_folder_has_no_pickles_and_round_trips_exactly(exported, pipe, tmp_path):
    ckpt, folder = exported
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    # format 3: the sum of the parts' own folders plus the index (issue 35)
    assert {"mingexp_pipeline.json", "queries/queries.json", "queries/model.safetensors", "connector/model.safetensors",
            "connector/config.json", "connector/connector.json", "transformer/config.json", "scheduler/scheduler_config.json"} <= files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl"))]
    # the EMA weights were exported: queries equal the checkpoint's EMA shadow, not the raw weights
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    ema_queries = {k: v for k, v in state["ema"].items() if k.startswith("queries.")}
    assert ema_queries and all(torch.equal(pipe.model.queries.state_dict()[k.removeprefix("queries.")], v) for k, v in ema_queries.items())
    # save_pretrained → from_pretrained again: identical images for a fixed seed
    again = MingUniPipeline.from_pretrained(pipe.save_pretrained(tmp_path / "again"))
    a = np.asarray(pipe.generate("a photo of a red circle", seed=3, **FAST)[0])
    b = np.asarray(again.generate("a photo of a red circle", seed=3, **FAST)[0])
    assert np.array_equal(a, b)


def test_generate_edit_chat(pipe):
    images = pipe.generate(["a photo of a red circle", "a photo of two stars"], num_images=2, seed=0, **FAST)
    assert len(images) == 4 and all(im.size == (pipe.model.default_size(),) * 2 for im in images)
    # batching does not change an image: image k uses seed + k
    single = pipe.generate("a photo of two stars", seed=2, **FAST)[0]
    assert np.array_equal(np.asarray(single), np.asarray(images[2]))
    edited = pipe.edit(images[0], "make it blue", **FAST)
    assert isinstance(edited, Image.Image) and edited.size == images[0].size
    guided = pipe.edit(images[0], "make it blue", image_guidance_scale=1.5, **FAST)
    assert not np.array_equal(np.asarray(guided), np.asarray(edited))  # the third branch changes the result
    assert isinstance(pipe.chat(images[0], "what colour is the circle?", max_new_tokens=4), str)


def test_three_turn_session_with_undo_and_save(pipe, tmp_path):
    s = pipe.session(**FAST)
    first = s.generate("a photo of a red circle")
    s.edit("make it blue")
    s.edit("add a star")
    assert [t.kind for t in s.turns] == ["generate", "edit", "edit"] and len(s.images) == 3
    assert s.turns[1].source == 0 and s.turns[2].source == 1  # each edit reads the latest image
    assert s.undo().text == "add a star" and len(s.images) == 2
    s.edit("add a square", image=0)  # an explicit earlier image
    assert s.turns[-1].source == 0
    folder = s.save(tmp_path / "session")
    transcript = json.loads((folder / "transcript.json").read_text())["turns"]
    assert [t["kind"] for t in transcript] == ["generate", "edit", "edit"]
    assert all((folder / t["image_file"]).is_file() for t in transcript)
    assert np.array_equal(np.asarray(Image.open(folder / "image_000.png")), np.asarray(first))


def test_bad_inputs_give_clear_errors_and_keep_the_session_usable(pipe, tmp_path):
    s = pipe.session(**FAST)
    with pytest.raises(InputError, match="no image yet"):
        s.edit("make it blue")
    with pytest.raises(InputError, match="empty prompt"):
        s.generate("   ")
    with pytest.raises(InputError, match="no such file"):
        s.edit("x", image=tmp_path / "missing.png")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(InputError, match="not a readable image"):
        s.edit("x", image=tmp_path / "notes.png")
    assert s.turns == [] and s.images == []
    s.generate("a photo of a red circle")  # still usable
    # alpha and palette images are converted; a huge image is resized down
    rgba = Image.new("RGBA", (40, 30), (255, 0, 0, 128))
    assert pipe.edit(rgba, "make it blue", **FAST).mode == "RGB"
    assert pipe.edit(rgba.convert("P"), "make it blue", **FAST).mode == "RGB"
    from mingexp.pipeline.images import load_image

    assert max(load_image(Image.new("RGB", (5000, 100)), max_side=2048).size) == 2048
    big = tmp_path / "big.png"
    Image.new("L", (3000, 3000)).save(big)
    with pytest.raises(InputError, match="pixel cap"):
        load_image(big, max_pixels=1_000_000)


def test_incomplete_or_foreign_export_folders_are_refused(exported, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(exported[1], folder)
    (folder / "queries" / "model.safetensors").unlink()
    with pytest.raises(InputError, match="incomplete.*queries/model.safetensors"):
        MingUniPipeline.from_pretrained(folder)
    index = json.loads((exported[1] / "mingexp_pipeline.json").read_text())
    (folder / "mingexp_pipeline.json").write_text(json.dumps({**index, "version": 99}))
    with pytest.raises(InputError, match="version 99"):
        MingUniPipeline.from_pretrained(folder)
    # the last release of the format (2: one queries.safetensors, parts as partials in the index) is refused by version,
    # naming the fix (issue 35)
    (folder / "mingexp_pipeline.json").write_text(json.dumps({**index, "version": 2}))
    with pytest.raises(InputError, match=r"format version 2 but this mingexp reads version 3; re-export the run's checkpoint .*mingexp.export"):
        MingUniPipeline.from_pretrained(folder)
    with pytest.raises(InputError, match="not a mingexp pipeline"):
        MingUniPipeline.from_pretrained(tmp_path)


def test_a_pickled_or_renamed_part_file_is_named(exported, tmp_path):
    """Issue 32: a pickle saved as connector/model.safetensors, and a tensor renamed in it, are errors naming the file."""
    import shutil

    from safetensors.torch import load_file, save_file

    from mingexp.errors import ConfigError

    folder = tmp_path / "copy"
    shutil.copytree(exported[1], folder)
    file = folder / "connector" / "model.safetensors"
    state = load_file(str(file))
    first = sorted(state)[0]
    save_file({("renamed." + k if k == first else k): v for k, v in state.items()}, str(file))
    with pytest.raises(ConfigError, match=rf"{file}: missing \['{first}'\]; unknown \['renamed.{first}'\]"):
        MingUniPipeline.from_pretrained(folder)
    torch.save(state, file)
    with pytest.raises(ConfigError, match=rf"{file}: not a readable safetensors file"):
        MingUniPipeline.from_pretrained(folder)


class Payload:
    """A pickle whose unpickling calls ``Path.touch(marker)``: what an unsafe ``torch.load`` of it would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def malicious_copy(exported_folder: Path, folder: Path, edit) -> Path:
    """A copy of a real export whose mingexp_pipeline.json has been edited by ``edit(index, folder)``."""
    import shutil

    shutil.copytree(exported_folder, folder)
    index = json.loads((folder / "mingexp_pipeline.json").read_text())
    edit(index["model"], folder)
    (folder / "mingexp_pipeline.json").write_text(json.dumps(index))
    return folder


ATTACKS = {
    # the reported one: a pickle shipped in the folder, loaded through an interpolation into the folder
    "torch.load": (lambda m, f: m.update(dit={"_target_": "torch.load", "f": "${dit.path}/payload.pt", "weights_only": False}),
                   r"model.dit._target_='torch.load' is refused"),
    "os.system": (lambda m, f: m.update(flow={"_target_": "os.system", "command": f"touch {f / 'marker'}"}), r"model.flow._target_='os.system'"),
    "builtins.open": (lambda m, f: m["sampler"].update(log={"_target_": "builtins.open", "file": str(f / "marker"), "mode": "w"}),
                      r"model.sampler.log._target_='builtins.open'"),
    "trust_remote_code": (lambda m, f: m["mllm"].update(trust_remote_code=True), r"model.mllm.trust_remote_code=true is refused"),
    "oc.env": (lambda m, f: m["mllm"].update(path="${oc.env:HOME}"), r"model.mllm.path=.*interpolations allowed"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_malicious_export_folder_is_refused_and_runs_nothing(exported, tmp_path, attack):
    edit, refused = ATTACKS[attack]
    folder = malicious_copy(exported[1], tmp_path / "evil", edit)
    torch.save({"weights": Payload(folder / "marker")}, folder / "payload.pt")
    if attack == "torch.load":  # the payload is live: it calls Path.touch, which only a weights_only load refuses
        import pickle
        import zipfile

        with zipfile.ZipFile(folder / "payload.pt") as z:
            assert b"touch" in z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
        with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
            torch.load(folder / "payload.pt", weights_only=True)
    with pytest.raises(ConfigError, match=refused):
        MingUniPipeline.from_pretrained(folder)
    from mingexp.generate import main

    with pytest.raises(SystemExit, match=refused):  # python -m mingexp.generate model=<folder> ...
        main([f"model={folder}", "prompt=a photo of a red circle", f"out={tmp_path / 'x.png'}", "steps=2"])
    assert not (folder / "marker").exists() and not (tmp_path / "x.png").exists()


def test_remote_code_is_the_callers_to_allow(exported, tmp_path):
    folder = malicious_copy(exported[1], tmp_path / "asks", ATTACKS["trust_remote_code"][0])
    pipe = MingUniPipeline.from_pretrained(folder, trust_remote_code=True)
    assert pipe.config["mllm"]["trust_remote_code"] is True


def test_the_export_references_the_mllm_by_an_absolute_path(exported, tmp_path, monkeypatch):
    index = json.loads((exported[1] / "mingexp_pipeline.json").read_text())
    assert Path(index["model"]["mllm"]["path"]).is_absolute() and Path(index["mllm_source"]).is_dir()
    monkeypatch.chdir(tmp_path)  # loads from any working directory
    assert MingUniPipeline.from_pretrained(exported[1]).generate("a photo of a red circle", **FAST)[0].mode == "RGB"


def test_generate_cli_writes_images(exported, tmp_path, capsys):
    from mingexp.generate import main

    paths = main([f"model={exported[1]}", "prompt=a photo of a red circle", f"out={tmp_path / 'red.png'}", "steps=2"])
    assert paths == [tmp_path / "red.png"] and Image.open(paths[0]).mode == "RGB"
    edit = main([f"model={exported[1]}", f"image={paths[0]}", "instruction=make it blue", f"out={tmp_path / 'blue.png'}", "steps=2"])
    assert edit[0].is_file() and str(edit[0]) in capsys.readouterr().out
    with pytest.raises(SystemExit, match="unknown argument 'colour=red'"):
        main([f"model={exported[1]}", "colour=red"])
    with pytest.raises(SystemExit, match="needs both image=PATH and instruction=TEXT"):
        main([f"model={exported[1]}", "instruction=make it blue"])


def test_chat_cli_through_standard_input(exported, tmp_path):
    from mingexp.chat import main

    script = "help\nedit make it blue\ngenerate a photo of a red circle\nedit make it blue\nundo\nwhat colour is it?\n\x1b[A\nhistory\nsave\nquit\n"
    out = io.StringIO()
    folder = main([f"model={exported[1]}", f"out={tmp_path / 'chat'}", "steps=2"], stdin=io.StringIO(script), stdout=out)
    text = out.getvalue()
    assert "\nCommands, one per line (anything else is a question about the latest image):\n  generate <prompt>" in text
    assert "error: no image yet" in text  # the first edit fails cleanly, the session goes on
    assert f"image: {folder / 'image_000.png'}" in text and f"image: {folder / 'image_001.png'}" in text
    assert "answer:" in text and "undone: edit 'make it blue'" in text
    assert not (folder / "image_001.png").exists()  # the undone turn's image is gone from disk too
    assert text.count("answer:") == 1 and "control characters" in text  # an arrow key is not a question
    transcript = json.loads((folder / "transcript.json").read_text())["turns"]
    assert [t["kind"] for t in transcript] == ["generate", "ask"]
    assert sorted(p.name for p in folder.glob("*.png")) == ["image_000.png"]


def test_chat_in_a_terminal_has_a_prompt_and_line_editing(exported, tmp_path):
    """In a real terminal (a pty): the prompt shows, and the up arrow recalls the last line (readline)."""
    import os
    import pty
    import select
    import subprocess
    import sys
    import time

    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "mingexp.chat", f"model={exported[1]}", f"out={tmp_path / 'chat'}", "steps=2"],
                            stdin=follower, stdout=follower, stderr=subprocess.DEVNULL, close_fds=True)
    os.close(follower)
    seen = b""

    def read_until(token: bytes, count: int = 1, limit: float = 120) -> None:
        nonlocal seen
        end = time.monotonic() + limit
        while seen.count(token) < count and time.monotonic() < end:
            if select.select([leader], [], [], 0.5)[0]:
                try:
                    seen += os.read(leader, 4096)
                except OSError:
                    break
        assert seen.count(token) >= count, seen[-2000:]

    try:
        read_until(b"mingexp> ")
        os.write(leader, b"help\r")
        read_until(b"Commands, one per line")
        os.write(leader, b"\x1b[A\r")  # up arrow, enter: the last line again
        read_until(b"Commands, one per line", count=2)
        os.write(leader, b"quit\r")
        read_until(b"session saved")
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        os.close(leader)
    assert b"answer:" not in seen and b"session saved" in seen


@pytest.mark.slow
def test_compiled_pipeline_gives_the_same_images(exported):
    eager = MingUniPipeline.from_pretrained(exported[1])
    compiled = MingUniPipeline.from_pretrained(exported[1]).compile()
    a = np.asarray(eager.generate("a photo of a red circle", seed=1, **FAST)[0]).astype(int)
    b = np.asarray(compiled.generate("a photo of a red circle", seed=1, **FAST)[0]).astype(int)
    assert np.abs(a - b).max() <= 2  # fused kernels may round differently by a uint8 step


@pytest.mark.parametrize("which", ["export", "ckpt"])
def test_the_demos_reproducing_line_reproduces_a_session_edit_exactly(exported, tiny_dir, tmp_path, which):
    """The line the demo prints for an edit turn runs as printed (the previous image saved and named, the model by its
    absolute path; a run checkpoint is accepted as generate accepts it) and gives the same pixels."""
    import shlex

    import numpy as np

    from mingexp.demo.actions import Demo
    from mingexp.demo.scratch import Scratch
    from mingexp.generate import main
    from mingexp.pipeline.loading import load_pipeline

    model = exported[1] if which == "export" else exported[0]
    # a run checkpoint's config names the MLLM through this machine's paths: the test's tiny one is given by path
    load = {"mllm_path": str(tiny_dir / "mllm")} if which == "ckpt" else {}
    demo = Demo(load_pipeline(str(model), **load), str(model.resolve()), scratch=Scratch(tmp_path / "scratch"), load_args=load)
    session, _ = demo.turn(None, "a photo of a red circle", 0, 2, 3.0)
    session, result = demo.turn(session, "make it blue", 4, 2, 3.0)
    line = result.settings.split("`")[1]
    assert line.startswith("python -m mingexp.generate ") and "<" not in line
    args = shlex.split(line)[3:]
    (written,) = main([*args, f"out={tmp_path / 'again.png'}"])
    assert np.array_equal(np.asarray(Image.open(written).convert("RGB")), np.asarray(session.latest))
