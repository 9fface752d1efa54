"""No prompt reaches a log: both functions run as real processes at their most verbose
(uvicorn at debug, LOG_LEVEL=debug), a known conversation goes through every route that
takes one — the page's (`GET /generate?prompt=`, `POST /start` then `?id=`, `POST
/generate`), the OpenAI ones (streamed and not, with an ignored field), the generator's
own (`GET /?prompt=`, `POST /v1/generate`) — and through the failures that echo a request
back (a refusal naming the field, an overflowing context); then every line of both logs
is JSON, and none holds any of the texts, in any of the forms a URL or JSON would give
them, nor the start id (which carries the compressed prompt).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import httpx
import pytest
from openai import OpenAI

from devtools.processes import ServerProcess
from support.gateway import API_KEY, gateway_process
from support.sse import check_stream, read_events

SYSTEM = "Answer as the lighthouse keeper Ottoline Brack."
PROMPT = "Describe the quokka colony on Zanzibar Point."
ANSWER = "The quokkas of Zanzibar Point nap at noon."
SECRETS = [SYSTEM, PROMPT, ANSWER]
CONVERSATION = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": PROMPT},
    {"role": "assistant", "content": ANSWER},
    {"role": "user", "content": PROMPT},
]


def forms(text: str) -> set[str]:
    """The ways `text` (or a telling piece of it) could appear in a log line."""
    pieces = {text, *[word for word in text.rstrip(".").split() if len(word) >= 6]}
    encoded = {quote(p) for p in pieces} | {quote_plus(p) for p in pieces}
    return pieces | encoded | {json.dumps(p)[1:-1] for p in pieces}


@pytest.fixture(scope="module")
def generator(tiny_model_dir: Path) -> Iterator[ServerProcess]:
    env = {"MODEL": str(tiny_model_dir), "LOG_LEVEL": "debug"}
    with ServerProcess("generator.app:create_app", env, log_level="debug") as server:
        yield server


@pytest.fixture(scope="module")
def gateway(generator: ServerProcess) -> Iterator[ServerProcess]:
    with gateway_process(generator.url, log_level="debug", API_KEYS=API_KEY) as server:
        yield server


async def test_a_known_conversation_leaves_no_trace_in_any_log(
    gateway: ServerProcess, generator: ServerProcess
) -> None:
    start_id = await drive_every_route(gateway.url, generator.url)
    generator.stop()
    gateway.stop()  # shutdown lines too
    for server in (gateway, generator):
        lines = [line for line in server.logs().splitlines() if line.strip()]
        assert len(lines) > 10, server.logs()  # the run was logged: access lines at least
        for line in lines:
            record = json.loads(line)  # every line is JSON, uvicorn's own included
            assert isinstance(record, dict), line
            for secret in SECRETS:
                for form in forms(secret):
                    assert form not in line, (form, line)
            assert start_id not in line, line
            assert start_id[3:40] not in line, line
    access = [json.loads(line) for line in gateway.logs().splitlines() if '"access"' in line]
    assert {record["path"] for record in access} >= {"/generate", "/start", "/v1/completions"}


async def drive_every_route(gateway_url: str, generator_url: str) -> str:
    """Sends the conversation everywhere; returns the start id it was given."""
    short = {"max_new_tokens": 4, "seed": 1}
    async with httpx.AsyncClient(base_url=gateway_url, timeout=60) as client:
        check_stream(await read_events(client, "/generate", params={"prompt": PROMPT, **short}))
        started = await client.post("/start", json={"messages": CONVERSATION[:2], **short})
        start_id = started.json()["id"]
        check_stream(await read_events(client, "/generate", params={"id": start_id}))
        body = {"messages": CONVERSATION, **short}
        check_stream(await read_events(client, "/generate", method="POST", json=body))
        # Refused: a message naming the field, with the text in the request.
        refused = await client.post("/start", json={"prompt": PROMPT, "max_new_tokens": 10**9})
        assert refused.status_code == 422
        # Refused by the generator: a context the tiny model cannot hold.
        overflow = await read_events(client, "/generate", params={"prompt": PROMPT * 200})
        assert check_stream(overflow).event == "error"
    openai = OpenAI(base_url=gateway_url + "/v1", api_key=API_KEY)
    openai.completions.create(model="m", prompt=PROMPT, max_tokens=4, seed=1)
    openai.chat.completions.create(
        model="m", messages=CONVERSATION, max_tokens=4, seed=1,  # type: ignore[arg-type]
        extra_body={"metadata_note": PROMPT},
    )  # fmt: skip
    chunks = openai.chat.completions.create(
        model="m",
        messages=CONVERSATION,
        max_tokens=4,
        stream=True,  # type: ignore[arg-type]
    )
    assert list(chunks)
    async with httpx.AsyncClient(base_url=generator_url, timeout=60) as client:
        plain = await client.get("/", params={"prompt": PROMPT, **short})
        assert plain.status_code == 200
        lines = await client.post("/v1/generate", json={"messages": CONVERSATION, **short})
        assert lines.status_code == 200
    return start_id
