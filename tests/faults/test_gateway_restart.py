"""A gateway restarted between `POST /start` and `GET /generate` (a deploy, a crash, or
another Lambda instance taking the second request).

Start ids are stateless: the parameters themselves, signed. With a shared `START_SECRET`
the id works on the new process, which streams the generation to its one `done`; without
one each process signs with a random key of its own, and the new one refuses the id
before any stream with a clear 422 naming `id` (never a 500, never a hang). Either way
the new process answers within its first-token bound and is then healthy, holding no
more open files or tasks than at rest.
"""

from __future__ import annotations

import time

import httpx
import pytest

from devtools.processes import free_port
from support.faults import (
    FIRST_TOKEN_TIMEOUT_S,
    assert_recovered,
    assert_within,
    fault_gateway,
    steady_state,
)
from support.sse import check_stream, read_events

PARAMS = {"prompt": "Once upon a time", "max_new_tokens": 3, "seed": 1}


@pytest.mark.parametrize("shared_secret", [True, False], ids=["shared_secret", "no_secret"])
async def test_gateway_restarted_between_start_and_generate(standin, shared_secret: bool):
    env = {} if shared_secret else {"START_SECRET": ""}  # empty: a random key per process
    port = free_port()
    with fault_gateway(standin.url, port=port, **env) as old:
        async with httpx.AsyncClient(base_url=old.url, timeout=30) as client:
            r = await client.post("/start", json=PARAMS)
            assert r.status_code == 200
            stream_url = r.json()["stream_url"]

    with fault_gateway(standin.url, port=port, **env) as new:  # same address, new process
        baseline = await steady_state(new.url)
        async with httpx.AsyncClient(base_url=new.url, timeout=30) as client:
            started = time.monotonic()
            if shared_secret:
                events = await read_events(client, stream_url)
                assert_within(started, FIRST_TOKEN_TIMEOUT_S, "id on the new process → done")
                done = check_stream(events)
                assert done.event == "done"
                assert done.data["usage"]["completion_tokens"] == PARAMS["max_new_tokens"]
                assert standin.prompts[-1] == PARAMS["prompt"]
            else:
                r = await client.get(stream_url)
                assert_within(started, FIRST_TOKEN_TIMEOUT_S, "foreign id → 422")
                assert r.status_code == 422
                assert r.headers["content-type"] == "application/json"
                error = r.json()["error"]
                assert error["code"] == "invalid_request"
                assert error["field"] == "id"
                assert "signature mismatch" in error["message"]
        await assert_recovered(new.url, baseline)
