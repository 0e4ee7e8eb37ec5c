"""The demo under hostile input: zips that lie about their size, sessions too large to hold, malformed
transcripts, prompts past the MLLM's positions, requests past their time, and a temporary disk that stays
bounded and is cleaned. Each trial fails fast with a message naming the field or file, and the server still
answers the next request. Memory is measured in a child process (its peak resident size against the same
process just before the trial), where it is reliable."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mingexp.demo.actions import Demo, DemoError, DemoLimits, public
from mingexp.demo.app import build_app, launch
from mingexp.demo.archive import unpack_session
from mingexp.demo.scratch import Scratch
from mingexp.pipeline.images import InputError
from mingexp.pipeline.session import Session, SessionLimits, validate_transcript
from tests.integration.conftest import free_port

PROMPT = "a photo of a red circle"
REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------ crafted archives
def transcript(n_images: int) -> bytes:
    turns = [{"kind": "generate" if k == 0 else "edit", "text": f"turn {k}", "source": None if k == 0 else k - 1, "image": k,
              "answer": None, "seconds": 0.1, "options": {"seed": 0}, "image_file": f"image_{k:03d}.png"} for k in range(n_images)]
    return json.dumps({"turns": turns}).encode()


def png_bytes(size: int, color=(0, 0, 0)) -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def understated_zip(path: Path, real_mib: int, declared: int = 100) -> Path:
    """A session zip whose image member inflates to ``real_mib`` MiB of zeros but whose local and central
    headers declare ``declared`` bytes (the trial of issue 32, item 1)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("transcript.json", transcript(1))
        with z.open("image_000.png", "w") as f:
            for _ in range(real_mib):
                f.write(bytes(1 << 20))
    data = bytearray(path.read_bytes())
    name = b"image_000.png"
    # patch the uncompressed size in the member's local header (offset 22) and central header (offset 24)
    pos = 0
    while (pos := data.find(b"PK\x03\x04", pos)) != -1:
        n = struct.unpack_from("<H", data, pos + 26)[0]
        if data[pos + 30: pos + 30 + n] == name:
            struct.pack_into("<I", data, pos + 22, declared)
        pos += 4
    pos = 0
    while (pos := data.find(b"PK\x01\x02", pos)) != -1:
        n = struct.unpack_from("<H", data, pos + 28)[0]
        if data[pos + 46: pos + 46 + n] == name:
            struct.pack_into("<I", data, pos + 24, declared)
        pos += 4
    path.write_bytes(bytes(data))
    return path


def many_images_zip(path: Path, n: int, side: int) -> Path:
    """``n`` black ``side``² PNGs (tiny when compressed) with a valid transcript (issue 32, item 2)."""
    image = png_bytes(side)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("transcript.json", transcript(n))
        for k in range(n):
            z.writestr(f"image_{k:03d}.png", image)
    return path


