"""The web demo served on a local port and driven through its API with gradio_client (the page's own events)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mingexp.demo.actions import Demo
from mingexp.demo.app import build_app, launch
from mingexp.demo.scratch import Scratch
from tests.integration.conftest import free_port

PROMPT = "a photo of a red circle"


@pytest.fixture(scope="module")
def served(pipe, tmp_path_factory):
    """The page on a free local port; uploads above 4096 pixels refused (to test the cap with small files)."""
    app = build_app(Demo(pipe, "exports/toy", max_pixels=4096, scratch=Scratch(tmp_path_factory.mktemp("demo"))))
    port = free_port()
    launch(app, port=port, block=False)
    yield f"http://127.0.0.1:{port}/"
    app.close()


def client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False)


def shown_pixels(image) -> np.ndarray:
    """The pixels the page shows (enlarged by a whole factor for small images)."""
    path = image["image"] if isinstance(image, dict) and "image" in image else image
    return np.asarray(Image.open(path["path"] if isinstance(path, dict) else path).convert("RGB"))


def pixels(image, size: int = 32) -> np.ndarray:
    """The model's image behind what the page shows: every k-th pixel of the k-times enlarged one."""
    shown = shown_pixels(image)
    k = shown.shape[0] // size
    return shown[::k, ::k]


def png(tmp_path: Path, name: str, size=(32, 32), color=(200, 30, 30)) -> str:
    path = tmp_path / name
    Image.new("RGB", size, color).save(path)
    return str(path)


def test_generate_reports_its_settings_and_reproduces_from_the_cli_values(served, pipe):
    c = client(served)
    gallery, settings = c.predict(PROMPT, 2, 3, 3, 3.0, api_name="/generate")
    assert len(gallery) == 2 and "seed 3 · steps 3 · guidance_scale 3.0" in settings
    assert "python -m mingexp.generate model=exports/toy" in settings and "seed=3" in settings
    again, _ = c.predict(PROMPT, 2, 3, 3, 3.0, api_name="/generate")
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(gallery, again))
    direct = pipe.generate(PROMPT, num_images=2, seed=3, steps=3, guidance_scale=3.0)  # what the shown command computes
    assert all(np.array_equal(pixels(a), np.asarray(b)) for a, b in zip(gallery, direct))


def test_small_images_are_shown_at_a_whole_scale_with_sharp_pixels(served):
    gallery, _ = client(served).predict(PROMPT, 1, 0, 3, 3.0, api_name="/generate")
    shown = shown_pixels(gallery[0])
    k = shown.shape[0] // 32
    assert k >= 2 and shown.shape[:2] == (32 * k, 32 * k)
    blocks = shown.reshape(32, k, 32, k, 3)
    assert (blocks == blocks[:, :1, :, :1, :]).all()  # each model pixel a solid k×k block: no interpolation blur


def test_edit_an_uploaded_image(served, tmp_path):
    c = client(served)
    c.predict({"path": png(tmp_path, "red.png"), "meta": {"_type": "gradio.FileData"}}, api_name="/pick")
    result, settings = c.predict("make it blue", 1, 3, 3.0, 0.0, api_name="/edit")
    assert pixels(result).shape == (32, 32, 3) and "seed 1" in settings and "image_guidance" not in settings
    _, guided = c.predict("make it blue", 1, 3, 3.0, 1.5, api_name="/edit")
    assert "image_guidance_scale 1.5" in guided


def turns(chat: list) -> list[str]:
    return [m["content"][0]["text"] if isinstance(m["content"], list) else m["content"] for m in chat if m["role"] == "user"]


def test_a_three_turn_session_with_undo_redo_branch_and_save_reload(served, tmp_path):
    c = client(served)
    for text in (PROMPT, "make it blue", "add a star"):
        chat, current, settings, cleared = c.predict(text, 0, 3, 3.0, api_name="/turn")
    assert [t.split("  (")[0] for t in turns(chat)] == [f"generate: {PROMPT}", "edit: make it blue", "edit: add a star"]
    assert cleared == "" and "seed 0" in settings and " s  " in settings
    third = pixels(current)
    chat, current = c.predict(api_name="/undo")
    assert len(turns(chat)) == 2
    chat, current = c.predict(api_name="/redo")
    assert len(turns(chat)) == 3 and np.array_equal(pixels(current), third)
    chat, _ = c.predict(1, api_name="/branch")  # continue from turn 1: the two edits are set aside
    assert len(turns(chat)) == 1
    chat, current, _, _ = c.predict("make it green", 0, 3, 3.0, api_name="/turn")  # the new branch
    assert [t.split("  (")[0] for t in turns(chat)][-1] == "edit: make it green"
    saved = c.predict(api_name="/save")
    with zipfile.ZipFile(saved) as z:
        names = set(z.namelist())
        transcript = json.loads(z.read("transcript.json"))["turns"]
    assert names == {"transcript.json", "image_000.png", "image_001.png"}
    assert [t["text"] for t in transcript] == [PROMPT, "make it green"] and transcript[1]["options"]["seed"] == 0
    other = client(served)  # a new visitor reloads it and continues
    chat, reloaded = other.predict({"path": saved, "meta": {"_type": "gradio.FileData"}}, api_name="/load")
    assert len(turns(chat)) == 2 and np.array_equal(pixels(reloaded), pixels(current))
    chat, _, _, _ = other.predict("make it blue", 0, 3, 3.0, api_name="/turn")
    assert len(turns(chat)) == 3


