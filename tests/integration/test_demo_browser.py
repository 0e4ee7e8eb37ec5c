"""The demo page in a real headless Chromium (Debian's ``chromium``, driven by playwright with ``executable_path``;
no browser is downloaded). Skipped, with the reason, where either is missing. ``MINGEXP_SCREENSHOT_DIR`` keeps the
screenshots (else they go to the test's tmp folder)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mingexp.demo.actions import Demo
from mingexp.demo.app import build_app, launch
from mingexp.demo.scratch import Scratch
from tests.integration.conftest import free_port
from tests.integration.test_demo import PROMPT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (apt-get install chromium)"),
]


def test_a_session_in_the_browser(pipe, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])")
    shots = Path(os.environ.get("MINGEXP_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    app = build_app(Demo(pipe, "exports/toy", scratch=Scratch(tmp_path / "work")))
    port = free_port()
    launch(app, port=port, block=False)
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/")
            # the Generate tab: type a prompt, click generate, wait for the image and the settings it used
            page.fill("#gen-prompt textarea", PROMPT)
            page.click("#gen-button")
            page.wait_for_selector("#gen-gallery img", timeout=60_000)
            page.wait_for_selector("#gen-settings :text('seed 0')", timeout=60_000)
            # the Session tab: a prompt, then an edit turn, then undo
            page.get_by_role("tab", name="Session").click()
            for text in (PROMPT, "make it blue"):
                page.fill("#session-text textarea", text)
                page.click("#session-send")
                page.wait_for_function("(n) => document.querySelectorAll('#session-chat .message-row').length >= n",
                                       arg=2 * (1 if text == PROMPT else 2), timeout=60_000)
            page.wait_for_selector("#session-current img", timeout=60_000)
            page.screenshot(path=str(shots / "demo_two_turns.png"), full_page=True)
            page.click("#session-undo")
            page.wait_for_function("() => document.querySelectorAll('#session-chat .message-row').length == 2", timeout=60_000)
            page.screenshot(path=str(shots / "demo_after_undo.png"), full_page=True)
            assert page.locator("#session-chat").inner_text().count("edit: make it blue") == 0
            browser.close()
    finally:
        app.close()
    assert (shots / "demo_after_undo.png").stat().st_size > 0
