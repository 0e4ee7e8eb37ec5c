"""The page: Gradio Blocks around :class:`~mingexp.demo.actions.Demo` (generate, edit, session, ask).

Each browser tab has its own :class:`~mingexp.pipeline.session.Session` (``gr.State``), requests queue one at a
time on the one model (``default_concurrency_limit=1``), and a failed request shows its message in the page
(``gr.Error``) with the session unchanged. Every event has an ``api_name``, so ``gradio_client`` drives the same
page the browser does (tests/integration/test_demo.py).

A session ends when its tab has been idle for ``SESSION_TTL`` seconds (or closed: Gradio then deletes its state
sooner) and at most ``MAX_SESSIONS`` are held; an ended session's files are removed (``delete_callback``),
Gradio's own cache of uploads and downloads is swept of files older than ``CACHE_TTL``, and the demo's
temporary folder is removed when the server stops.
"""

from __future__ import annotations

import functools
from typing import Callable

import gradio as gr

from mingexp.demo.actions import Demo, DemoError
from mingexp.pipeline.session import Session

CONCURRENCY = 1          # requests run one at a time: one model, no races on it
MAX_UPLOAD = "50mb"      # refused by the server before it is read (the pixel cap then applies to what is decoded)
IMAGE_FORMAT = "png"     # lossless in the page and in downloads
LARGE, SMALL = 420, 160  # pixel heights of the current image and of the images in the conversation
# small images (the toy model's 32 px) enlarged to their boxes, with sharp pixels
SESSION_TTL = 3600       # seconds a tab's session lives after its last request
MAX_SESSIONS = 32        # sessions held at once (the oldest is dropped past it)
CACHE_TTL = 3600         # Gradio's cached uploads / downloads older than this are deleted (checked every 10 min)
CSS = f"""
img {{ image-rendering: pixelated; }}
#session-current img, #edit-result img {{ width: 100%; height: 100%; object-fit: contain; }}
#session-chat img {{ width: {SMALL}px; height: {SMALL}px; object-fit: contain; }}
"""