def test_two_visitors_sessions_are_isolated(served):
    from gradio_client.exceptions import AppError

    a, b = client(served), client(served)
    chat, *_ = a.predict(PROMPT, 0, 3, 3.0, api_name="/turn")
    with pytest.raises(AppError, match="nothing to undo"):
        b.predict(api_name="/undo")  # b's session is empty: a's turn is not b's
    chat_b, *_ = b.predict("a photo of two stars", 0, 3, 3.0, api_name="/turn")
    again, *_ = a.predict("make it blue", 0, 3, 3.0, api_name="/turn")
    assert [t.split("  (")[0] for t in turns(again)] == [f"generate: {PROMPT}", "edit: make it blue"]
    assert [t.split("  (")[0] for t in turns(chat_b)] == ["generate: a photo of two stars"]


@pytest.mark.parametrize("call,message", [
    (lambda c, tmp: c.predict("  ", 1, 0, 3, 3.0, api_name="/generate"), "empty prompt"),
    (lambda c, tmp: c.predict("make it blue", 0, 3, 3.0, 0.0, api_name="/edit"), "no image"),
    (lambda c, tmp: c.predict({"path": garbage(tmp, ".png"), "meta": {"_type": "gradio.FileData"}}, api_name="/pick"), "not a readable image"),
    (lambda c, tmp: c.predict({"path": png(tmp, "big.png", (100, 100)), "meta": {"_type": "gradio.FileData"}}, api_name="/pick"),
     "over the 4096 pixel cap"),
    (lambda c, tmp: c.predict(5, api_name="/branch"), r"turn 4: the session has 1 turn\(s\)"),
    (lambda c, tmp: c.predict({"path": garbage(tmp, ".zip"), "meta": {"_type": "gradio.FileData"}}, api_name="/load"), "not a zip"),
])
def test_bad_input_is_a_message_and_the_session_survives(served, tmp_path, call, message):
    from gradio_client.exceptions import AppError

    c = client(served)
    chat, *_ = c.predict(PROMPT, 0, 3, 3.0, api_name="/turn")
    with pytest.raises(AppError, match=message):
        call(c, tmp_path)
    chat, _ = c.predict(api_name="/undo")  # the turn made before the bad request is still there
    assert chat == []


def garbage(tmp: Path, suffix: str) -> str:
    path = tmp / f"not_really{suffix}"
    path.write_bytes(b"this is text, not a PNG")
    return str(path)


def test_ask_answers_about_the_current_image(served, tmp_path):
    from gradio_client.exceptions import AppError

    c = client(served)
    with pytest.raises(AppError, match="no image to ask about"):
        c.predict("what is it?", None, api_name="/ask")
    chat, _, answer, _ = c.predict("what is it?", {"path": png(tmp_path, "red.png"), "meta": {"_type": "gradio.FileData"}}, api_name="/ask")
    assert isinstance(answer, str) and len(chat) == 4  # the upload became the current image, then the question
    c.predict(api_name="/reset")
    c.predict(PROMPT, 0, 3, 3.0, api_name="/turn")
    chat, _, answer, seconds = c.predict("what colour is the circle?", None, api_name="/ask")
    assert isinstance(answer, str) and seconds.endswith(" s") and chat[-1]["role"] == "assistant"


def test_an_unknown_model_folder_is_named_at_start(tmp_path):
    from mingexp.demo.__main__ import main

    with pytest.raises(SystemExit, match=f"demo: model={tmp_path / 'nope'}: no such folder or .ckpt file"):
        main([f"model={tmp_path / 'nope'}"])


def test_the_progress_bar_follows_the_sampler_steps_over_all_batches(pipe):
    calls = []
    pipe.generate(PROMPT, num_images=2, steps=3, batch_size=1, progress=lambda k, n: calls.append((k, n)))
    assert calls == [(k, 6) for k in range(1, 7)]


def test_a_saved_session_with_a_missing_image_is_refused_by_name(pipe, tmp_path):
    from mingexp.pipeline.images import InputError
    from mingexp.pipeline.session import Session

    session = pipe.session(steps=2)
    session.generate(PROMPT)
    session.edit("make it blue")
    session.undo()
    session.redo()
    folder = session.save(tmp_path / "s")
    assert len(Session.from_saved(pipe, folder).images) == 2
    (folder / "image_001.png").unlink()
    with pytest.raises(InputError, match="image_001.png: no such file"):
        Session.from_saved(pipe, folder)
