"""Per-turn latency of the demo page (generate, edit, ask) against the same calls made directly, same run.

Serves ``python -m mingexp.demo``'s page on a local port, drives a session through its API (gradio_client: the
page's own events: a generate turn, two edit turns, a question), and times each request end to end; the baseline
is the same turn on the pipeline itself. Prints both and the ratio (what the page, the queue and the image
transfers add). With ``--screenshot DIR`` and Debian's chromium, also the page after a 3-turn session.

    python benchmarks/demo_latency.py --model outputs/train/runs/<run>/checkpoints/last.ckpt
    python benchmarks/demo_latency.py --model exports/toy --screenshot docs/
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import time
from pathlib import Path

TURNS = ["a photo of a red circle", "make the circle blue", "add a yellow star"]
QUESTION = "what colour is the circle?"


def timed(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def screenshot(port: int, out: Path) -> Path:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(f"http://127.0.0.1:{port}/")
        page.get_by_role("tab", name="Session").click()
        for k, text in enumerate(TURNS, 1):
            page.fill("#session-text textarea", text)
            page.click("#session-send")
            page.wait_for_function("(n) => document.querySelectorAll('#session-chat .message-row').length >= n", arg=2 * k, timeout=300_000)
        page.wait_for_timeout(500)
        path = out / "demo_session_3_turns.png"
        page.screenshot(path=str(path), full_page=True)
        browser.close()
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="an export folder or a run's .ckpt")
    p.add_argument("--repeats", type=int, default=3, help="each request this many times (median)")
    p.add_argument("--screenshot", type=Path, default=None, help="folder for a screenshot of a 3-turn session (needs chromium)")
    args = p.parse_args(argv)

    from gradio_client import Client

    from mingexp.demo.__main__ import load_pipeline
    from mingexp.demo.actions import Demo
    from mingexp.demo.app import build_app, launch

    pipe = load_pipeline(args.model)
    steps, guidance = pipe.model.sampler.steps, pipe.model.sampler.guidance_scale
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = build_app(Demo(pipe, args.model))
    launch(app, port=port, block=False)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        first = pipe.generate(TURNS[0], seed=0, steps=steps, guidance_scale=guidance)[0]
        direct = {
            "generate": timed(lambda: pipe.generate(TURNS[0], seed=0, steps=steps, guidance_scale=guidance), args.repeats),
            "edit": timed(lambda: pipe.edit(first, TURNS[1], seed=0, steps=steps, guidance_scale=guidance), args.repeats),
            "ask": timed(lambda: pipe.chat(first, QUESTION), args.repeats),
        }

        client.predict(TURNS[0], 0, steps, guidance, api_name="/turn")  # warm-up, and the image to edit / ask about
        page = {
            "generate": timed(lambda: client.predict(TURNS[0], 1, 0, steps, guidance, api_name="/generate"), args.repeats),
            "edit": timed(lambda: client.predict(TURNS[1], 0, steps, guidance, api_name="/turn"), args.repeats),  # chained edit turns
            "ask": timed(lambda: client.predict(QUESTION, None, api_name="/ask"), args.repeats),
        }
        print(f"model {args.model}: {steps} steps, guidance {guidance}; median of {args.repeats}")
        print(f"{'turn':<10}{'direct (s)':>12}{'page (s)':>10}{'page / direct':>15}")
        for k in direct:
            print(f"{k:<10}{direct[k]:>12.3f}{page[k]:>10.3f}{page[k] / direct[k]:>15.2f}")
        if args.screenshot is not None:
            args.screenshot.mkdir(parents=True, exist_ok=True)
            print(f"screenshot: {screenshot(port, args.screenshot)}")
    finally:
        app.close()


if __name__ == "__main__":
    main()
