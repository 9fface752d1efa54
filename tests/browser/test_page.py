"""The chat page in a real browser against real generator and gateway processes (tiny
GPT-2, with the SmolLM2 tokenizer and chat template)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import ConsoleMessage, Locator, Page, Request, expect

from devtools.processes import ServerProcess, free_port

from .conftest import Stack, gateway_process, serve_frontend, stack_for

pytestmark = pytest.mark.browser

# Generous bounds: they only turn a hang into a failure, they never measure speed.
RUN_TIMEOUT_MS = 60_000

RECORD_LENGTHS = """() => {
  const conversation = document.getElementById("conversation");
  const status = document.getElementById("status");
  window.lengthsSeen = [];
  new MutationObserver(() => {
    const answers = conversation.querySelectorAll('.turn[data-role="assistant"] .content');
    const last = answers[answers.length - 1];
    window.lengthsSeen.push([last ? last.textContent.length : 0, status.dataset.state]);
  }).observe(conversation, { childList: true, characterData: true, subtree: true });
}"""


def open_page(page: Page, stack: Stack) -> None:
    page.goto(stack.page_url)
    expect(page.locator("#status")).to_have_attribute("data-state", "idle")


def settings(page: Page, **values: int | float | str) -> None:
    """Fill the settings (opening their panel first): max_tokens, temperature, seed..."""
    if page.locator("#settings").get_attribute("open") is None:
        page.click("#settings summary")
    for name, value in values.items():
        page.fill("#" + name.replace("_", "-"), str(value))


def send(page: Page, message: str) -> None:
    page.fill("#prompt", message)
    page.click("#start")


def answers(page: Page) -> Locator:
    return page.locator('.turn[data-role="assistant"]')


def last_answer(page: Page) -> str:
    return answers(page).last.locator(".content").text_content() or ""


def expect_state(page: Page, state: str, timeout: int = RUN_TIMEOUT_MS) -> None:
    """Wait for the status line's state; on failure, say what the page shows instead."""
    try:
        expect(page.locator("#status")).to_have_attribute("data-state", state, timeout=timeout)
    except AssertionError as exc:
        shown = page.locator("#status").text_content(), page.locator("#error").text_content()
        raise AssertionError(f"expected state {state!r}; the page shows {shown}") from exc


def test_send_streams_an_answer_then_shows_stats(page: Page, tiny_stack: Stack) -> None:
    open_page(page, tiny_stack)
    page.evaluate(RECORD_LENGTHS)
    settings(page, max_tokens=48, temperature=1)
    send(page, "Once upon a time")
    expect_state(page, "done")

    final = len(last_answer(page))
    seen = page.evaluate("window.lengthsSeen")
    intermediate = {length for length, state in seen if 0 < length < final and state != "done"}
    assert len(intermediate) >= 3, f"text arrived in too few steps: {seen}"

    turns = page.locator(".turn")
    expect(turns).to_have_count(2)
    expect(turns.first).to_have_attribute("data-role", "user")
    expect(turns.first.locator(".content")).to_have_text("Once upon a time")
    expect(page.locator("#prompt")).to_have_value("")  # the composer is ready for the next
    expect(page.locator("#status")).to_contain_text("Done")
    expect(page.locator("#stat-ttft")).to_have_text(re.compile(r"^\d+ ms$"))
    expect(page.locator("#stat-rate")).to_have_text(re.compile(r"^\d+\.\d$"))
    tokens = int(page.locator("#stat-tokens").text_content() or "0")
    assert 1 <= tokens <= 48
    # The answer keeps its own numbers.
    expect(answers(page).last.locator(".turn-stats")).to_contain_text(f"{tokens} tokens")
    expect(page.locator("#error")).to_be_hidden()
    expect(page.locator("#start")).to_be_enabled()
    expect(page.locator("#stop")).to_be_disabled()


# Registered before any of the page's own scripts run, so a violation while it loads
# counts too.
WATCH_CSP = """() => {
  window.cspViolations = [];
  document.addEventListener("securitypolicyviolation", (event) => {
    window.cspViolations.push(`${event.violatedDirective} ${event.blockedURI}`);
  });
}"""