def display(image, box: int = LARGE):
    """A small image enlarged by a whole factor (nearest neighbour) to fill ``box`` pixels: sharp square pixels, never
    a blurry fractional scale (the toy model's 32-px images become 384 px). The session keeps the original."""
    if image is None:
        return None
    from PIL import Image

    k = max(1, box // max(image.size))
    return image if k == 1 else image.resize((image.width * k, image.height * k), Image.NEAREST)


def messages(session: Session | None) -> list[dict]:
    """The conversation: per turn, what was asked (with its latency) and the image or answer it gave."""
    out: list[dict] = []
    for t in session.turns if session is not None else []:
        said = "(uploaded image)" if t.kind == "load" else f"{t.kind}: {t.text}  ({t.seconds:.2f} s)"
        reply = t.answer if t.kind == "ask" else gr.Image(value=display(session.images[t.image], SMALL), format=IMAGE_FORMAT, show_label=False,
                                                          height=SMALL)
        out += [{"role": "user", "content": said}, {"role": "assistant", "content": reply}]
    return out


def shown(session: Session | None) -> tuple[Session | None, list[dict], object]:
    return session, messages(session), display(session.latest) if session is not None else None


def page_errors(fn: Callable) -> Callable:
    """A :class:`DemoError` becomes a message in the page (no stack trace; the state is not replaced)."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DemoError as e:
            raise gr.Error(str(e), print_exception=False) from None
    return run


def bar(progress: gr.Progress) -> Callable[[int, int], None]:
    return lambda k, n: progress((k, n), desc="sampling")


def build_app(demo: Demo, session_ttl: float = SESSION_TTL) -> gr.Blocks:
    """The Blocks app around ``demo`` (whose :class:`~mingexp.demo.scratch.Scratch` holds the files it offers)."""

    def sampler_controls(prefix: str):
        with gr.Row():
            seed = gr.Number(0, label="seed", precision=0, elem_id=f"{prefix}-seed")
            steps = gr.Slider(1, 100, value=demo.default_steps, step=1, label="steps", elem_id=f"{prefix}-steps")
            guidance = gr.Slider(1.0, 15.0, value=demo.default_guidance, step=0.5, label="guidance", elem_id=f"{prefix}-guidance")
        return seed, steps, guidance

    # ------------------------------------------------------------------ handlers
    @page_errors
    def generate(prompt, n, seed, steps, guidance, progress=gr.Progress()):
        images, result = demo.generate(prompt, n, seed, steps, guidance, bar(progress))
        return [display(im) for im in images], images, result.settings

    @page_errors
    def pick_upload(path):
        image = demo.image(path)
        return image, display(image, SMALL * 2)

    def pick_gallery(images, evt: gr.SelectData):
        image = images[evt.index]
        return image, display(image, SMALL * 2)

    @page_errors
    def edit(source, instruction, seed, steps, guidance, image_guidance, progress=gr.Progress()):
        image, result = demo.edit(source, instruction, seed, steps, guidance, image_guidance, bar(progress))
        return display(image), result.settings

    @page_errors
    def turn(session, text, seed, steps, guidance, progress=gr.Progress()):
        session, result = demo.turn(session, text, seed, steps, guidance, bar(progress))
        return (*shown(session), result.settings, "")

    @page_errors
    def undo(session):
        return shown(demo.undo(session))

    @page_errors
    def redo(session):
        return shown(demo.redo(session))

    @page_errors
    def reset(session):
        return shown(demo.reset(session))

    @page_errors
    def branch(session, turn_number):
        return shown(demo.branch(session, int(turn_number or 0) - 1))  # the page counts turns from 1

    def clicked(evt: gr.SelectData):
        index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return int(index) // 2 + 1  # two messages per turn

    @page_errors
    def save(session):
        return str(demo.save(session))

    @page_errors
    def load(session, upload):
        return shown(demo.load(upload, session))

    @page_errors
    def ask(session, question, upload):
        session, answer, seconds = demo.ask(session, question, upload)
        return (*shown(session), answer, f"{seconds:.2f} s")

    # -------------------------------------------------------------------- layout
    with gr.Blocks(title="mingexp demo", delete_cache=(600, CACHE_TTL)) as app:
        gr.Markdown(f"### mingexp · `{demo.model_ref}`")
        # this tab's Session (created by its first request); its files go when it ends
        session = gr.State(None, time_to_live=session_ttl, delete_callback=demo.end)
        picked = gr.State([])     # the Generate tab's last images (the Edit tab picks from them)
        with gr.Tab("Generate"):
            prompt = gr.Textbox(label="prompt", placeholder="a photo of a red circle", elem_id="gen-prompt")
            with gr.Row():
                n = gr.Slider(1, 8, value=1, step=1, label="images", elem_id="gen-n")
            gen_controls = sampler_controls("gen")
            gen_button = gr.Button("Generate", variant="primary", elem_id="gen-button")
            gallery = gr.Gallery(label="images (click one to edit it)", format=IMAGE_FORMAT, columns=4, elem_id="gen-gallery")
            gen_used = gr.Markdown(elem_id="gen-settings")
        with gr.Tab("Edit"):
            with gr.Row():
                upload = gr.File(label="upload an image", file_types=["image"], type="filepath", elem_id="edit-upload")
                source_view = gr.Image(label="source", type="pil", interactive=False, format=IMAGE_FORMAT, height=SMALL * 2)
            source = gr.State(None)
            instruction = gr.Textbox(label="instruction", placeholder="make it blue", elem_id="edit-instruction")
            edit_controls = sampler_controls("edit")
            image_guidance = gr.Slider(0.0, 5.0, value=0.0, step=0.25, label="image guidance (0 = off)", elem_id="edit-image-guidance")
            edit_button = gr.Button("Edit", variant="primary", elem_id="edit-button")
            edited = gr.Image(label="result", type="pil", interactive=False, format=IMAGE_FORMAT, height=LARGE, elem_id="edit-result")
            edit_used = gr.Markdown(elem_id="edit-settings")
        with gr.Tab("Session"):
            with gr.Row():
                with gr.Column():
                    chat = gr.Chatbot(label="turns (click one to continue from it)", height=480, elem_id="session-chat")
                    text = gr.Textbox(label="first a prompt, then instructions", elem_id="session-text")
                    session_controls = sampler_controls("session")
                    with gr.Row():
                        send = gr.Button("Send", variant="primary", elem_id="session-send")
                        undo_button = gr.Button("Undo", elem_id="session-undo")
                        redo_button = gr.Button("Redo", elem_id="session-redo")
                        reset_button = gr.Button("Reset", elem_id="session-reset")
                    with gr.Row():
                        branch_turn = gr.Number(1, label="turn", precision=0, minimum=1, elem_id="session-branch-turn")
                        branch_button = gr.Button("Continue from this turn", elem_id="session-branch")
                with gr.Column():
                    current = gr.Image(label="current image", type="pil", interactive=False, format=IMAGE_FORMAT, height=LARGE,
                                       elem_id="session-current")
                    turn_used = gr.Markdown(elem_id="session-settings")
                    save_button = gr.Button("Save session (zip)", elem_id="session-save")
                    with gr.Row():
                        download = gr.File(label="saved session", interactive=False, height=SMALL, elem_id="session-download")
                        reload = gr.File(label="reload a saved session (zip)", file_types=[".zip"], type="filepath", height=SMALL,
                                         elem_id="session-reload")
        with gr.Tab("Ask"):
            ask_upload = gr.File(label="an image (else the session's current image)", file_types=["image"], type="filepath")
            question = gr.Textbox(label="question", placeholder="what colour is the circle?", elem_id="ask-question")
            ask_button = gr.Button("Ask", variant="primary", elem_id="ask-button")
            answer = gr.Textbox(label="answer", interactive=False, elem_id="ask-answer")
            ask_used = gr.Markdown(elem_id="ask-settings")

        # ------------------------------------------------------------------ events
        view = [session, chat, current]
        gen_button.click(generate, [prompt, n, *gen_controls], [gallery, picked, gen_used], api_name="generate")
        gallery.select(pick_gallery, [picked], [source, source_view], api_name=False)
        upload.upload(pick_upload, [upload], [source, source_view], api_name="pick")
        edit_button.click(edit, [source, instruction, *edit_controls, image_guidance], [edited, edit_used], api_name="edit")
        send.click(turn, [session, text, *session_controls], [*view, turn_used, text], api_name="turn")
        text.submit(turn, [session, text, *session_controls], [*view, turn_used, text], api_name=False)
        undo_button.click(undo, [session], view, api_name="undo")
        redo_button.click(redo, [session], view, api_name="redo")
        reset_button.click(reset, [session], view, api_name="reset")
        chat.select(clicked, None, [branch_turn], api_name=False).then(branch, [session, branch_turn], view, api_name=False)
        branch_button.click(branch, [session, branch_turn], view, api_name="branch")
        save_button.click(save, [session], [download], api_name="save")
        reload.upload(load, [session, reload], view, api_name="load")
        ask_button.click(ask, [session, question, ask_upload], [*view, answer, ask_used], api_name="ask")
    app.queue(default_concurrency_limit=CONCURRENCY)
    app.demo = demo
    return app


def launch(app: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, share: bool = False, block: bool = True,
           max_sessions: int = MAX_SESSIONS):
    """Serve the page (``block=False`` returns at once, for tests); with ``block`` the demo's temporary folder is
    removed when the server stops."""
    try:
        return app.launch(server_name=host, server_port=port, share=share, max_file_size=MAX_UPLOAD,
                          allowed_paths=[str(app.demo.scratch.root)], prevent_thread_lock=not block, quiet=not block, css=CSS,
                          state_session_capacity=max_sessions)
    finally:
        if block:
            app.demo.scratch.close()
