"""The real default model holds a readable conversation on the page; the screenshot is kept.

Every run saves it under test-artifacts/; `make screenshot` (UPDATE_SCREENSHOT=1) also
refreshes the README's docs/screenshot.png, so a plain test run leaves the tree clean.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from devtools.processes import ServerProcess

from .conftest import ARTIFACTS, ROOT, stack_for

pytestmark = pytest.mark.browser

SCREENSHOT = ROOT / "docs" / "screenshot.png"


@pytest.mark.real_model
def test_real_model_holds_a_readable_conversation(page: Page, default_model_dir: Path) -> None:
    with (
        ServerProcess("generator.app:create_app", {"MODEL": str(default_model_dir)}) as generator,
        stack_for(generator) as stack,
    ):
        page.set_viewport_size({"width": 900, "height": 1000})
        page.goto(stack.page_url)
        page.click("#settings summary")
        page.fill("#system", "You are a helpful poet. Keep answers short.")
        page.fill("#max-tokens", "60")
        page.fill("#temperature", "0")
        page.click("#settings summary")  # closed again: the conversation is the picture
        for message in ("Write a short poem about the sea.", "Now give it a title."):
            page.fill("#prompt", message)
            page.click("#start")
            expect(page.locator("#status")).to_have_attribute("data-state", "done", timeout=300_000)

        answers = page.locator('.turn[data-role="assistant"] .content')
        expect(answers).to_have_count(2)
        for index in range(2):
            text = answers.nth(index).text_content() or ""
            words = re.findall(r"[A-Za-z]{2,}", text)
            assert len(words) >= 3, f"not readable text: {text!r}"
            letters = sum(ch.isascii() and (ch.isalpha() or ch.isspace()) for ch in text)
            assert letters / len(text) > 0.7, f"not readable text: {text!r}"
            assert "\ufffd" not in text
        expect(page.locator("#stat-tokens")).to_have_text(re.compile(r"^\d+$"))

        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "screenshot.png"
        page.screenshot(path=str(shot), full_page=True)
        if os.environ.get("UPDATE_SCREENSHOT") == "1":
            shutil.copyfile(shot, SCREENSHOT)