def test_the_page_works_under_its_content_security_policy(page: Page, tiny_stack: Stack) -> None:
    """The page server sends the CSP the deployed page gets (same directives; the gateway
    in connect-src): loading, streaming an answer, rendering it and reloading the kept
    conversation break none of it and log nothing."""
    logged: list[str] = []

    def log(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            logged.append(f"{message.type}: {message.text}")

    page.on("console", log)
    page.on("pageerror", lambda error: logged.append(f"pageerror: {error}"))
    page.add_init_script(f"({WATCH_CSP})()")
    response = page.goto(tiny_stack.page_url)
    assert response is not None
    policy = response.headers["content-security-policy"]
    assert f"connect-src 'self' {tiny_stack.gateway.url}" in policy
    assert "script-src 'self';" in policy
    expect(page.locator("#status")).to_have_attribute("data-state", "idle")

    settings(page, max_tokens=24, temperature=1)
    send(page, "Write **bold** words and a list:\n\n- one\n- two")
    expect_state(page, "done")
    assert last_answer(page) != ""
    page.reload()
    expect(page.locator(".turn")).to_have_count(2)

    assert page.evaluate("window.cspViolations") == []
    assert logged == []


def test_stop_mid_stream_stops_the_generator(page: Page, tiny_stack: Stack) -> None:
    max_tokens = 800
    open_page(page, tiny_stack)
    before = tiny_stack.decode_steps()
    settings(page, max_tokens=max_tokens, temperature=1)
    send(page, "Tell me a very long story")
    expect_state(page, "streaming")
    page.click("#stop")

    expect_state(page, "stopped", timeout=5_000)
    expect(page.locator("#status")).to_contain_text("Stopped")
    shown = int(page.locator("#stat-tokens").text_content() or "0")
    assert shown < max_tokens
    expect(answers(page).last).to_have_attribute("data-state", "stopped")

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
    assert page.locator("#status").get_attribute("data-state") == "stopped"


def test_ctrl_enter_sends(page: Page, tiny_stack: Stack) -> None:
    open_page(page, tiny_stack)
    settings(page, max_tokens=8)
    page.fill("#prompt", "Keyboard only")
    page.focus("#prompt")
    page.keyboard.press("Control+Enter")
    expect_state(page, "done")
    assert last_answer(page) != ""


def test_refused_request_shows_the_gateways_message(page: Page, tiny_stack: Stack) -> None:
    open_page(page, tiny_stack)
    settings(page, max_tokens=4000)
    send(page, "A fine message")
    expect_state(page, "error")
    error = page.locator("#error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("422")
    expect(error).to_contain_text("max_new_tokens")
    expect(page.locator("#max-tokens")).to_have_attribute("aria-invalid", "true")
    expect(answers(page)).to_have_count(0)  # no empty answer is kept

    # Mended, Regenerate answers the message that is still there; the error clears.
    settings(page, max_tokens=8)
    page.click("#regenerate")
    expect_state(page, "done")
    expect(error).to_be_hidden()
    expect(page.locator("#max-tokens")).not_to_have_attribute("aria-invalid", "true")

    send(page, "x" * 64_001)  # past MAX_PROMPT_CHARS, the conversation in all
    expect_state(page, "error")
    expect(error).to_contain_text("messages")
    expect(page.locator("#prompt")).to_have_attribute("aria-invalid", "true")

    page.click("#start")  # a blank message is not sent
    expect(error).to_contain_text("Write a message first")


def test_gateway_down_is_shown_and_a_later_run_works(
    page: Page, tiny_generator: ServerProcess
) -> None:
    page_port, gateway_port = free_port(), free_port()
    origin = f"http://127.0.0.1:{page_port}"
    with serve_frontend(f"http://127.0.0.1:{gateway_port}", page_port) as page_url:
        page.goto(page_url)
        settings(page, max_tokens=8)
        send(page, "Nobody is listening")
        expect_state(page, "error")
        expect(page.locator("#error")).to_contain_text("Could not reach the gateway")
        expect(page.locator("#error")).to_contain_text(f"127.0.0.1:{gateway_port}")
        expect(page.locator("#start")).to_be_enabled()

        # Bring the gateway up where the page expects it: the same page now works.
        with gateway_process(tiny_generator.url, origin, port=gateway_port):
            page.click("#regenerate")
            expect_state(page, "done")
            expect(page.locator("#error")).to_be_hidden()
            assert last_answer(page) != ""


def test_generator_dying_mid_stream_shows_the_error_event(page: Page, tiny_model_dir: Path) -> None:
    """An `error` event from the gateway (upstream died) is shown in words, and the
    stream is closed: nothing runs a second generation behind the page's back."""
    with (
        ServerProcess("generator.app:create_app", {"MODEL": str(tiny_model_dir)}) as generator,
        stack_for(generator) as stack,
    ):
        open_page(page, stack)
        settings(page, max_tokens=800)
        send(page, "A story that never ends")
        expect_state(page, "streaming")
        generator.kill()
        expect_state(page, "error")
        expect(page.locator("#error")).to_contain_text("The generation failed")
        shown = last_answer(page)
        time.sleep(1.0)
        assert last_answer(page) == shown
        assert page.locator("#status").get_attribute("data-state") == "error"
        expect(answers(page).last).to_have_attribute("data-state", "error")


@pytest.fixture
def sent_conversations(page: Page) -> Iterator[list[list[dict[str, str]]]]:
    """The `messages` of every POST /generate the page sends."""
    sent: list[list[dict[str, str]]] = []

    def record(request: Request) -> None:
        if request.method == "POST" and request.url.endswith("/generate"):
            sent.append(json.loads(request.post_data or "{}")["messages"])

    page.on("request", record)
    yield sent
    page.remove_listener("request", record)


def test_a_three_turn_conversation_survives_a_reload_and_a_stop(
    page: Page, tiny_stack: Stack, sent_conversations: list[list[dict[str, str]]]
) -> None:
    open_page(page, tiny_stack)
    settings(page, max_tokens=12, temperature=1, system="You are terse.")
    send(page, "My name is Ada.")
    expect_state(page, "done")
    first_answer = last_answer(page)
    send(page, "What is my name?")
    expect_state(page, "done")
    second_answer = last_answer(page)
    # The second request carried the whole conversation, the system prompt first, the
    # first answer as it streamed (the page's own record of it, before Markdown).
    assert [m["role"] for m in sent_conversations[1]] == ["system", "user", "assistant", "user"]
    assert sent_conversations[1][0]["content"] == "You are terse."
    kept = page.evaluate("JSON.parse(localStorage.getItem('textgen.chat.v1')).turns")
    assert sent_conversations[1][2]["content"] == kept[1]["content"]
    assert [turn["role"] for turn in kept] == ["user", "assistant", "user", "assistant"]

    page.reload()
    expect(page.locator(".turn")).to_have_count(4)
    expect(answers(page).nth(0).locator(".content")).to_have_text(first_answer)
    expect(answers(page).nth(1).locator(".content")).to_have_text(second_answer)
    expect(page.locator("#system")).to_have_value("You are terse.")  # settings kept too

    settings(page, max_tokens=800)
    send(page, "Now tell me a very long story.")
    expect_state(page, "streaming")
    page.click("#stop")
    expect_state(page, "stopped", timeout=5_000)
    assert [m["role"] for m in sent_conversations[2]] == [
        "system", "user", "assistant", "user", "assistant", "user",
    ]  # fmt: skip
    expect(page.locator(".turn")).to_have_count(6)
    expect(answers(page).last).to_have_attribute("data-state", "stopped")

    # Regenerate replaces the stopped answer with a new one.
    settings(page, max_tokens=8)
    page.click("#regenerate")
    expect_state(page, "done")
    expect(page.locator(".turn")).to_have_count(6)
    assert len(sent_conversations[3]) == 6  # the stopped answer was not sent again

    page.click("#new-chat")
    expect(page.locator(".turn")).to_have_count(0)
    page.reload()
    expect(page.locator(".turn")).to_have_count(0)
    expect(page.locator("#empty")).to_be_visible()


MARKDOWN_ANSWER = (
    "Here is **code**:\n\n```python\nprint('hi')\n```\n\n"
    "<img src=x onerror=\"window.pwned='img'\"> <script>window.pwned='script'</script>\n\n"
    "[a link](javascript:window.pwned='link') and ![a picture](http://127.0.0.1:9/p.png)\n"
)


@pytest.fixture(scope="module")
def scripted_stack(tiny_model_dir: Path) -> Iterator[Stack]:
    """The page and the gateway in front of a stand-in generator whose every answer is
    `MARKDOWN_ANSWER`: text known in advance, which no random model would write."""
    env = {"PACED_SCRIPT": MARKDOWN_ANSWER, "PACED_TOKEN_INTERVAL_S": "0.01"}
    with (
        ServerProcess("devtools.paced_upstream:create_app", env) as upstream,
        stack_for(upstream) as stack,
    ):
        yield stack


def test_answers_render_markdown_and_no_html_the_model_wrote(
    page: Page, scripted_stack: Stack
) -> None:
    open_page(page, scripted_stack)
    settings(page, max_tokens=1000)
    send(page, "Show me some code")
    expect_state(page, "done")
    answer = answers(page).last.locator(".content")
    expect(answer.locator("pre code")).to_have_text("print('hi')\n")
    expect(answer.locator("strong")).to_have_text("code")
    # The model's HTML is shown as text, never made into elements or run.
    expect(answer).to_contain_text("<img src=x onerror=")
    expect(answer).to_contain_text("<script>")
    assert answer.locator("img, script, iframe, [onerror]").count() == 0
    hrefs = answer.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    assert not any(href and href.startswith("javascript:") for href in hrefs), hrefs
    assert page.evaluate("window.pwned") is None
    expect(answer).to_contain_text("a picture")  # images become their alt text
