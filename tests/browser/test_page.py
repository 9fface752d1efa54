"""The page in a real browser against real generator and gateway processes (tiny GPT-2)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from devtools.processes import ServerProcess, free_port

from .conftest import Stack, gateway_process, serve_frontend, stack_for

pytestmark = pytest.mark.browser

# Generous bounds: they only turn a hang into a failure, they never measure speed.
RUN_TIMEOUT_MS = 60_000

RECORD_LENGTHS = """() => {
  const output = document.getElementById("output");
  const status = document.getElementById("status");
  window.lengthsSeen = [];
  new MutationObserver(() => {
    window.lengthsSeen.push([output.textContent.length, status.dataset.state]);
  }).observe(output, { childList: true, characterData: true, subtree: true });
}"""


def open_page(page: Page, stack: Stack) -> None:
    page.goto(stack.page_url)
    expect(page.locator("#status")).to_have_attribute("data-state", "idle")


def fill(
    page: Page, prompt: str, max_tokens: int | str, temperature: float = 1.0, chat: bool = False
) -> None:
    """Plain mode by default: the tiny model's context (1024) then fits long runs."""
    page.fill("#prompt", prompt)
    page.fill("#max-tokens", str(max_tokens))
    page.fill("#temperature", str(temperature))
    page.set_checked("#chat", chat)


def expect_state(page: Page, state: str, timeout: int = RUN_TIMEOUT_MS) -> None:
    """Wait for the status line's state; on failure, say what the page shows instead."""
    try:
        expect(page.locator("#status")).to_have_attribute("data-state", state, timeout=timeout)
    except AssertionError as exc:
        shown = page.locator("#status").text_content(), page.locator("#error").text_content()
        raise AssertionError(f"expected state {state!r}; the page shows {shown}") from exc


def test_start_streams_tokens_then_shows_stats(page: Page, tiny_stack: Stack) -> None:
    open_page(page, tiny_stack)
    page.evaluate(RECORD_LENGTHS)
    fill(page, "Once upon a time", 48, chat=True)
    page.click("#start")
    expect_state(page, "done")

    final = len(page.locator("#output").text_content() or "")
    seen = page.evaluate("window.lengthsSeen")
    intermediate = {length for length, state in seen if 0 < length < final and state != "done"}
    assert len(intermediate) >= 3, f"text arrived in too few steps: {seen}"

    expect(page.locator("#status")).to_contain_text("Done")
    expect(page.locator("#stat-ttft")).to_have_text(re.compile(r"^\d+ ms$"))
    expect(page.locator("#stat-rate")).to_have_text(re.compile(r"^\d+\.\d$"))
    tokens = int(page.locator("#stat-tokens").text_content() or "0")
    assert 1 <= tokens <= 48
    expect(page.locator("#error")).to_be_hidden()
    expect(page.locator("#start")).to_be_enabled()
    expect(page.locator("#stop")).to_be_disabled()


def test_stop_mid_stream_stops_the_generator(page: Page, tiny_stack: Stack) -> None:
    max_tokens = 800
    open_page(page, tiny_stack)
    before = tiny_stack.decode_steps()
    fill(page, "Tell me a very long story", max_tokens)
    page.click("#start")
    expect_state(page, "streaming")
    page.click("#stop")

    expect_state(page, "stopped", timeout=5_000)
    expect(page.locator("#status")).to_contain_text("Stopped")
    shown = int(page.locator("#stat-tokens").text_content() or "0")
    assert shown < max_tokens

    # The generator stops within about a token's time; give the disconnect a moment
    # to travel page → gateway → generator, then the counter must stand still.
    deadline = time.monotonic() + 30
    steps = tiny_stack.decode_steps()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = tiny_stack.decode_steps()
        if now == steps:
            break
        steps = now
    else:
        raise AssertionError("the generator kept decoding after Stop")
    assert steps - before < max_tokens, "the generation ran to the end: Stop came too late"
    time.sleep(1.0)
    assert tiny_stack.decode_steps() == steps
    # Nothing reconnected behind the page's back: the text did not grow after Stop.
    assert page.locator("#status").get_attribute("data-state") == "stopped"


def test_ctrl_enter_starts(page: Page, tiny_stack: Stack) -> None:
    open_page(page, tiny_stack)
    fill(page, "Keyboard only", 8)
    page.focus("#prompt")
    page.keyboard.press("Control+Enter")
    expect_state(page, "done")
    assert (page.locator("#output").text_content() or "") != ""


def test_refused_request_shows_the_gateways_message(page: Page, tiny_stack: Stack) -> None:
    open_page(page, tiny_stack)
    fill(page, "x" * 16_001, 8)
    page.click("#start")
    expect_state(page, "error")
    error = page.locator("#error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("422")
    expect(error).to_contain_text("prompt")
    expect(error).to_contain_text("16000")
    expect(page.locator("#prompt")).to_have_attribute("aria-invalid", "true")

    fill(page, "A fine prompt", 4000)
    page.click("#start")
    expect_state(page, "error")
    expect(error).to_contain_text("max_new_tokens")
    expect(page.locator("#max-tokens")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#prompt")).not_to_have_attribute("aria-invalid", "true")

    # A good request afterwards clears the error and runs.
    fill(page, "A fine prompt", 8)
    page.click("#start")
    expect_state(page, "done")
    expect(error).to_be_hidden()


def test_gateway_down_is_shown_and_a_later_run_works(
    page: Page, tiny_generator: ServerProcess
) -> None:
    page_port, gateway_port = free_port(), free_port()
    origin = f"http://127.0.0.1:{page_port}"
    with serve_frontend(f"http://127.0.0.1:{gateway_port}", page_port) as page_url:
        page.goto(page_url)
        fill(page, "Nobody is listening", 8)
        page.click("#start")
        expect_state(page, "error")
        expect(page.locator("#error")).to_contain_text("Could not reach the gateway")
        expect(page.locator("#error")).to_contain_text(f"127.0.0.1:{gateway_port}")
        expect(page.locator("#start")).to_be_enabled()

        # Bring the gateway up where the page expects it: the same page now works.
        with gateway_process(tiny_generator.url, origin, port=gateway_port):
            page.click("#start")
            expect_state(page, "done")
            expect(page.locator("#error")).to_be_hidden()
            assert (page.locator("#output").text_content() or "") != ""


def test_generator_dying_mid_stream_shows_the_error_event(page: Page, tiny_model_dir: Path) -> None:
    """An `error` event from the gateway (upstream died) is shown in words, and the
    stream is closed: no reconnect starts a second generation."""
    with (
        ServerProcess("generator.app:create_app", {"MODEL": str(tiny_model_dir)}) as generator,
        stack_for(generator) as stack,
    ):
        open_page(page, stack)
        fill(page, "A story that never ends", 800)
        page.click("#start")
        expect_state(page, "streaming")
        generator.kill()
        expect_state(page, "error")
        error = page.locator("#error")
        expect(error).to_contain_text("The generation failed")
        shown = page.locator("#output").text_content() or ""
        time.sleep(1.0)
        assert (page.locator("#output").text_content() or "") == shown
        assert page.locator("#status").get_attribute("data-state") == "error"