# --------------------------------------------------------------------------- memory, in a child process
def peak_delta_mib(trial: str) -> tuple[float, str]:
    """Run ``trial`` (Python source using ``zip_path`` and ``work``) in a child process; the peak resident memory
    it adds over the same process after its imports, in MiB, and what it printed."""
    code = textwrap.dedent(f"""
        import resource, sys
        from pathlib import Path
        from mingexp.demo.archive import unpack_session
        from mingexp.pipeline.session import Session, SessionLimits
        from mingexp.pipeline.images import InputError
        import PIL.Image, zipfile
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        outcome = "ok"
        try:
{textwrap.indent(textwrap.dedent(trial), ' ' * 12)}
        except InputError as e:
            outcome = "refused: " + str(e)
        except Exception as e:
            outcome = "failed: " + type(e).__name__
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((after - before) / 1024)
        print(outcome)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    delta, outcome = proc.stdout.strip().split("\n", 1)
    return float(delta), outcome


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    return understated_zip(tmp_path_factory.mktemp("bomb") / "session.zip", real_mib=512)


def test_a_zip_that_understates_its_size_is_unpacked_within_a_flat_memory_bound(bomb, tmp_path):
    """512 MiB of zeros behind a header that declares 100 bytes: the old reader (archive.read) inflated it in one
    piece; streaming in 1 MiB chunks keeps the added peak under 64 MiB, and the lie is refused."""
    assert bomb.stat().st_size < 1_000_000
    delta, outcome = peak_delta_mib(f"""
        work = Path({str(tmp_path / 'work')!r}); work.mkdir()
        unpack_session({str(bomb)!r}, work, 256 * 2**20, SessionLimits(max_turns=64))
    """)
    assert outcome.startswith("refused") and "session.zip" in outcome, outcome
    assert delta < 64, f"peak grew by {delta:.0f} MiB"
    # what the pre-fix reader did with the same file: the whole member in memory at once (measured for the note)
    old, _ = peak_delta_mib(f"""
        with zipfile.ZipFile({str(bomb)!r}) as z:
            z.read("image_000.png")
    """)
    assert old > 256, f"the one-piece read grew by {old:.0f} MiB only"


def test_an_honest_zip_over_the_cap_stops_at_the_cap_of_real_bytes(tmp_path):
    path = tmp_path / "big.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("transcript.json", transcript(1))
        z.writestr("image_000.png", bytes(32 * 2**20))
    (work := tmp_path / "work").mkdir()
    with pytest.raises(InputError, match="big.zip: unpacks to more than the cap"):
        unpack_session(path, work, 8 * 2**20, SessionLimits())
    assert sum(f.stat().st_size for f in work.iterdir()) <= 8 * 2**20 + 2**20


def test_a_session_of_many_large_images_is_refused_before_decoding(tmp_path):
    """150 black 2048² PNGs (the issue's 38 KB zip): refused by the turn cap at the transcript; 12 of them by the
    session's pixel cap at the header of the image that passes it, within a stated memory bound."""
    many = many_images_zip(tmp_path / "many.zip", 150, 2048)
    assert many.stat().st_size < 200_000
    (work := tmp_path / "w1").mkdir()
    with pytest.raises(InputError, match=r"150 turns, over the session cap of 64"):
        unpack_session(many, work, 256 * 2**20, DemoLimits().session(50_000_000))
    assert not any(work.glob("image_*"))  # nothing but the transcript was unpacked
    twelve = many_images_zip(tmp_path / "twelve.zip", 12, 2048)
    limits = DemoLimits()
    delta, outcome = peak_delta_mib(f"""
        work = Path({str(tmp_path / 'w2')!r}); work.mkdir()
        limits = SessionLimits({limits.max_turns}, {limits.max_session_pixels}, {limits.max_text}, 50_000_000)
        Session.from_saved(None, unpack_session({str(twelve)!r}, work, 256 * 2**20, limits), limits)
    """)
    assert "more than the session cap" in outcome and "turns[8]" in outcome, outcome  # 8 × 4 Mi px = 32 Mi px < 9 × 4 Mi px
    bound = limits.max_session_pixels * 3 / 2**20 + 64  # the images it holds, and the decoder's working memory
    assert delta < bound, f"peak grew by {delta:.0f} MiB, over the stated {bound:.0f}"


@pytest.mark.parametrize("mutate,field", [
    (lambda t: ["a", "b"], "must be an object with a 'turns' list"),
    (lambda t: {"turns": ["a"]}, r"turns\[0\] must be an object"),
    (lambda t: {"turns": [{**t["turns"][0], "seconds": "abc"}]}, r"turns\[0\]\.seconds must be a non-negative number"),
    (lambda t: {"turns": [{**t["turns"][0], "text": {"a": 1}}]}, r"turns\[0\]\.text must be a string, not dict"),
    (lambda t: {"turns": [{**t["turns"][0], "image": False}]}, r"turns\[0\]\.image must be a non-negative integer"),
    (lambda t: {"turns": [{**t["turns"][0], "kind": "exec"}]}, r"turns\[0\]\.kind must be one of"),
    (lambda t: {"turns": [{**t["turns"][0], "image_file": "../../etc/passwd"}]}, r"turns\[0\]\.image_file must be a plain file name"),
    (lambda t: {"turns": [{**t["turns"][0], "extra": 1}]}, r"turns\[0\] has unknown field\(s\) \['extra'\]"),
    (lambda t: {"turns": [{**t["turns"][0], "options": {"seed": [1, 2]}}]}, r"turns\[0\]\.options\.seed must be"),
    (lambda t: {"turns": [{**t["turns"][0], "text": "x" * 5000}]}, r"turns\[0\]\.text has 5000 characters, over the cap of 4096"),
])
def test_a_transcript_with_wrong_types_is_refused_naming_the_field(mutate, field):
    good = json.loads(transcript(1))
    validate_transcript(good, "t.json", DemoLimits().session(10**6))  # the well-formed one passes
    with pytest.raises(InputError, match=field):
        validate_transcript(mutate(good), "t.json", DemoLimits().session(10**6))


def test_a_deeply_nested_or_oversized_transcript_is_a_message(tmp_path):
    from mingexp.pipeline.session import read_transcript

    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(InputError, match="deep.json: (JSON nested too deeply|not valid JSON)"):
        read_transcript(deep)
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(5 * 2**20)
    with pytest.raises(InputError, match="big.json: 5242880 bytes, over the 4 MiB"):
        read_transcript(big)


def test_zip_entries_that_are_not_plain_names_are_never_written(tmp_path):
    path = tmp_path / "odd.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("transcript.json", transcript(1))
        z.writestr("image_000.png", png_bytes(8))
        for name in ("..", "../escape.txt", "/abs.txt", ".hidden", "sub/inner.png"):
            z.writestr(name, b"x")
    (work := tmp_path / "work").mkdir()
    unpack_session(path, work, 2**20, SessionLimits())
    assert sorted(p.name for p in work.iterdir()) == ["image_000.png", "transcript.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.zip", "work"]


def test_messages_shown_in_the_page_carry_no_server_paths():
    assert public("image /tmp/gradio/3f2a/upload.png: not a readable image") == "image upload.png: not a readable image"
    assert public("/srv/x/y/transcript.json: turns[0].text must be a string") == "transcript.json: turns[0].text must be a string"
    assert public("seed 3 · steps 2") == "seed 3 · steps 2"


# ---------------------------------------------------------------------------------- the served demo
@pytest.fixture(scope="module")
def served(pipe, tmp_path_factory):
    scratch = Scratch(tmp_path_factory.mktemp("scratch"), max_bytes=64 * 2**20)
    limits = DemoLimits(max_turns=4, max_session_bytes=8 * 2**20, max_text=40_000)
    demo = Demo(pipe, "exports/toy", max_pixels=4096, limits=limits, scratch=scratch)
    app = build_app(demo)
    port = free_port()
    launch(app, port=port, block=False)
    yield f"http://127.0.0.1:{port}/", demo
    app.close()


def client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False)


def upload(path: Path) -> dict:
    return {"path": str(path), "meta": {"_type": "gradio.FileData"}}


def test_hostile_uploads_are_messages_and_the_server_answers_the_next_request(served, bomb, tmp_path):
    from gradio_client.exceptions import AppError

    url, demo = served
    c = client(url)
    c.predict(PROMPT, 0, 2, 3.0, api_name="/turn")
    for path, message in [(bomb, "session.zip: not a readable zip"),
                          (many_images_zip(tmp_path / "many.zip", 150, 64), "many.zip/transcript.json: 150 turns, over the session cap of 4")]:
        with pytest.raises(AppError, match=message) as e:
            c.predict(upload(path), api_name="/load")
        assert str(tmp_path) not in str(e.value) and "/tmp" not in str(e.value)
    chat, *_ = c.predict("make it blue", 0, 2, 3.0, api_name="/turn")  # the session survived both
    assert len(chat) == 4
    assert not list(demo.scratch.root.glob("work-*"))  # the unpacked files of refused reloads are gone


def test_the_turn_cap_and_the_prompt_cap_are_messages(served):
    from gradio_client.exceptions import AppError

    url, demo = served
    c = client(url)
    for k in range(4):
        c.predict(PROMPT if k == 0 else "make it blue", 0, 1, 3.0, api_name="/turn")
    with pytest.raises(AppError, match="the session has 4 turns, its cap"):
        c.predict("make it green", 0, 1, 3.0, api_name="/turn")
    cap = demo.pipeline.prompt_cap()
    with pytest.raises(AppError, match=f"over the cap of {cap} tokens"):
        c.predict("red " * (cap + 100), 1, 0, 1, 3.0, api_name="/generate")
    with pytest.raises(AppError, match="over the demo's cap of 40000"):
        c.predict("red " * 10_001, 1, 0, 1, 3.0, api_name="/generate")
    gallery, _ = c.predict(PROMPT, 1, 0, 1, 3.0, api_name="/generate")  # still answering
    assert len(gallery) == 1


def test_saves_replace_each_other_and_an_ended_session_leaves_no_files(served):
    url, demo = served
    c = client(url)
    c.predict(PROMPT, 0, 1, 3.0, api_name="/turn")
    first = c.predict(api_name="/save")
    c.predict("make it blue", 0, 1, 3.0, api_name="/turn")
    second = c.predict(api_name="/save")
    with zipfile.ZipFile(second) as z:
        assert len([n for n in z.namelist() if n.endswith(".png")]) == 2
    folders = list(demo.scratch.root.glob("session-*"))
    zips = [p for f in folders for p in f.iterdir()]
    assert first and len(zips) == len(folders)  # one zip per session: the first save was replaced
    session = Session(demo.pipeline)
    (demo.scratch.session_folder(session.id) / "x").write_bytes(b"1")
    demo.end(session)  # Gradio's delete_callback when a tab's state is deleted
    assert not (demo.scratch.root / f"session-{session.id}").exists()


def test_the_temporary_space_is_bounded_and_removed_at_close(pipe, tmp_path):
    scratch = Scratch(tmp_path / "scratch", max_bytes=1024)
    demo = Demo(pipe, "exports/toy", limits=DemoLimits(), scratch=scratch)
    session, _ = demo.turn(None, PROMPT, 0, 1, 3.0)
    with pytest.raises(DemoError, match="temporary space holds"):
        demo.save(session)
    (scratch.root / "session-old").mkdir()
    scratch.ttl = 0.0
    scratch.prune()  # a session Gradio dropped without telling: pruned by age
    assert not (scratch.root / "session-old").exists()
    scratch.close()
    assert not scratch.root.exists()


def test_a_request_past_its_time_budget_stops_between_steps(pipe, tmp_path):
    demo = Demo(pipe, "exports/toy", limits=DemoLimits(time_budget=0.0), scratch=Scratch(tmp_path))
    steps = []
    with pytest.raises(DemoError, match="stopped after step 1 of 3: over the demo's 0 s"):
        demo.generate(PROMPT, 1, 0, 3, 3.0, progress=lambda k, n: steps.append(k))
    assert steps == []  # stopped at the first step's callback, before more work
    assert demo.pipeline.model.cond_cache is None  # a shared prompt cache would time-leak other visitors' prompts


def test_the_prompt_cap_holds_for_every_pipeline_entry_point(pipe):
    tok = pipe.model.mllm.processor.tokenizer
    cap = pipe.prompt_cap()
    positions = pipe.model.mllm.text_config.max_position_embeddings
    assert cap == positions - pipe.model.queries.layout.block_length - len(pipe.model.mllm.processor([""]).input_ids[0])
    at_cap = tok.decode(tok("red " * (cap + 50), add_special_tokens=False)["input_ids"][:cap])
    assert len(tok(at_cap, add_special_tokens=False)["input_ids"]) == cap
    assert pipe.check_prompt(at_cap) == at_cap.strip()
    over = at_cap + " red red"
    for call in (lambda: pipe.generate(over, steps=1), lambda: pipe.edit(Image.new("RGB", (32, 32)), over, steps=1),
                 lambda: pipe.chat(None, over, max_new_tokens=4)):
        with pytest.raises(InputError, match="tokens is over the cap of"):
            call()
    pipe.max_prompt_tokens = 8
    n = len(tok(("red " * 9).strip(), add_special_tokens=False)["input_ids"])
    try:
        with pytest.raises(InputError, match=f"of {n} tokens is over the cap of 8"):
            pipe.generate("red " * 9, steps=1)
    finally:
        pipe.max_prompt_tokens = None


def test_a_live_session_is_bounded_too(pipe):
    session = Session(pipe, SessionLimits(max_turns=2, max_pixels=32 * 32 * 2))
    session.generate(PROMPT, steps=1)
    session.edit("make it blue", steps=1)
    with pytest.raises(InputError, match="the session has 2 turns, its cap"):
        session.edit("make it green", steps=1)
    session.undo()
    with pytest.raises(InputError, match="over its cap of 2048"):
        session.load(Image.new("RGB", (40, 40)))
    assert len(session.images) == 1 and np.asarray(session.latest).shape == (32, 32, 3)


def test_the_demo_limits_default_upload_cap_is_the_pipelines():
    from mingexp.demo.limits import MAX_UPLOAD_PIXELS
    from mingexp.pipeline.images import MAX_PIXELS

    assert MAX_UPLOAD_PIXELS == MAX_PIXELS
